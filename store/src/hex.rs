//! Digests as lowercase hex: the name every event, object line, access URL
//! and S3 key gives an object. Written two digits at a time from a table;
//! `blake3`'s own `to_hex` pushes one `char` at a time into an `ArrayString`,
//! each push checked, and the shards write several digests per transaction.

use std::fmt;

use crate::Digest;

/// Characters of a digest in hex.
pub const DIGEST_HEX_LEN: usize = 2 * blake3::OUT_LEN;

/// Each byte value's two hex digits.
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
        let mut text = [0; DIGEST_HEX_LEN];
        for (pair, &byte) in text.chunks_exact_mut(2).zip(digest.as_bytes()) {
            pair.copy_from_slice(&PAIRS[usize::from(byte)]);
        }
        Self(text)
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
}
