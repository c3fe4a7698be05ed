//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B), decoded with tables.
//!
//! The code in Appendix B is canonical: codes of one length are consecutive
//! and sorted by symbol, and every code of length L+1 sorts after every code
//! of length L. So the 257 code lengths alone define it, and decoding needs
//! no tree: a 12-bit lookup table resolves one or two symbols whose codes
//! fit in the next 12 bits (most printable ASCII codes are 5–8 bits), and
//! longer codes are found by comparing the left-aligned bit window against
//! the first code past each length. All tables are built at compile time.

/// Code length in bits of each octet 0..=255 and of EOS (256), from RFC 7541
/// Appendix B.
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
];

/// The end-of-string symbol; never valid inside a string.
const EOS: u16 = 256;
/// Longest code, in bits.
const MAX_LEN: usize = 30;
/// Bits resolved by the first-level table; codes up to this long take one
/// lookup, and two codes that fit together take one lookup for both.
/// 12 bits = 4096 four-byte entries, 16 KiB, inside L1. Against 11 bits it
/// decodes two 6-bit codes (most lowercase letters) in one lookup.
const FAST_BITS: u32 = 12;

struct Tables {
    /// Code of each symbol, right-aligned.
    codes: [u32; 257],
    /// For each 12-bit prefix, the symbols whose codes it holds whole:
    /// `sym1 | sym2 << 8 | len1 << 16 | total_len << 21 | count << 26`,
    /// count 0 if the first code is longer than 12 bits.
    fast: [u32; 1 << FAST_BITS],
    /// First code of each length, right-aligned.
    first: [u32; MAX_LEN + 1],
    /// Index into `sorted` of the first symbol of each length.
    offset: [u16; MAX_LEN + 1],
    /// One past the last code of each length, left-aligned in 32 bits.
    limit: [u64; MAX_LEN + 1],
    /// Symbols in code order.
    sorted: [u16; 257],
}

const fn build() -> Tables {
    let mut t = Tables {
        codes: [0; 257],
        fast: [0; 1 << FAST_BITS],
        first: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        limit: [0; MAX_LEN + 1],
        sorted: [0; 257],
    };
    // `(symbol, len)` of the code starting each 12-bit prefix, len 0 if the
    // code is longer.
    let mut single = [(0u16, 0u32); 1 << FAST_BITS];
    let mut code: u32 = 0;
    let mut k: usize = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        t.first[len] = code;
        t.offset[len] = k as u16;
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as usize == len {
                t.codes[sym] = code;
                t.sorted[k] = sym as u16;
                if len as u32 <= FAST_BITS {
                    let shift = FAST_BITS - len as u32;
                    let base = (code << shift) as usize;
                    let mut j = 0;
                    while j < (1usize << shift) {
                        single[base + j] = (sym as u16, len as u32);
                        j += 1;
                    }
                }
                code += 1;
                k += 1;
            }
            sym += 1;
        }
        t.limit[len] = (code as u64) << (32 - len);
        code <<= 1;
        len += 1;
    }
    let mask = (1u32 << FAST_BITS) - 1;
    let mut p = 0;
    while p < (1 << FAST_BITS) {
        let (s1, l1) = single[p];
        if l1 != 0 {
            let mut e = s1 as u32 | (l1 << 16) | (l1 << 21) | (1 << 26);
            let rest = ((p as u32) << l1) & mask;
            let (s2, l2) = single[rest as usize];
            if l2 != 0 && l1 + l2 <= FAST_BITS {
                e = s1 as u32 | ((s2 as u32) << 8) | (l1 << 16) | ((l1 + l2) << 21) | (2 << 26);
            }
            t.fast[p] = e;
        }
        p += 1;
    }
    t
}

static TABLES: Tables = build();

/// Why a Huffman string is invalid (RFC 7541 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol appeared in the data.
    Eos,
    /// Padding longer than 7 bits, or not all ones.
    Padding,
}

/// The symbol and length of a code longer than [`FAST_BITS`] at the top of
/// `top` (the unread bits, left-aligned), or `None` where no code starts
/// (30 one bits: only EOS's prefix or padding run that long).
#[inline]
fn long_code(t: &Tables, top: u64) -> Option<(u16, u32)> {
    let window = top >> 32;
    let mut len = FAST_BITS as usize + 1;
    while len < MAX_LEN && window >= t.limit[len] {
        len += 1;
    }
    let idx = ((window >> (32 - len)) as u32)
        .checked_sub(t.first[len])
        .map(|i| i as usize + usize::from(t.offset[len]))?;
    t.sorted.get(idx).map(|&sym| (sym, len as u32))
}

/// Decodes `input`, appending the octets to `out`.
///
/// While eight input bytes remain, one unaligned big-endian load tops the
/// bit buffer up to 56–63 bits without a branch per byte, and that is
/// enough for four first-level lookups (each takes at most 12 bits) or
/// one longer code; the last bytes go through a loop that refills a byte
/// at a time and knows where the input ends.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let t = &TABLES;
    // Every code is at least 5 bits.
    out.reserve(input.len() * 8 / 5 + 1);
    // Symbols go to a small array first: storing into it costs less than a
    // capacity check per `Vec::push`.
    let mut tmp = [0u8; 64];
    let mut n = 0;
    let mut acc: u64;
    let mut nbits: u32 = 0;
    let mut i = 0;
    // The fast loop keeps the unread bits left-aligned in `buf`, so a
    // lookup is one shift of it and a step one shift back; the bits past
    // `nbits` are zero or the input's next bits, which the next load
    // writes again in the same place.
    let mut buf: u64 = 0;
    while let Some(word) = input.get(i..).and_then(|s| s.first_chunk::<8>()) {
        if n + 8 > tmp.len() {
            out.extend_from_slice(&tmp[..n]);
            n = 0;
        }
        // Whole bytes that fit: 0..=7, leaving 56..=63 bits.
        let take = (63 - nbits) / 8;
        buf |= u64::from_be_bytes(*word) >> nbits;
        nbits += 8 * take;
        i += take as usize;
        let e = t.fast[(buf >> (64 - FAST_BITS)) as usize];
        if e >> 26 == 0 {
            let (sym, len) = long_code(t, buf).ok_or(HuffmanError::Padding)?;
            if sym == EOS {
                return Err(HuffmanError::Eos);
            }
            tmp[n] = sym as u8;
            n += 1;
            buf <<= len;
            nbits -= len;
            continue;
        }
        tmp[n] = e as u8;
        tmp[n + 1] = (e >> 8) as u8;
        n += (e >> 26) as usize;
        let total = (e >> 21) & 31;
        buf <<= total;
        nbits -= total;
        // At least 44 bits left: three more lookups of up to 12 bits.
        for _ in 0..3 {
            let e = t.fast[(buf >> (64 - FAST_BITS)) as usize];
            if e >> 26 == 0 {
                break;
            }
            tmp[n] = e as u8;
            tmp[n + 1] = (e >> 8) as u8;
            n += (e >> 26) as usize;
            let total = (e >> 21) & 31;
            buf <<= total;
            nbits -= total;
        }
    }
    // The rest of the input is read a byte at a time into `acc`, whose low
    // `nbits` are the unread bits.
    acc = buf.checked_shr(64 - nbits).unwrap_or(0);
    let result = loop {
        if n + 2 > tmp.len() {
            out.extend_from_slice(&tmp[..n]);
            n = 0;
        }
        while nbits <= 56 && i < input.len() {
            acc = (acc << 8) | u64::from(input[i]);
            nbits += 8;
            i += 1;
        }
        if nbits == 0 {
            break Ok(());
        }
        // The unread bits, left-aligned; zeros past the end.
        let top = acc << (64 - nbits);
        let e = t.fast[(top >> (64 - FAST_BITS)) as usize];
        let count = e >> 26;
        if count != 0 {
            // Both slots are written; only `count` of them are kept.
            tmp[n] = e as u8;
            tmp[n + 1] = (e >> 8) as u8;
            // No branch on the count: a one-symbol entry has its length as
            // the total.
            let total = (e >> 21) & 31;
            if total <= nbits {
                n += count as usize;
                nbits -= total;
                continue;
            }
            let len = (e >> 16) & 31;
            if len > nbits {
                // Only padding can be shorter than the code it starts.
                break Ok(());
            }
            n += 1;
            nbits -= len;
            continue;
        }
        let Some((sym, len)) = long_code(t, top) else {
            break Err(HuffmanError::Padding);
        };
        if len > nbits {
            break Ok(());
        }
        if sym == EOS {
            break Err(HuffmanError::Eos);
        }
        tmp[n] = sym as u8;
        n += 1;
        nbits -= len;
    };
    out.extend_from_slice(&tmp[..n]);
    result?;
    let pad_mask = (1u64 << nbits) - 1;
    if nbits > 7 || acc & pad_mask != pad_mask {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

/// Encodes `input`, appending to `out` (used to build test and benchmark
/// input; the agent only decodes).
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    for &b in input {
        let len = u32::from(LENGTHS[b as usize]);
        acc = (acc << len) | u64::from(TABLES.codes[b as usize]);
        nbits += len;
        while nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
        }
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
}

/// Length of `input` once encoded, in bytes.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input
        .iter()
        .map(|&b| usize::from(LENGTHS[b as usize]))
        .sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_appendix_b_samples() {
        // A few codes as printed in RFC 7541 Appendix B.
        assert_eq!(TABLES.codes[b'0' as usize], 0x0);
        assert_eq!(TABLES.codes[b'a' as usize], 0x3);
        assert_eq!(TABLES.codes[b' ' as usize], 0x14);
        assert_eq!(TABLES.codes[b'&' as usize], 0xf8);
        assert_eq!(TABLES.codes[0], 0x1ff8);
        assert_eq!(TABLES.codes[1], 0x7fffd8);
        assert_eq!(TABLES.codes[255], 0x3ffffee);
        assert_eq!(TABLES.codes[256], 0x3fffffff);
    }

    #[test]
    fn round_trips_every_octet() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for n in 0..all.len() {
            let mut enc = Vec::new();
            encode(&all[..n], &mut enc);
            assert_eq!(enc.len(), encoded_len(&all[..n]));
            let mut dec = Vec::new();
            decode(&enc, &mut dec).expect("valid");
            assert_eq!(dec, &all[..n]);
        }
    }

    /// Packs `(code, len)` pairs MSB first, padded with ones.
    fn pack(codes: &[(u32, u32)]) -> Vec<u8> {
        let (mut acc, mut nbits, mut out) = (0u64, 0u32, Vec::new());
        for &(code, len) in codes {
            acc = (acc << len) | u64::from(code);
            nbits += len;
            while nbits >= 8 {
                nbits -= 8;
                out.push((acc >> nbits) as u8);
            }
        }
        if nbits > 0 {
            let pad = 8 - nbits;
            out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
        }
        out
    }

    /// Each symbol alone, and each with the errors RFC 7541 §5.2 names
    /// around it: EOS before or after it, padding not all ones, padding of
    /// 8 bits or more.
    #[test]
    fn every_symbol_alone_and_its_padding_errors() {
        let eos = (TABLES.codes[256], 30);
        for sym in 0..=255u8 {
            let code = (TABLES.codes[sym as usize], u32::from(LENGTHS[sym as usize]));
            let enc = pack(&[code]);
            let mut dec = Vec::new();
            assert_eq!(decode(&enc, &mut dec), Ok(()), "symbol {sym}");
            assert_eq!(dec, [sym]);
            let pad = (8 - code.1 % 8) % 8;
            if pad > 0 {
                // Padding whose last bit is zero (all zeros could be a
                // code: `0` is 00000).
                let mut bad = enc.clone();
                *bad.last_mut().expect("one byte") &= !1;
                assert_eq!(
                    decode(&bad, &mut Vec::new()),
                    Err(HuffmanError::Padding),
                    "symbol {sym} with padding not all ones"
                );
            }
            let mut long_pad = enc.clone();
            long_pad.push(0xff);
            assert_eq!(
                decode(&long_pad, &mut Vec::new()),
                Err(HuffmanError::Padding),
                "symbol {sym} with {} bits of padding",
                pad + 8
            );
            for codes in [[code, eos], [eos, code]] {
                assert_eq!(
                    decode(&pack(&codes), &mut Vec::new()),
                    Err(HuffmanError::Eos),
                    "symbol {sym} next to EOS"
                );
            }
        }
    }

    #[test]
    fn decodes_rfc_examples() {
        let mut out = Vec::new();
        decode(
            &[
                0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
            ],
            &mut out,
        )
        .expect("valid");
        assert_eq!(out, b"www.example.com");
    }

    #[test]
    fn refuses_bad_padding_and_eos() {
        let mut out = Vec::new();
        assert_eq!(decode(&[0x07], &mut out), Ok(()));
        assert_eq!(out, b"0");
        assert_eq!(decode(&[0x00], &mut Vec::new()), Err(HuffmanError::Padding));
        assert_eq!(
            decode(&[0x07, 0xff], &mut Vec::new()),
            Err(HuffmanError::Padding)
        );
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new()),
            Err(HuffmanError::Eos)
        );
        assert_eq!(decode(&[0xff], &mut Vec::new()), Err(HuffmanError::Padding));
        // EOS with many bytes after it, where a word is loaded at a time:
        // the padding of the first string and 32 one bits hold EOS's code.
        let mut enc = Vec::new();
        encode(b"accept-encoding: gzip", &mut enc);
        enc.extend_from_slice(&[0xff; 4]);
        encode(b"accept-encoding: gzip", &mut enc);
        assert_eq!(decode(&enc, &mut Vec::new()), Err(HuffmanError::Eos));
    }
}
