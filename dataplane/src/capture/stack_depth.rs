//! The probes' stack, checked on the object itself: each program's frame and
//! those of the functions it calls — `bpf_loop` callbacks included — must fit
//! the verifier's 512 bytes together, each frame rounded up to 32 bytes as
//! the kernel rounds it. Some kernels do not add a callback's frame to its
//! caller's and would load an object past the limit; others refuse every
//! program of it ("combined stack size of 2 calls is 608. Too large"). This
//! test fails on any machine, whichever kernel runs it.

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionIndex};

use super::loader::EBPF_OBJECT;

/// The verifier's limit for a chain of frames (`MAX_BPF_STACK`).
const MAX_STACK: u64 = 512;
/// The frame pointer register.
const R10: u8 = 10;
/// `BPF_PSEUDO_CALL`: a call to a BPF function, not a helper.
const PSEUDO_CALL: u8 = 1;
/// `BPF_PSEUDO_FUNC`: a 64-bit load of a function's address (a callback).
const PSEUDO_FUNC: u8 = 4;

/// A function of the object: a program, or a BPF function programs call.
struct Function {
    name: String,
    section: SectionIndex,
    /// Byte range within its section.
    start: u64,
    end: u64,
    /// A program (its section is an attach point), not a `.text` function.
    program: bool,
}

/// One decoded instruction.
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

fn insn(bytes: &[u8]) -> Insn {
    Insn {
        code: bytes[0],
        dst: bytes[1] & 0x0f,
        src: bytes[1] >> 4,
        off: i16::from_le_bytes([bytes[2], bytes[3]]),
        imm: i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    }
}

/// Deepest stack offset a function's instructions reach: loads and stores
/// relative to r10, and pointers made from r10 (`rX = r10; rX += -n`) that
/// helpers read or write through.
fn frame_bytes(code: &[u8]) -> u64 {
    let mut deepest = 0u64;
    // Registers that hold r10 plus an offset, and the offset.
    let mut points: [Option<i64>; 11] = [None; 11];
    let mut reach = |off: i64| deepest = deepest.max(u64::try_from(-off).unwrap_or(0));
    let mut at = 0;
    while at + 8 <= code.len() {
        let i = insn(&code[at..]);
        let (dst, src) = (usize::from(i.dst), usize::from(i.src));
        let class = i.code & 0x07;
        match class {
            // LDX: src is the base.
            0x01 if i.src == R10 => reach(i64::from(i.off)),
            // ST, STX: dst is the base.
            0x02 | 0x03 if i.dst == R10 => reach(i64::from(i.off)),
            _ => {}
        }
        if dst < points.len() {
            match i.code {
                // ALU64 MOV X: a copy of r10, or of a pointer into the stack.
                0xbf => {
                    points[dst] = if i.src == R10 {
                        Some(0)
                    } else {
                        points.get(src).copied().flatten()
                    };
                }
                // ALU64 ADD K: the pointer moves.
                0x07 => {
                    if let Some(off) = points[dst] {
                        let off = off + i64::from(i.imm);
                        reach(off);
                        points[dst] = Some(off);
                    }
                }
                // Any other write to a register ends what it pointed to.
                _ if matches!(class, 0x00 | 0x01 | 0x04 | 0x07) => points[dst] = None,
                _ => {}
            }
        }
        // A call leaves r0-r5 undefined.
        if i.code == 0x85 {
            points[..6].fill(None);
        }
        // `ld_imm64` takes two slots.
        at += if i.code == 0x18 { 16 } else { 8 };
    }
    deepest
}

/// The function instruction `i` at `at` (section, byte offset) calls, or
/// whose address it loads for a helper (a `bpf_loop` callback); `None` for
/// anything else. `symbol` is the relocation at `at`, if any.
fn call_target(
    file: &object::File<'_>,
    functions: &[Function],
    i: &Insn,
    (section, at): (SectionIndex, u64),
    symbol: Option<usize>,
) -> Option<usize> {
    let starting = |section: SectionIndex, start: i64| {
        functions
            .iter()
            .position(|g| g.section == section && g.start as i64 == start)
    };
    let imm = i64::from(i.imm);
    let is_call = i.code == 0x85 && i.src == PSEUDO_CALL;
    // A function's address: marked as such by the loader, or in the object
    // a 64-bit load relocated against a code section (a map's address is
    // relocated against `.maps`, where no function starts).
    let is_address = i.code == 0x18 && (i.src == PSEUDO_FUNC || symbol.is_some());
    if !is_call && !is_address {
        return None;
    }
    let target = match symbol {
        // Against the function's symbol, or its section's with the
        // immediate saying where: as libbpf reads them, a call's immediate
        // counts instructions after the next, an address's counts bytes.
        Some(symbol) => {
            let symbol = file
                .symbol_by_index(object::SymbolIndex(symbol))
                .expect("relocated symbol");
            let base = symbol.address() as i64;
            let start = if is_call {
                base + (imm + 1) * 8
            } else {
                base + imm
            };
            starting(symbol.section_index().expect("defined"), start)
        }
        // Within the section, relative to the next instruction.
        None => starting(section, at as i64 + 8 + imm * 8),
    };
    assert!(
        target.is_some() || !is_call,
        "call at {at:#x} to no function"
    );
    target
}

/// The kernel's rounding of one frame.
fn rounded(bytes: u64) -> u64 {
    bytes.div_ceil(32) * 32
}

#[test]
fn every_chain_of_frames_fits_the_verifiers_stack() {
    let file = object::File::parse(EBPF_OBJECT).expect("the probes' object parses");
    let mut functions: Vec<Function> = Vec::new();
    for symbol in file.symbols() {
        let (Some(section), Ok(name)) = (symbol.section_index(), symbol.name()) else {
            continue;
        };
        if symbol.kind() != object::SymbolKind::Text || symbol.size() == 0 {
            continue;
        }
        let section_name = file
            .section_by_index(section)
            .and_then(|s| s.name().map(str::to_owned));
        functions.push(Function {
            name: name.to_owned(),
            section,
            start: symbol.address(),
            end: symbol.address() + symbol.size(),
            program: section_name.is_ok_and(|n| n != ".text"),
        });
    }
    // Each function's frame, and the functions it calls or hands to a helper
    // as a callback.
    let mut frames = vec![0u64; functions.len()];
    let mut callees: Vec<Vec<usize>> = vec![Vec::new(); functions.len()];
    for section in file.sections() {
        let Ok(data) = section.data() else { continue };
        let relocations: HashMap<u64, usize> = section
            .relocations()
            .filter_map(|(offset, r)| match r.target() {
                RelocationTarget::Symbol(s) => Some((offset, s.0)),
                _ => None,
            })
            .collect();
        for (f, function) in functions.iter().enumerate() {
            if function.section != section.index() {
                continue;
            }
            let code = &data[function.start as usize..function.end as usize];
            frames[f] = frame_bytes(code);
            let mut at = 0usize;
            while at + 8 <= code.len() {
                let i = insn(&code[at..]);
                let offset = function.start + at as u64;
                let symbol = relocations.get(&offset).copied();
                match call_target(&file, &functions, &i, (section.index(), offset), symbol) {
                    Some(target) if target != f => callees[f].push(target),
                    _ => {}
                }
                at += if i.code == 0x18 { 16 } else { 8 };
            }
        }
    }
    for list in &mut callees {
        list.sort_unstable();
        list.dedup();
    }
    // The deepest chain from each function (the object has no recursion:
    // the verifier refuses it).
    fn deepest(f: usize, frames: &[u64], callees: &[Vec<usize>], seen: &mut Vec<usize>) -> u64 {
        assert!(!seen.contains(&f), "recursion through function {f}");
        seen.push(f);
        let below = callees[f]
            .iter()
            .map(|&c| deepest(c, frames, callees, seen))
            .max()
            .unwrap_or(0);
        seen.pop();
        rounded(frames[f]) + below
    }
    let mut report = Vec::new();
    let mut programs = 0;
    let mut calling = 0;
    for (f, function) in functions.iter().enumerate() {
        if !function.program {
            continue;
        }
        programs += 1;
        calling += usize::from(!callees[f].is_empty());
        let depth = deepest(f, &frames, &callees, &mut Vec::new());
        if depth > MAX_STACK {
            let chain: Vec<String> = callees[f]
                .iter()
                .map(|&c| format!("{} ({} bytes)", functions[c].name, frames[c]))
                .collect();
            report.push(format!(
                "{}: {} bytes of its own, {depth} with [{}]",
                function.name,
                frames[f],
                chain.join(", ")
            ));
        }
    }
    // The check reads what it checks: the programs, and the data programs'
    // calls (into `emit::chunk`, a `bpf_loop` callback, at least).
    assert!(programs >= 30, "{programs} programs found");
    assert!(calling >= 10, "{calling} programs with calls found");
    let ssl_return = functions
        .iter()
        .position(|f| f.name == "ssl_return")
        .expect("ssl_return");
    assert!(
        callees[ssl_return]
            .iter()
            .any(|&c| functions[c].name.contains("emit5chunk")),
        "ssl_return hands emit::chunk to bpf_loop"
    );
    assert!(frames[ssl_return] > 0);
    assert!(
        report.is_empty(),
        "past {MAX_STACK} bytes:\n{}",
        report.join("\n")
    );
}
