//! The header at the start of every spool file: `TWSPOOL1`, one length byte, the
//! content type (UTF-8, at most 255 bytes); the object's bytes follow.
//!
//! Plain `std`, no dependencies: the fuzz target `spool_header` includes this
//! file by path, so fuzzing it does not build the store's network stack.

use std::fmt;

/// First bytes of every spool file; the `1` is the format version.
pub const MAGIC: &[u8; 8] = b"TWSPOOL1";
/// Longest content type kept in a spool file header (longer ones are cut).
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// A spool file header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The object's MIME type.
    pub content_type: &'a str,
    /// Where the object's bytes start.
    pub offset: u16,
}

/// Why a spool file header is unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header needs.
    Short,
    /// Not a spool file of this version.
    Magic,
    /// The content type is not UTF-8.
    ContentType,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Short => "spool file header cut short",
            Self::Magic => "bad spool file magic",
            Self::ContentType => "content type is not UTF-8",
        })
    }
}

impl std::error::Error for HeaderError {}

/// The header written before an object's bytes.
pub fn header(content_type: &str) -> Vec<u8> {
    let ct = truncate(content_type, MAX_CONTENT_TYPE_BYTES);
    let mut h = Vec::with_capacity(MAGIC.len() + 1 + ct.len());
    h.extend_from_slice(MAGIC);
    // `truncate` keeps it at most 255 bytes.
    h.push(u8::try_from(ct.len()).unwrap_or(u8::MAX));
    h.extend_from_slice(ct.as_bytes());
    h
}

/// Length of the header for `content_type` (at most 8 + 1 + 255).
pub fn header_len(content_type: &str) -> u16 {
    let len = MAGIC.len() + 1 + truncate(content_type, MAX_CONTENT_TYPE_BYTES).len();
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// Parses the header at the start of a spool file.
pub fn parse_header(bytes: &[u8]) -> Result<Header<'_>, HeaderError> {
    let magic = bytes.get(..MAGIC.len()).ok_or(HeaderError::Short)?;
    if magic != MAGIC {
        return Err(HeaderError::Magic);
    }
    let ct_len = usize::from(*bytes.get(MAGIC.len()).ok_or(HeaderError::Short)?);
    let start = MAGIC.len() + 1;
    let ct = bytes.get(start..start + ct_len).ok_or(HeaderError::Short)?;
    let content_type = std::str::from_utf8(ct).map_err(|_| HeaderError::ContentType)?;
    // At most 8 + 1 + 255 bytes.
    let offset = u16::try_from(start + ct_len).map_err(|_| HeaderError::Short)?;
    Ok(Header {
        content_type,
        offset,
    })
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
