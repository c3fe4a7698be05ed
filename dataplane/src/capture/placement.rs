//! Where on a TLS function the uprobe goes, for libraries with C calling
//! conventions (OpenSSL/BoringSSL, GnuTLS): each is described by a
//! [`CLibrary`] in the table of [`super::libraries`].
//!
//! A uprobe on an instruction the kernel must single-step out of line costs
//! about 11.5 µs per hit here; on one it emulates (`push reg`, a 5-byte nop, a
//! relative `call`/`jmp`/`jcc`) about 0.5–0.8 µs. Debian's `SSL_read`/
//! `SSL_write` begin with `sub $0x18,%rsp` (single-stepped), but they are thin
//! wrappers: they and their `_ex` forms call one internal function
//! (`ssl_read_internal`/`ssl_write_internal`, with the `_ex` argument shape)
//! whose entry is a `push`. So for each family (read, write) we decode the first
//! instructions of both exported symbols (the same rule serves every
//! [`CLibrary`]; only OpenSSL has an internal function to fall back on):
//!
//! 1. every present symbol starts with an emulated instruction: probe each
//!    there, with its own shape (node: OpenSSL built with frame pointers);
//! 2. else, if both call the same internal function and its entry is emulated:
//!    one probe pair there, `_ex` shape (it serves both symbols);
//! 3. else the symbol entry, with a warning and the `fallback` counter.
//!
//! Entry and return probes share an address: a uretprobe is armed by a
//! breakpoint at function entry, so it must sit on an entry, never on a call
//! site inside the caller (its stack top is not a return address there).

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

/// Instructions decoded from a symbol's entry when looking for the call into
/// the internal function (the wrappers make it within their first ten).
const MAX_SCAN_INSNS: usize = 24;

/// What a probe point does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PointKind {
    /// Entry + return probe pair on a read/write function (`cookie` = shape).
    Call,
    /// Entry probe on a session end (`SSL_free`, `gnutls_deinit`, …).
    SessionEnd,
    /// Go `crypto/tls.(*Conn).Read`/`Write` entry (after the stack check).
    GoEntry,
    /// The `call runtime.memmove` inside Go's `(*Conn).Read` that copies the
    /// plaintext out.
    GoReadCopy,
    /// A `RET` of Go's `(*Conn).Read`.
    GoReturn,
    /// Entry + return probe pair on NSPR's `PR_Read`/`PR_Write`/`PR_Recv`/
    /// `PR_Send` (`cookie`: `tapwire_common::nss`).
    NssCall,
    /// Return probe on NSS's `SSL_ImportFD` (the SSL layer's identity).
    NssImport,
}

impl PointKind {
    /// The eBPF programs attached at a point of this kind.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Self::Call => &["ssl_enter", "ssl_return"],
            Self::SessionEnd => &["ssl_free"],
            Self::GoEntry => &["go_tls_enter"],
            Self::GoReadCopy => &["go_tls_read_copy"],
            Self::GoReturn => &["go_tls_return"],
            Self::NssCall => &["nss_enter", "ssl_return"],
            Self::NssImport => &["nss_import_return"],
        }
    }

    /// Every eBPF program some point kind uses (the loader loads them all).
    pub const PROGRAMS: &'static [&'static str] = &[
        "ssl_enter",
        "ssl_return",
        "ssl_free",
        "go_tls_enter",
        "go_tls_read_copy",
        "go_tls_return",
        "nss_enter",
        "nss_import_return",
    ];
}

/// How the address was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The symbol's own entry, which the kernel emulates (`insn`).
    Entry {
        /// First instruction, Intel syntax.
        insn: String,
    },
    /// The internal function called by `via`, whose entry is emulated.
    Internal {
        /// The exported symbols that call it.
        via: Vec<&'static str>,
        /// First instruction, Intel syntax.
        insn: String,
    },
    /// The symbol entry although the kernel single-steps it.
    Fallback {
        /// First instruction, Intel syntax.
        insn: String,
    },
    /// Session-end hooks: called once per connection, placement does not matter.
    Rare,
    /// A point inside a Go function (after the stack check, at the plaintext
    /// copy, at a `RET`), on the instruction `insn`.
    Inside {
        /// Byte offset from the function entry.
        offset: u64,
        /// The instruction, Intel syntax.
        insn: String,
        /// The kernel emulates it.
        emulated: bool,
    },
}

impl Placement {
    /// True if the chosen address begins with an emulated instruction.
    pub fn emulated(&self) -> bool {
        match self {
            Self::Entry { .. } | Self::Internal { .. } => true,
            Self::Inside { emulated, .. } => *emulated,
            Self::Fallback { .. } | Self::Rare => false,
        }
    }
}

/// One address to probe in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    /// The symbol this point stands for (the first, for an internal function).
    pub symbol: &'static str,
    /// Virtual address in the ELF file.
    pub vaddr: u64,
    /// File offset (what the kernel's uprobe API takes).
    pub file_offset: u64,
    /// Function shape, `tls_fn::*` (the attach cookie); 0 for session end.
    pub cookie: u64,
    /// Entry+return or entry only.
    pub kind: PointKind,
    /// Why here.
    pub placement: Placement,
}

/// Errors planning probe points in a file.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// Not an ELF file object can parse.
    #[error("cannot parse elf")]
    Parse(#[source] object::Error),
    /// No read/write family symbol.
    #[error("no tls symbols")]
    NoSymbols,
    /// A Go program whose TLS functions could not be probed.
    #[error("go program: {0}")]
    Go(&'static str),
    /// A Go program without DWARF whose release the offset table lacks.
    #[error("go program: go{0}.{1} without DWARF, release not in the socket offset table")]
    GoRelease(u32, u32),
    /// An NSS file whose functions could not be probed.
    #[error("nss: {0}")]
    Nss(&'static str),
}

/// A parsed ELF file and its bytes.
pub struct Elf<'a> {
    /// The parsed file.
    pub file: object::File<'a>,
    /// Its bytes.
    pub data: &'a [u8],
}

impl<'a> Elf<'a> {
    /// Parses `data`.
    pub fn parse(data: &'a [u8]) -> Result<Self, PlacementError> {
        Ok(Self {
            file: object::File::parse(data).map_err(PlacementError::Parse)?,
            data,
        })
    }

    /// True if the file defines any of `names` (dynamic or static symbols).
    pub fn defines_any(&self, names: &[&str]) -> bool {
        let has = |s: object::Symbol<'_, '_>| {
            s.is_definition() && s.name().is_ok_and(|n| names.contains(&n))
        };
        self.file.dynamic_symbols().any(has) || self.file.symbols().any(has)
    }

    /// Address of the defined symbol `name`.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        let dynamic = self
            .file
            .dynamic_symbols()
            .find(|s| s.name() == Ok(name) && s.is_definition());
        dynamic
            .or_else(|| {
                self.file
                    .symbols()
                    .find(|s| s.name() == Ok(name) && s.is_definition())
            })
            .map(|s| s.address())
            .filter(|&a| a != 0)
    }

    /// File offset of virtual address `vaddr`.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.file.segments().find_map(|seg| {
            let (off, size) = seg.file_range();
            let rel = vaddr.checked_sub(seg.address())?;
            (rel < size).then_some(off + rel)
        })
    }

    fn code(&self, vaddr: u64) -> Option<&'a [u8]> {
        self.bytes_at(vaddr, MAX_SCAN_INSNS * 15)
    }

    /// Up to `len` bytes of the file image from `vaddr` on.
    pub fn bytes_at(&self, vaddr: u64, len: usize) -> Option<&'a [u8]> {
        let off = usize::try_from(self.file_offset(vaddr)?).ok()?;
        let end = off.saturating_add(len).min(self.data.len());
        self.data.get(off..end)
    }

    fn first(&self, vaddr: u64) -> Option<Instruction> {
        let code = self.code(vaddr)?;
        let mut d = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
        d.can_decode()
            .then(|| d.decode())
            .filter(|i| !i.is_invalid())
    }

    /// Target of the first direct `call`/`jmp` in the function at `vaddr`,
    /// stopping at a return or indirect branch.
    fn internal_target(&self, vaddr: u64) -> Option<u64> {
        let code = self.code(vaddr)?;
        let mut d = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
        for _ in 0..MAX_SCAN_INSNS {
            if !d.can_decode() {
                return None;
            }
            let i = d.decode();
            match i.flow_control() {
                FlowControl::Call | FlowControl::UnconditionalBranch
                    if i.op0_kind() == OpKind::NearBranch64 =>
                {
                    return Some(i.near_branch64());
                }
                FlowControl::Return
                | FlowControl::IndirectBranch
                | FlowControl::IndirectCall
                | FlowControl::Exception => return None,
                _ => {}
            }
        }
        None
    }
}

/// Name of the emulated instruction `i`, if the kernel emulates it
/// (arch/x86/kernel/uprobes.c: branch and push emulation, 5-byte nop).
pub fn emulated(i: &Instruction) -> Option<&'static str> {
    match i.mnemonic() {
        Mnemonic::Push if i.op0_kind() == OpKind::Register && i.op0_register().is_gpr64() => {
            Some("push")
        }
        Mnemonic::Nop if i.len() == 5 => Some("nop5"),
        Mnemonic::Call if i.op0_kind() == OpKind::NearBranch64 => Some("call"),
        Mnemonic::Jmp if i.op0_kind() == OpKind::NearBranch64 => Some("jmp"),
        _ if i.is_jcc_short_or_near() => Some("jcc"),
        _ => None,
    }
}

/// `i` in Intel syntax.
pub fn intel(i: &Instruction) -> String {
    use iced_x86::{Formatter as _, IntelFormatter};
    let mut out = String::new();
    IntelFormatter::new().format(i, &mut out);
    out
}

/// A library with C calling conventions: its read and write functions,
/// grouped in families of alternatives, and its session-end functions.
pub struct CLibrary {
    /// Read and write families, each a list of `(symbol, tls_fn shape)`. All
    /// present symbols of a family are probed, unless they share an internal
    /// function with an emulated entry (then that, with `internal_shape`).
    pub families: &'static [&'static [(&'static str, u64)]],
    /// Shapes of the shared internal function for each family, in family
    /// order; `None` when the library has no such function to fall back on.
    pub internal_shapes: Option<&'static [u64]>,
    /// `f(session, …)` functions that end a session (its fd is forgotten).
    pub session_ends: &'static [&'static str],
}

/// Plans every probe point of `lib` in an ELF file.
pub fn plan_c(elf: &Elf<'_>, lib: &CLibrary) -> Result<Vec<ProbePoint>, PlacementError> {
    let mut points = Vec::new();
    for (index, family) in lib.families.iter().enumerate() {
        let present: Vec<(&'static str, u64, u64)> = family
            .iter()
            .filter_map(|&(name, cookie)| Some((name, cookie, elf.symbol(name)?)))
            .collect();
        if present.is_empty() {
            continue;
        }
        let firsts: Vec<Option<Instruction>> = present.iter().map(|p| elf.first(p.2)).collect();
        let all_emulated = firsts
            .iter()
            .all(|i| i.as_ref().and_then(emulated).is_some());
        if !all_emulated && let Some(shapes) = lib.internal_shapes {
            let targets: Vec<Option<u64>> =
                present.iter().map(|p| elf.internal_target(p.2)).collect();
            let shared = targets[0].filter(|t| targets.iter().all(|o| *o == Some(*t)));
            if let Some(target) = shared
                && let Some(first) = elf.first(target)
                && emulated(&first).is_some()
                && let Some(file_offset) = elf.file_offset(target)
                && let Some(&cookie) = shapes.get(index)
            {
                points.push(ProbePoint {
                    symbol: present[0].0,
                    vaddr: target,
                    file_offset,
                    cookie,
                    kind: PointKind::Call,
                    placement: Placement::Internal {
                        via: present.iter().map(|p| p.0).collect(),
                        insn: intel(&first),
                    },
                });
                continue;
            }
        }
        for ((name, cookie, vaddr), first) in present.into_iter().zip(firsts) {
            let Some(file_offset) = elf.file_offset(vaddr) else {
                continue;
            };
            let insn = first.as_ref().map(intel).unwrap_or_default();
            let placement = if first.as_ref().and_then(emulated).is_some() {
                Placement::Entry { insn }
            } else {
                Placement::Fallback { insn }
            };
            points.push(ProbePoint {
                symbol: name,
                vaddr,
                file_offset,
                cookie,
                kind: PointKind::Call,
                placement,
            });
        }
    }
    if points.is_empty() {
        return Err(PlacementError::NoSymbols);
    }
    for &name in lib.session_ends {
        if let Some(vaddr) = elf.symbol(name)
            && let Some(file_offset) = elf.file_offset(vaddr)
        {
            points.push(ProbePoint {
                symbol: name,
                vaddr,
                file_offset,
                cookie: 0,
                kind: PointKind::SessionEnd,
                placement: Placement::Rare,
            });
        }
    }
    Ok(points)
}
