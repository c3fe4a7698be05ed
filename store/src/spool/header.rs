//! The header before every object in a spool segment: `TWSPOOL2`, the object's
//! BLAKE3 digest (32 bytes), its length (8 bytes, little-endian), one length
//! byte and the content type (UTF-8, at most 255 bytes); the object's bytes
//! follow, then the next object's header.
//!
//! The earlier layout, one file per object, began with `TWSPOOL1`, one length
//! byte and the content type; the digest was in the file's name
//! ([`parse_v1_header`] reads it, so a spool left by that layout is still
//! uploaded).
//!
//! Plain `std`, no dependencies: the fuzz target `spool_header` includes this
//! file by path, so fuzzing it does not build the store's network stack.

use std::fmt;

/// First bytes of every object's header in a segment; the `2` is the format
/// version.
pub const MAGIC: &[u8; 8] = b"TWSPOOL2";
/// First bytes of a file of the one-file-per-object layout.
pub const MAGIC_V1: &[u8; 8] = b"TWSPOOL1";
/// Longest content type kept in a header (longer ones are cut).
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Bytes before the content type: magic, digest, length, content type length.
const FIXED: usize = MAGIC.len() + 32 + 8 + 1;
/// The longest header: fixed fields and the longest content type.
pub const MAX_HEADER_BYTES: usize = FIXED + MAX_CONTENT_TYPE_BYTES;

/// An object header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// BLAKE3 of the object's bytes.
    pub digest: [u8; 32],
    /// The object's length in bytes.
    pub len: u64,
    /// The object's MIME type.
    pub content_type: &'a str,
    /// The header's length: where the object's bytes start, from the header's
    /// first byte.
    pub offset: u16,
}

/// Why a header is unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header needs.
    Short,
    /// Not a spool header of this version.
    Magic,
    /// The content type is not UTF-8.
    ContentType,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Short => "spool header cut short",
            Self::Magic => "bad spool header magic",
            Self::ContentType => "content type is not UTF-8",
        })
    }
}

impl std::error::Error for HeaderError {}

/// Appends the header of an object of `len` bytes with `digest` to `out`.
pub fn write_header(out: &mut Vec<u8>, digest: &[u8; 32], len: u64, content_type: &str) {
    let ct = truncate(content_type, MAX_CONTENT_TYPE_BYTES);
    out.reserve(FIXED + ct.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(digest);
    out.extend_from_slice(&len.to_le_bytes());
    // `truncate` keeps it at most 255 bytes.
    out.push(u8::try_from(ct.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(ct.as_bytes());
}

/// Length of the header for `content_type` (at most [`MAX_HEADER_BYTES`]).
pub fn header_len(content_type: &str) -> u16 {
    let len = FIXED + truncate(content_type, MAX_CONTENT_TYPE_BYTES).len();
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// Parses the header at the start of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<Header<'_>, HeaderError> {
    let magic = bytes.get(..MAGIC.len()).ok_or(HeaderError::Short)?;
    if magic != MAGIC {
        return Err(HeaderError::Magic);
    }
    let fixed = bytes.get(..FIXED).ok_or(HeaderError::Short)?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&fixed[8..40]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&fixed[40..48]);
    let ct_len = usize::from(fixed[48]);
    let ct = bytes.get(FIXED..FIXED + ct_len).ok_or(HeaderError::Short)?;
    let content_type = std::str::from_utf8(ct).map_err(|_| HeaderError::ContentType)?;
    // At most FIXED + 255 bytes.
    let offset = u16::try_from(FIXED + ct_len).map_err(|_| HeaderError::Short)?;
    Ok(Header {
        digest,
        len: u64::from_le_bytes(len),
        content_type,
        offset,
    })
}

/// Parses the header of a one-file-per-object spool file: (content type,
/// where the object's bytes start).
pub fn parse_v1_header(bytes: &[u8]) -> Result<(&str, u16), HeaderError> {
    let magic = bytes.get(..MAGIC_V1.len()).ok_or(HeaderError::Short)?;
    if magic != MAGIC_V1 {
        return Err(HeaderError::Magic);
    }
    let ct_len = usize::from(*bytes.get(MAGIC_V1.len()).ok_or(HeaderError::Short)?);
    let start = MAGIC_V1.len() + 1;
    let ct = bytes.get(start..start + ct_len).ok_or(HeaderError::Short)?;
    let content_type = std::str::from_utf8(ct).map_err(|_| HeaderError::ContentType)?;
    let offset = u16::try_from(start + ct_len).map_err(|_| HeaderError::Short)?;
    Ok((content_type, offset))
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
