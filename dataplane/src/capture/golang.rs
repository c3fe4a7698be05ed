//! Go `crypto/tls`: where to probe `(*Conn).Read` and `(*Conn).Write` in a Go
//! executable, and how the probes find the connection's socket.
//!
//! Go ≥ 1.17 passes arguments in registers (`RAX`, `RBX`, `RCX`, …) and keeps
//! the running goroutine in `R14`; calls in flight are keyed by goroutine, not
//! thread, since a goroutine may resume on another thread. Older Go (stack
//! ABI) is not probed.
//!
//! Functions are found in the symbol table, or, for stripped programs
//! (`-ldflags=-s -w`), in `.gopclntab`, Go's own function table, which the
//! runtime needs and which survives stripping. Its layouts: Go 1.16–1.17
//! (magic `0xfffffffa`), 1.18–1.19 (`0xfffffff0`) and 1.20+ (`0xfffffff1`,
//! same layout).
//!
//! Uretprobes are never used: they replace the return address on the stack,
//! and Go copies goroutine stacks when they grow, which would leave the
//! trampoline address behind and crash the program. Placement, measured as
//! for OpenSSL (a single-stepped instruction ~11.5 µs, an emulated one
//! ~0.5 µs; the kernel emulates `push`, 5-byte `nop`, relative `call`/`jmp`
//! and `jcc`, and single-steps `RET`):
//!
//! - entry: a Go function begins with its stack check, `cmp rsp,[r14+0x10]`
//!   (single-stepped) then `jbe morestack` (emulated). The probe sits on the
//!   `jbe`, where the arguments are still in their registers; the flags it
//!   sees say whether the stack is about to grow (the function then starts
//!   over, and the probe ignores that first pass).
//! - `Write`: its bytes are taken at entry. `(*Conn).Write` either writes
//!   all of `b` or fails the connection for good, so no return value is
//!   needed (a write that fails is still reported).
//! - `Read`: the plaintext leaves through one `call runtime.memmove` (the
//!   inlined `bytes.Reader.Read` of `c.input`), an emulated call whose
//!   registers hold source and length. If a build has no single such call,
//!   every `RET` of `Read` is probed instead (single-stepped: slow, counted
//!   as a fallback), taking `n` from `RAX` and the bytes from the saved `b`.
//!
//! Socket: `tls.Conn.conn` is a `net.Conn` interface (type word, data word);
//! for a TCP connection the data word is a `*net.TCPConn`, whose embedded
//! `conn.fd` is a `*netFD`, whose `pfd.Sysfd` is the descriptor. The three
//! offsets come from the program's DWARF when present, else from
//! [`KNOWN_OFFSETS`], and travel in the attach cookie (see
//! `tapwire_common::go_tls`).

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use tapwire_common::go_tls;

use super::placement::{Elf, Placement, PlacementError, PointKind, ProbePoint, emulated, intel};

/// `crypto/tls.(*Conn).Read(b []byte) (int, error)`.
pub const READ: &str = "crypto/tls.(*Conn).Read";
/// `crypto/tls.(*Conn).Write(b []byte) (int, error)`.
pub const WRITE: &str = "crypto/tls.(*Conn).Write";
/// `runtime.memmove(to, from unsafe.Pointer, n uintptr)`.
const MEMMOVE: &str = "runtime.memmove";

/// Instructions looked at for the stack check at a function's entry.
const PROLOGUE_INSNS: usize = 6;
/// Longest function decoded when looking for its copy call or `RET`s
/// (`(*Conn).Read` is about 1 KiB).
const MAX_FUNCTION_BYTES: u64 = 64 * 1024;

/// Offsets from a `*tls.Conn` to its socket's descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnOffsets {
    /// `tls.Conn.conn` (a `net.Conn` interface; its data word follows at +8).
    pub conn: u16,
    /// `net.TCPConn` → `conn.fd` (`*netFD`).
    pub fd: u16,
    /// `netFD.pfd.Sysfd`.
    pub sysfd: u16,
}

/// Offsets per Go release, for programs without DWARF. Go 1.17 to 1.25 share
/// one layout: `tls.Conn` starts with `conn net.Conn`; `net.TCPConn` embeds
/// `conn`, whose only field is `fd *netFD`; `netFD` starts with `pfd
/// poll.FD`, which starts with `fdmu fdMutex` (16 bytes: `state uint64`,
/// `rsema`, `wsema uint32`) then `Sysfd int`. Checked against the DWARF of
/// Debian's Go (1.19) by the tests; the other releases were read from the
/// struct definitions in each release's sources (`crypto/tls/conn.go`,
/// `net/net.go`, `net/fd_posix.go`, `internal/poll/fd_unix.go`,
/// `internal/poll/fd_mutex.go`), unchanged over that range.
pub const KNOWN_OFFSETS: &[(u32, u32, ConnOffsets)] = &[(
    17,
    25,
    ConnOffsets {
        conn: 0,
        fd: 0,
        sysfd: 16,
    },
)];

/// A function's address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Entry address.
    pub entry: u64,
    /// First address past its code.
    pub end: u64,
}

/// True for Go executables (they carry `.go.buildinfo` or `.gopclntab`).
pub fn is_go(elf: &Elf<'_>) -> bool {
    elf.file.section_by_name(".go.buildinfo").is_some()
        || elf.file.section_by_name(".gopclntab").is_some()
}

/// The Go release that built the program, `(1, minor)`, from `.go.buildinfo`
/// (Go 1.18+ stores the version inline; older releases through pointers).
pub fn version(elf: &Elf<'_>) -> Option<(u32, u32)> {
    let info = elf.file.section_by_name(".go.buildinfo")?.data().ok()?;
    if info.get(..14)? != b"\xff Go buildinf:" {
        return None;
    }
    let ptr_size = *info.get(14)? as usize;
    let flags = *info.get(15)?;
    let text: Vec<u8> = if flags & 2 != 0 {
        // Inline: varint length, then the bytes, at offset 32.
        let (len, used) = uvarint(info.get(32..)?)?;
        info.get(32 + used..32 + used + usize::try_from(len).ok()?)?
            .to_vec()
    } else {
        if ptr_size != 8 {
            return None;
        }
        // A pointer at 16 to a Go string header (pointer, length).
        let header = u64::from_le_bytes(info.get(16..24)?.try_into().ok()?);
        let h = elf.bytes_at(header, 16)?;
        let ptr = u64::from_le_bytes(h.get(..8)?.try_into().ok()?);
        let len = u64::from_le_bytes(h.get(8..16)?.try_into().ok()?);
        elf.bytes_at(ptr, usize::try_from(len).ok()?)?.to_vec()
    };
    parse_version(std::str::from_utf8(&text).ok()?)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `go1.19.8` → `(1, 19)`.
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let rest = s.strip_prefix("go")?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Finds `names` in the symbol table, else in `.gopclntab`.
pub fn functions(elf: &Elf<'_>, names: &[&str]) -> Vec<Option<Function>> {
    let mut out: Vec<Option<Function>> = names
        .iter()
        .map(|name| {
            elf.file
                .symbols()
                .find(|s| s.name() == Ok(*name) && s.is_definition() && s.size() > 0)
                .map(|s| Function {
                    entry: s.address(),
                    end: s.address() + s.size(),
                })
        })
        .collect();
    if out.iter().any(Option::is_none)
        && let Some(table) = pclntab_functions(elf, names)
    {
        for (slot, found) in out.iter_mut().zip(table) {
            if slot.is_none() {
                *slot = found;
            }
        }
    }
    out
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Looks `names` up in `.gopclntab` (64-bit layouts of Go 1.16 and later).
pub fn pclntab_functions(elf: &Elf<'_>, names: &[&str]) -> Option<Vec<Option<Function>>> {
    let tab = elf.file.section_by_name(".gopclntab")?.data().ok()?;
    let magic = read_u32(tab, 0)?;
    if *tab.get(7)? != 8 {
        return None;
    }
    let word = |i: usize| read_u64(tab, 8 + 8 * i).and_then(|v| usize::try_from(v).ok());
    // (entry of function i, offset of its _func, offset of the name in _func)
    let (nfunc, funcnames, pcln, text_start, wide) = match magic {
        0xffff_fff0 | 0xffff_fff1 => {
            let mut text = read_u64(tab, 8 + 8 * 2)?;
            if text == 0 {
                // PIE: the field is relocated at run time; it is `.text`.
                text = elf.file.section_by_name(".text")?.address();
            }
            (word(0)?, word(3)?, word(7)?, text, false)
        }
        0xffff_fffa => (word(0)?, word(2)?, word(6)?, 0, true),
        _ => return None,
    };
    let functab = tab.get(pcln..)?;
    let entry_size = if wide { 16 } else { 8 };
    let entry_of = |i: usize| -> Option<u64> {
        if wide {
            read_u64(functab, i * entry_size)
        } else {
            Some(text_start + u64::from(read_u32(functab, i * entry_size)?))
        }
    };
    let mut out = vec![None; names.len()];
    let mut left = names.len();
    for i in 0..nfunc {
        let funcoff = if wide {
            usize::try_from(read_u64(functab, i * entry_size + 8)?).ok()?
        } else {
            read_u32(functab, i * entry_size + 4)? as usize
        };
        let func = functab.get(funcoff..)?;
        let name_off = read_u32(func, if wide { 8 } else { 4 })? as usize;
        let name_bytes = tab.get(funcnames.checked_add(name_off)?..)?;
        let name_end = name_bytes.iter().position(|&b| b == 0)?;
        let name = &name_bytes[..name_end];
        if let Some(slot) = names.iter().position(|n| n.as_bytes() == name)
            && out[slot].is_none()
        {
            out[slot] = Some(Function {
                entry: entry_of(i)?,
                end: entry_of(i + 1)?,
            });
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    Some(out)
}

/// The socket offsets for this program: DWARF first, else the release table.
pub fn conn_offsets(elf: &Elf<'_>, version: (u32, u32)) -> Option<(ConnOffsets, &'static str)> {
    if let Some(o) = dwarf_offsets(elf) {
        return Some((o, "dwarf"));
    }
    KNOWN_OFFSETS
        .iter()
        .find(|(lo, hi, _)| version.0 == 1 && (*lo..=*hi).contains(&version.1))
        .map(|(_, _, o)| (*o, "release table"))
}

/// Struct member offsets from DWARF: `crypto/tls.Conn.conn`, `net.TCPConn.conn`
/// + `net.conn.fd`, `net.netFD.pfd` + `internal/poll.FD.Sysfd`.
pub fn dwarf_offsets(elf: &Elf<'_>) -> Option<ConnOffsets> {
    use gimli::{AttributeValue, EndianSlice, LittleEndian};
    const WANTED: [(&str, &str); 5] = [
        ("crypto/tls.Conn", "conn"),
        ("net.TCPConn", "conn"),
        ("net.conn", "fd"),
        ("net.netFD", "pfd"),
        ("internal/poll.FD", "Sysfd"),
    ];
    let sections = gimli::DwarfSections::load(|id| -> Result<_, gimli::Error> {
        Ok(elf
            .file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or_default())
    })
    .ok()?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, LittleEndian));
    let mut found: [Option<u64>; 5] = [None; 5];
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let mut entries = unit.entries();
        // The struct being walked (index into WANTED's struct names), and its depth.
        let mut current: Option<(&str, isize)> = None;
        let mut depth: isize = 0;
        while let Ok(Some((delta, entry))) = entries.next_dfs() {
            depth += delta;
            if let Some((_, d)) = current
                && depth <= d
            {
                current = None;
            }
            let name = || -> Option<String> {
                let attr = entry.attr_value(gimli::DW_AT_name).ok()??;
                let s = dwarf.attr_string(&unit, attr).ok()?;
                Some(String::from_utf8_lossy(s.slice()).into_owned())
            };
            if entry.tag() == gimli::DW_TAG_structure_type {
                if let Some(n) = name()
                    && let Some(&(s, _)) = WANTED.iter().find(|(s, _)| *s == n)
                {
                    current = Some((s, depth));
                }
            } else if entry.tag() == gimli::DW_TAG_member
                && let Some((s, _)) = current
                && let Some(n) = name()
                && let Some(i) = WANTED.iter().position(|w| w.0 == s && w.1 == n)
                && let Ok(Some(AttributeValue::Udata(off))) =
                    entry.attr_value(gimli::DW_AT_data_member_location)
            {
                found[i] = Some(off);
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let [conn, tcp_conn, fd, pfd, sysfd] = found;
    Some(ConnOffsets {
        conn: u16::try_from(conn?).ok()?,
        fd: u16::try_from(tcp_conn? + fd?).ok()?,
        sysfd: u16::try_from(pfd? + sysfd?).ok()?,
    })
}

/// Registers holding `(*Conn).Read`/`Write`'s arguments and the goroutine:
/// the entry probe may sit after instructions that write none of them.
const ARG_REGISTERS: [Register; 6] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RDI,
    Register::RSP,
    Register::R14,
];

/// The probe address at a Go function's entry: the stack check's `jbe` when
/// nothing before it touches the arguments (`cookie` flag `STACK_CHECK`),
/// else the entry itself.
fn entry_point(elf: &Elf<'_>, f: Function) -> Option<(u64, Placement, u64)> {
    let code = elf.bytes_at(f.entry, PROLOGUE_INSNS * 15)?;
    let mut d = Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut first = None;
    for _ in 0..PROLOGUE_INSNS {
        if !d.can_decode() {
            break;
        }
        let i = d.decode();
        if first.is_none() {
            first = Some(i);
        }
        if i.mnemonic() == Mnemonic::Jbe && i.op0_kind() == OpKind::NearBranch64 {
            return Some((
                i.ip(),
                Placement::Inside {
                    offset: i.ip() - f.entry,
                    insn: intel(&i),
                    emulated: true,
                },
                go_tls::STACK_CHECK,
            ));
        }
        let writes_args = info.info(&i).used_registers().iter().any(|r| {
            matches!(
                r.access(),
                OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite
            ) && ARG_REGISTERS.contains(&r.register().full_register())
        });
        if writes_args || i.flow_control() != FlowControl::Next {
            break;
        }
    }
    let first = first?;
    let insn = intel(&first);
    let placement = if emulated(&first).is_some() {
        Placement::Entry { insn }
    } else {
        Placement::Fallback { insn }
    };
    Some((f.entry, placement, 0))
}

/// Addresses of the `call runtime.memmove` and of every `RET` in `f`.
fn calls_and_returns(elf: &Elf<'_>, f: Function, memmove: u64) -> (Vec<u64>, Vec<u64>) {
    let len = f.end.saturating_sub(f.entry).min(MAX_FUNCTION_BYTES) as usize;
    let Some(code) = elf.bytes_at(f.entry, len) else {
        return (Vec::new(), Vec::new());
    };
    let mut d = Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE);
    let (mut copies, mut returns) = (Vec::new(), Vec::new());
    while d.can_decode() {
        let i = d.decode();
        if i.mnemonic() == Mnemonic::Call
            && i.op0_kind() == OpKind::NearBranch64
            && i.near_branch64() == memmove
        {
            copies.push(i.ip());
        } else if i.flow_control() == FlowControl::Return {
            returns.push(i.ip());
        }
    }
    (copies, returns)
}

fn point(
    elf: &Elf<'_>,
    symbol: &'static str,
    vaddr: u64,
    cookie: u64,
    kind: PointKind,
    placement: Placement,
) -> Result<ProbePoint, PlacementError> {
    Ok(ProbePoint {
        symbol,
        vaddr,
        file_offset: elf
            .file_offset(vaddr)
            .ok_or(PlacementError::Go("function outside the file image"))?,
        cookie,
        kind,
        placement,
    })
}

fn inside(elf: &Elf<'_>, f: Function, at: u64) -> Placement {
    let code = elf.bytes_at(at, 15).unwrap_or_default();
    let mut d = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
    let i = d.decode();
    Placement::Inside {
        offset: at - f.entry,
        insn: intel(&i),
        emulated: emulated(&i).is_some(),
    }
}

/// Plans the probe points of a Go program. `NoSymbols` for a Go program
/// without `crypto/tls`.
pub fn plan(elf: &Elf<'_>) -> Result<Vec<ProbePoint>, PlacementError> {
    let [read, write, memmove] = functions(elf, &[READ, WRITE, MEMMOVE])[..] else {
        return Err(PlacementError::NoSymbols);
    };
    let (Some(read), Some(write)) = (read, write) else {
        return Err(PlacementError::NoSymbols);
    };
    let version = version(elf).ok_or(PlacementError::Go("no readable go version"))?;
    if version < (1, 17) {
        return Err(PlacementError::Go(
            "before go 1.17 (stack calling convention)",
        ));
    }
    let (offsets, _) =
        conn_offsets(elf, version).ok_or(PlacementError::GoRelease(version.0, version.1))?;
    let cookie = |shape: u64, flags: u64| {
        go_tls::cookie(shape | flags, offsets.conn, offsets.fd, offsets.sysfd)
    };
    let mut points = Vec::new();
    for (symbol, f, shape) in [(WRITE, write, go_tls::WRITE), (READ, read, go_tls::READ)] {
        let (at, placement, flags) =
            entry_point(elf, f).ok_or(PlacementError::Go("cannot decode function entry"))?;
        points.push(point(
            elf,
            symbol,
            at,
            cookie(shape, flags),
            PointKind::GoEntry,
            placement,
        )?);
    }
    let (copies, returns) = memmove
        .map(|m| calls_and_returns(elf, read, m.entry))
        .unwrap_or_default();
    if let [copy] = copies[..] {
        let placement = inside(elf, read, copy);
        points.push(point(
            elf,
            READ,
            copy,
            cookie(go_tls::READ, 0),
            PointKind::GoReadCopy,
            placement,
        )?);
    } else {
        if returns.is_empty() {
            return Err(PlacementError::Go("no RET found in (*Conn).Read"));
        }
        for ret in returns {
            let placement = match inside(elf, read, ret) {
                Placement::Inside { insn, .. } => Placement::Fallback { insn },
                other => other,
            };
            points.push(point(
                elf,
                READ,
                ret,
                cookie(go_tls::READ, 0),
                PointKind::GoReturn,
                placement,
            )?);
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_version("go1.22rc1"), Some((1, 22)));
        assert_eq!(parse_version("devel"), None);
        assert_eq!(uvarint(&[0x88, 0x01]), Some((136, 2)));
    }
}
