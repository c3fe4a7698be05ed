//! A borrowed list of header fields shared by the HTTP/1 and HTTP/2 decoders.

use std::fmt;

/// Whether field names `a` and `b` are equal ignoring ASCII case, compared
/// eight bytes at a time: the standard library compares byte by byte, and
/// every head's framing fields, and a transaction's events, objects and
/// rules, look fields up by name.
#[inline]
pub fn name_eq(a: &[u8], b: &[u8]) -> bool {
    /// Each byte of `x` with `A`–`Z` made lowercase, others as they are.
    fn lower(x: u64) -> u64 {
        const ONES: u64 = u64::MAX / 255;
        let low7 = x & (0x7f * ONES);
        // High bit of each byte: at least `A`, and past `Z` (of its low seven
        // bits); an upper-case letter is the first without the second, and
        // without its own high bit.
        let from_a = low7 + (0x80 - u64::from(b'A')) * ONES;
        let past_z = low7 + (0x80 - u64::from(b'Z') - 1) * ONES;
        let upper = (from_a ^ past_z) & !x & (0x80 * ONES);
        x | (upper >> 2)
    }
    fn word(bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    }
    if a.len() != b.len() {
        return false;
    }
    let len = a.len();
    if len < 8 {
        return lower(word(a)) == lower(word(b));
    }
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let whole = ca
        .by_ref()
        .zip(cb.by_ref())
        .all(|(x, y)| lower(word(x)) == lower(word(y)));
    // The last eight bytes, overlapping the chunks compared above.
    whole && lower(word(&a[len - 8..])) == lower(word(&b[len - 8..]))
}

/// Where one field's name and value sit in a buffer.
///
/// The decoders keep fields as spans into a buffer they own or borrow, so a
/// list of headers costs no allocation per message once the span vector has
/// grown to its working size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldSpan {
    /// Offset of the name in the buffer.
    pub name_start: u32,
    /// Length of the name.
    pub name_len: u32,
    /// Offset of the value in the buffer.
    pub value_start: u32,
    /// Length of the value.
    pub value_len: u32,
}

impl FieldSpan {
    /// A span from `usize` offsets; `None` if one does not fit in `u32` (the
    /// decoders' buffers are bounded far below that).
    pub(crate) fn new(name: (usize, usize), value: (usize, usize)) -> Option<Self> {
        Some(FieldSpan {
            name_start: u32::try_from(name.0).ok()?,
            name_len: u32::try_from(name.1).ok()?,
            value_start: u32::try_from(value.0).ok()?,
            value_len: u32::try_from(value.1).ok()?,
        })
    }

    fn slice(buf: &[u8], start: u32, len: u32) -> &[u8] {
        let start = start as usize;
        start
            .checked_add(len as usize)
            .and_then(|end| buf.get(start..end))
            .unwrap_or_default()
    }
}

/// A list of header fields: names and values borrowed from a decoder's buffer
/// or from the input. Names keep the case they had on the wire.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    buf: &'a [u8],
    spans: &'a [FieldSpan],
}

impl<'a> Headers<'a> {
    /// No fields.
    pub const EMPTY: Headers<'static> = Headers {
        buf: &[],
        spans: &[],
    };

    /// Fields described by `spans` into `buf`. A span outside `buf` reads as
    /// an empty slice.
    pub fn new(buf: &'a [u8], spans: &'a [FieldSpan]) -> Self {
        Headers { buf, spans }
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> HeadersIter<'a> {
        HeadersIter {
            buf: self.buf,
            spans: self.spans.iter(),
        }
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(n, _)| name_eq(n, name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The values of every field named `name` (ASCII case-insensitive).
    pub fn get_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.iter()
            .filter(move |(n, _)| name_eq(n, name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Total bytes of names and values (no separators), for size accounting.
    pub fn byte_len(&self) -> usize {
        self.spans
            .iter()
            .map(|s| s.name_len as usize + s.value_len as usize)
            .sum()
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = HeadersIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

/// Iterator over [`Headers`].
#[derive(Clone)]
pub struct HeadersIter<'a> {
    buf: &'a [u8],
    spans: std::slice::Iter<'a, FieldSpan>,
}

impl<'a> Iterator for HeadersIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.spans.next()?;
        Some((
            FieldSpan::slice(self.buf, s.name_start, s.name_len),
            FieldSpan::slice(self.buf, s.value_start, s.value_len),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_compare_ignoring_ascii_case_only() {
        // Every byte value against every other, alone and at each place of
        // names up to 20 bytes long: equal exactly when the standard
        // library's byte-by-byte comparison says so.
        for len in [1, 7, 8, 9, 16, 20] {
            for at in [0, len / 2, len - 1] {
                let mut a = b"Content-Type-Header!"[..len].to_vec();
                let mut b = b"content-type-header!"[..len].to_vec();
                for x in 0..=255u8 {
                    for y in 0..=255u8 {
                        a[at] = x;
                        b[at] = y;
                        assert_eq!(name_eq(&a, &b), a.eq_ignore_ascii_case(&b), "{a:?} {b:?}");
                    }
                }
            }
        }
        assert!(name_eq(b"", b""));
        assert!(!name_eq(b"host", b"hosts"));
    }
}
