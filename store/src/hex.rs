//! Digests as lowercase hex: the name every event, object line, access URL
//! and S3 key gives an object. Written sixteen bytes at a time with SSE2 on
//! x86-64, elsewhere two digits at a time from a table; `blake3`'s own
//! `to_hex` pushes one `char` at a time into an `ArrayString`, each push
//! checked, and the shards write several digests per transaction.

use std::fmt;

use crate::Digest;

/// Characters of a digest in hex.
pub const DIGEST_HEX_LEN: usize = 2 * blake3::OUT_LEN;

/// Each byte value's two hex digits.
#[cfg(any(test, not(target_arch = "x86_64")))]
static PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    pairs
};

/// A digest in lowercase hex, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DigestHex([u8; DIGEST_HEX_LEN]);

impl DigestHex {
    /// `digest` in lowercase hex.
    #[inline]
    pub fn new(digest: &Digest) -> Self {
        #[cfg(target_arch = "x86_64")]
        return Self(hex_sse2(digest.as_bytes()));
        #[cfg(not(target_arch = "x86_64"))]
        return Self(hex_pairs(digest.as_bytes()));
    }

    /// The hex digits.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; DIGEST_HEX_LEN] {
        &self.0
    }

    /// The hex digits as text.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `bytes` in hex, two digits at a time from [`PAIRS`].
#[cfg(any(test, not(target_arch = "x86_64")))]
fn hex_pairs(bytes: &[u8; blake3::OUT_LEN]) -> [u8; DIGEST_HEX_LEN] {
    let mut text = [0; DIGEST_HEX_LEN];
    for (pair, &byte) in text.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
    text
}

/// `bytes` in hex, sixteen bytes at a time with SSE2 (every x86-64 has it):
/// each byte's high and low nibbles are split into two vectors, interleaved
/// high first, and each nibble becomes `'0' + n`, plus `'a' - '0' - 10` where
/// `n > 9`. About a tenth of the instructions of the table loop, and the
/// shards write a dozen digests per transaction with an S3 store.
#[cfg(target_arch = "x86_64")]
fn hex_sse2(bytes: &[u8; blake3::OUT_LEN]) -> [u8; DIGEST_HEX_LEN] {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_and_si128, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_set1_epi8,
        _mm_srli_epi16, _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };
    let mut text = [0u8; DIGEST_HEX_LEN];
    // SAFETY: SSE2 is part of x86-64; each load reads 16 of the 32 input
    // bytes and each store writes 16 of the 64 output bytes, in bounds
    // (unaligned loads and stores allowed).
    unsafe {
        let low_nibble = _mm_set1_epi8(0x0f);
        let nine = _mm_set1_epi8(9);
        let zero = _mm_set1_epi8(b'0' as i8);
        let letters = _mm_set1_epi8((b'a' - b'0' - 10) as i8);
        let digits = |n: __m128i| {
            // Nibbles are 0..=15, so the signed compare is exact.
            let past_nine = _mm_and_si128(_mm_cmpgt_epi8(n, nine), letters);
            _mm_add_epi8(_mm_add_epi8(n, zero), past_nine)
        };
        for half in 0..2 {
            let v = _mm_loadu_si128(bytes.as_ptr().add(16 * half).cast::<__m128i>());
            let high = _mm_and_si128(_mm_srli_epi16(v, 4), low_nibble);
            let low = _mm_and_si128(v, low_nibble);
            let out = text.as_mut_ptr().add(32 * half).cast::<__m128i>();
            _mm_storeu_si128(out, digits(_mm_unpacklo_epi8(high, low)));
            _mm_storeu_si128(out.add(1), digits(_mm_unpackhi_epi8(high, low)));
        }
    }
    text
}

impl fmt::Display for DigestHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for DigestHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_blake3s_own_hex() {
        for input in [&b""[..], b"x", &[0xff; 100], &[0, 1, 2, 0x7f, 0x80]] {
            let digest = blake3::hash(input);
            assert_eq!(DigestHex::new(&digest).as_str(), digest.to_hex().as_str());
        }
    }

    #[test]
    fn every_byte_value_at_every_place_is_written_as_the_table_writes_it() {
        for value in 0..=255u8 {
            for place in 0..blake3::OUT_LEN {
                let mut bytes = [place as u8; blake3::OUT_LEN];
                bytes[place] = value;
                let digest = blake3::Hash::from_bytes(bytes);
                assert_eq!(
                    DigestHex::new(&digest).0,
                    hex_pairs(&bytes),
                    "{value} at {place}"
                );
            }
        }
    }
}
