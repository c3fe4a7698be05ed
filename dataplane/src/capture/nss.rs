//! NSS (Mozilla's TLS library): where to probe, in its two files.
//!
//! Application data moves through NSPR's exported I/O functions in
//! `libnspr4.so` (`PR_Read`, `PR_Write`, `PR_Recv`, `PR_Send`), which
//! dispatch to the descriptor's top layer; NSS's own read and write functions
//! are private. So the plaintext is taken there, and only on descriptors
//! that carry NSS's SSL layer: `libssl3.so`'s `SSL_ImportFD` pushes that
//! layer, and its return tells the probes the layer's identity in that
//! process (see `probes/ebpf/src/nss.rs`). A descriptor's OS fd is in its
//! bottom layer's private `PRFilePrivate`, whose layout NSPR does not
//! publish: its offset is read from `PR_ChangeFileDescNativeHandle`, which
//! stores a new fd there (`mov rax,[rdi+8]; mov [rax+0x1c],esi` in Debian's
//! NSPR 4.35).
//!
//! Placement: the four functions are two instructions, `mov rax,[rdi]` then
//! `jmp [rax+…]`, neither of which the kernel emulates: each probe is
//! single-stepped (about 11.5 µs per call here) and counted as a placement
//! fallback. They also carry every file and pipe read of an NSPR program,
//! which pays that cost without being captured.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use tapwire_common::{nss, tls_fn};

use super::placement::{Elf, Placement, PlacementError, PointKind, ProbePoint, emulated, intel};

/// The I/O functions probed in `libnspr4.so` and their shapes.
const IO_FUNCTIONS: [(&str, u64); 4] = [
    ("PR_Read", tls_fn::READ),
    ("PR_Recv", tls_fn::READ),
    ("PR_Write", tls_fn::WRITE),
    ("PR_Send", tls_fn::WRITE),
];
/// Ends a descriptor (its fd is forgotten).
const CLOSE: &str = "PR_Close";
/// `libssl3.so`: pushes the SSL layer; its return names the layer identity.
const IMPORT: &str = "SSL_ImportFD";
/// `void PR_ChangeFileDescNativeHandle(PRFileDesc *fd, PROsfd handle)`: its
/// store of `handle` shows where the OS fd lives.
const SET_OSFD: &str = "PR_ChangeFileDescNativeHandle";
/// `PRFileDesc.secret` (public layout, `prio.h`: after `methods`).
const SECRET_OFFSET: u64 = 8;
/// Instructions decoded in [`SET_OSFD`].
const SET_OSFD_INSNS: usize = 8;

/// Symbols whose definition marks a file as part of NSS.
pub const MARKERS: &[&str] = &["PR_Read", IMPORT];

fn point_at(
    elf: &Elf<'_>,
    symbol: &'static str,
    cookie: u64,
    kind: PointKind,
    rare: bool,
) -> Result<ProbePoint, PlacementError> {
    let vaddr = elf
        .symbol(symbol)
        .ok_or(PlacementError::Nss("symbol missing"))?;
    let file_offset = elf
        .file_offset(vaddr)
        .ok_or(PlacementError::Nss("function outside the file image"))?;
    let placement = if rare {
        Placement::Rare
    } else {
        let code = elf.bytes_at(vaddr, 15).unwrap_or_default();
        let first = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE).decode();
        let insn = intel(&first);
        if emulated(&first).is_some() {
            Placement::Entry { insn }
        } else {
            Placement::Fallback { insn }
        }
    };
    Ok(ProbePoint {
        symbol,
        vaddr,
        file_offset,
        cookie,
        kind,
        placement,
    })
}

/// Offset of `md.osfd` in `PRFilePrivate`, from the code of
/// [`SET_OSFD`]: a load of `fd->secret` (`mov r,[rdi+8]`) then a 32-bit
/// store of `handle` (`mov [r+X],esi`).
pub fn osfd_offset(elf: &Elf<'_>) -> Option<u16> {
    let vaddr = elf.symbol(SET_OSFD)?;
    let code = elf.bytes_at(vaddr, SET_OSFD_INSNS * 15)?;
    let mut d = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut secret: Option<Register> = None;
    for _ in 0..SET_OSFD_INSNS {
        if !d.can_decode() {
            break;
        }
        let i = d.decode();
        if i.mnemonic() != Mnemonic::Mov {
            continue;
        }
        if i.op0_kind() == OpKind::Register
            && i.op1_kind() == OpKind::Memory
            && i.memory_base() == Register::RDI
            && i.memory_index() == Register::None
            && i.memory_displacement64() == SECRET_OFFSET
        {
            secret = Some(i.op0_register());
        } else if let Some(base) = secret
            && i.op0_kind() == OpKind::Memory
            && i.memory_base() == base
            && i.memory_index() == Register::None
            && i.op1_kind() == OpKind::Register
            && i.op1_register() == Register::ESI
        {
            return u16::try_from(i.memory_displacement64()).ok();
        }
    }
    None
}

/// Plans the probe points of an NSS file: `libssl3.so` (the import's
/// return) or `libnspr4.so` (the I/O functions and `PR_Close`).
pub fn plan(elf: &Elf<'_>) -> Result<Vec<ProbePoint>, PlacementError> {
    if elf.symbol(IMPORT).is_some() {
        return Ok(vec![point_at(elf, IMPORT, 0, PointKind::NssImport, true)?]);
    }
    if elf.symbol("PR_Read").is_none() {
        return Err(PlacementError::NoSymbols);
    }
    let osfd = osfd_offset(elf).ok_or(PlacementError::Nss(
        "unknown PRFilePrivate layout (PR_ChangeFileDescNativeHandle)",
    ))?;
    let mut points = Vec::new();
    for (symbol, shape) in IO_FUNCTIONS {
        points.push(point_at(
            elf,
            symbol,
            nss::cookie(shape, osfd),
            PointKind::NssCall,
            false,
        )?);
    }
    points.push(point_at(elf, CLOSE, 0, PointKind::SessionEnd, true)?);
    Ok(points)
}
