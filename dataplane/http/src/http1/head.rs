//! Request and response heads (RFC 9112 §2–§5) in httparse's shape.
//!
//! [`Request::parse`] and [`Response::parse`] take the bytes received so far
//! and return `Complete(head_len)` or `Partial`; the results borrow the input.
//! The same line and field scanners back the streaming [`super::Decoder`],
//! which keeps fields as [`FieldSpan`]s instead of a caller's slice.
//!
//! Leniency, chosen for an observer that must read what real peers accept:
//! bare LF ends a line (RFC 9112 §2.2 allows it), empty lines before a request
//! line are skipped (§2.2), a status line may omit the space before an empty
//! reason, and request targets and values may carry obs-text (bytes ≥ 0x80).
//! Obsolete line folding is refused, as most servers do (§5.2).

use std::fmt;

use crate::{FieldSpan, Status};

/// Largest head (start line + fields + empty line) accepted, in bytes.
///
/// Servers cap heads well below this (nginx 4×8 KiB by default, Node.js
/// 16 KiB, Apache 8 KiB per line); 64 KiB keeps every real head while
/// bounding what a decoder buffers for an incomplete one.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most header fields accepted in one head or trailer section.
///
/// Apache's `LimitRequestFieldsize` default is 100 fields; 128 leaves room.
pub const MAX_HEADERS: usize = 128;

/// Why a head is not HTTP/1.1. Small and `Copy`, like httparse's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A method or field name has a byte that is not a token character.
    Token,
    /// The request target is empty or has a control byte.
    Target,
    /// The version is not `HTTP/1.0` or `HTTP/1.1`.
    Version,
    /// The status code is not three digits.
    Status,
    /// A field name is malformed (empty, space before the colon, obs-fold).
    HeaderName,
    /// A field value or reason phrase has a control byte.
    HeaderValue,
    /// A CR is not followed by LF.
    NewLine,
    /// More than [`MAX_HEADERS`] fields.
    TooManyHeaders,
    /// The head is longer than [`MAX_HEADER_BYTES`].
    HeadTooLarge,
    /// Content-Length is not a number, or two of them differ.
    ContentLength,
    /// A request's Transfer-Encoding does not end in `chunked` (RFC 9112 §6.3).
    TransferEncoding,
    /// A chunk-size line is malformed or the size overflows.
    ChunkSize,
    /// A chunk's data is not followed by CRLF.
    ChunkData,
    /// The connection closed inside a message whose end it does not mark.
    UnexpectedEof,
    /// Bytes were lost where the framing cannot account for them.
    Gap,
    /// Bytes sent after an Upgrade/CONNECT request, before its response,
    /// exceed [`MAX_HEADER_BYTES`].
    UpgradeBufferFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Token => "invalid token",
            Error::Target => "invalid request target",
            Error::Version => "invalid HTTP version",
            Error::Status => "invalid status code",
            Error::HeaderName => "invalid header field name",
            Error::HeaderValue => "invalid header field value",
            Error::NewLine => "CR not followed by LF",
            Error::TooManyHeaders => "too many header fields",
            Error::HeadTooLarge => "head larger than `MAX_HEADER_BYTES`",
            Error::ContentLength => "invalid `Content-Length`",
            Error::TransferEncoding => "request `Transfer-Encoding` does not end in chunked",
            Error::ChunkSize => "invalid chunk size line",
            Error::ChunkData => "chunk data not followed by CRLF",
            Error::UnexpectedEof => "connection closed inside a message",
            Error::Gap => "bytes lost where the framing cannot skip them",
            Error::UpgradeBufferFull => "too many bytes after an upgrade request",
        })
    }
}

impl std::error::Error for Error {}

/// The protocol version on a start line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

/// A request method; what the response framing depends on (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    /// `GET`
    #[default]
    Get,
    /// `HEAD`: the response has no body whatever its headers say.
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`: a 2xx response turns the connection into a tunnel.
    Connect,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `PATCH`
    Patch,
    /// Any other token.
    Other,
}

impl Method {
    /// The method named by a token (methods are case-sensitive).
    pub fn from_bytes(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// One header field, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The field name as on the wire (a token, so ASCII).
    pub name: &'a str,
    /// The field value without surrounding whitespace.
    pub value: &'a [u8],
}

/// An empty header to fill a caller's array with.
pub const EMPTY_HEADER: Header<'static> = Header {
    name: "",
    value: b"",
};

/// A request head; fields are `None` until parsed.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    /// The method token.
    pub method: Option<&'b str>,
    /// The request target (RFC 9112 §3.2), raw bytes.
    pub target: Option<&'b [u8]>,
    /// The version.
    pub version: Option<Version>,
    /// The fields; shrunk to those parsed.
    pub headers: &'h mut [Header<'b>],
}

impl<'h, 'b> Request<'h, 'b> {
    /// A request that will store up to `headers.len()` fields there.
    pub fn new(headers: &'h mut [Header<'b>]) -> Self {
        Request {
            method: None,
            target: None,
            version: None,
            headers,
        }
    }

    /// Parses a head from the start of `buf`: `Complete(len)` is the head's
    /// length including the empty line.
    pub fn parse(&mut self, buf: &'b [u8]) -> Result<Status<usize>, Error> {
        let line = match parse_request_line(buf)? {
            Status::Complete(l) => l,
            Status::Partial => return partial(buf),
        };
        self.method = Some(token_str(&buf[line.method.0..line.method.1]));
        self.target = Some(&buf[line.target.0..line.target.1]);
        self.version = Some(line.version);
        let end = fill_headers(buf, line.end, &mut self.headers)?;
        Ok(end)
    }
}

/// A response head; fields are `None` until parsed.
#[derive(Debug)]
pub struct Response<'h, 'b> {
    /// The version.
    pub version: Option<Version>,
    /// The status code.
    pub code: Option<u16>,
    /// The reason phrase, raw bytes (may be empty).
    pub reason: Option<&'b [u8]>,
    /// The fields; shrunk to those parsed.
    pub headers: &'h mut [Header<'b>],
}

impl<'h, 'b> Response<'h, 'b> {
    /// A response that will store up to `headers.len()` fields there.
    pub fn new(headers: &'h mut [Header<'b>]) -> Self {
        Response {
            version: None,
            code: None,
            reason: None,
            headers,
        }
    }

    /// Parses a head from the start of `buf`: `Complete(len)` is the head's
    /// length including the empty line.
    pub fn parse(&mut self, buf: &'b [u8]) -> Result<Status<usize>, Error> {
        let line = match parse_status_line(buf)? {
            Status::Complete(l) => l,
            Status::Partial => return partial(buf),
        };
        self.version = Some(line.version);
        self.code = Some(line.code);
        self.reason = Some(&buf[line.reason.0..line.reason.1]);
        let end = fill_headers(buf, line.end, &mut self.headers)?;
        Ok(end)
    }
}

fn partial(buf: &[u8]) -> Result<Status<usize>, Error> {
    if buf.len() >= MAX_HEADER_BYTES {
        Err(Error::HeadTooLarge)
    } else {
        Ok(Status::Partial)
    }
}

fn fill_headers<'b>(
    buf: &'b [u8],
    start: usize,
    headers: &mut &mut [Header<'b>],
) -> Result<Status<usize>, Error> {
    let mut n = 0;
    let status = parse_fields(buf, start, |name, value| {
        let slot = headers.get_mut(n).ok_or(Error::TooManyHeaders)?;
        *slot = Header {
            name: token_str(&buf[name.0..name.0 + name.1]),
            value: &buf[value.0..value.0 + value.1],
        };
        n += 1;
        Ok(())
    })?;
    match status {
        Status::Complete(end) => {
            let all = std::mem::take(headers);
            *headers = &mut all[..n];
            Ok(Status::Complete(end))
        }
        Status::Partial => partial(buf),
    }
}

/// A method or field name measured by [`token_run`] as `str`, without a
/// second pass over its bytes to validate them as UTF-8.
#[inline(always)]
fn token_str(b: &[u8]) -> &str {
    debug_assert!(b.iter().all(|&c| is_token_byte(c)));
    // SAFETY: callers pass only runs measured by `token_run`, and every
    // token byte is ASCII (the class table gives TOKEN to no byte ≥ 0x80),
    // so the bytes are UTF-8.
    unsafe { std::str::from_utf8_unchecked(b) }
}

/// Byte classes, one table lookup per byte.
const TOKEN: u8 = 1;
const VALUE: u8 = 2;
const TARGET: u8 = 4;

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        let tchar = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        if tchar {
            c |= TOKEN;
        }
        // field-vchar / SP / HTAB / obs-text (RFC 9110 §5.5).
        if b == b'\t' || (b >= 0x20 && b != 0x7f) {
            c |= VALUE;
        }
        // Visible ASCII and obs-text: what real targets carry.
        if b > 0x20 && b != 0x7f {
            c |= TARGET;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CLASS: [u8; 256] = classes();

/// Whether `b` may appear in a token (RFC 9110 §5.6.2).
pub fn is_token_byte(b: u8) -> bool {
    CLASS[b as usize] & TOKEN != 0
}

/// Bytes 0x01 in every lane, for the SWAR scans below.
const LO: u64 = u64::from_ne_bytes([0x01; 8]);
/// Bytes 0x80 in every lane.
const HI: u64 = u64::from_ne_bytes([0x80; 8]);

/// Non-zero if some byte of `x` is below `n` (n ≤ 0x80; bytes ≥ 0x80 never
/// count). May flag extra lanes above a true one, never miss one.
#[inline(always)]
fn any_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// Non-zero if some byte of `x` equals `b`.
#[inline(always)]
fn any_equal(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI
}

/// Bit 7 set in each byte lane of `x` (read little-endian) that is not a
/// field-value byte, except HTAB (also flagged), plus maybe lanes above.
#[inline(always)]
fn value_mask(x: u64) -> u64 {
    any_below(x, 0x20) | any_equal(x, 0x7f)
}

/// As [`value_mask`] for request-target bytes.
#[inline(always)]
fn target_mask(x: u64) -> u64 {
    any_below(x, 0x21) | any_equal(x, 0x7f)
}

/// The first byte of a 16-byte block that `mask` flags, from two words: a
/// borrow in [`any_below`] and [`any_equal`] only runs upwards, so the
/// lowest flagged lane is the first bad byte exactly and the word's
/// trailing zeros give it without going back to single bytes.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn first_in_words(c: &[u8; 16], mask: impl Fn(u64) -> u64) -> Option<usize> {
    let (lo, hi) = c.split_at(8);
    let lo = mask(u64::from_le_bytes(lo.try_into().unwrap_or_default()));
    let hi = mask(u64::from_le_bytes(hi.try_into().unwrap_or_default()));
    if lo != 0 {
        Some((lo.trailing_zeros() / 8) as usize)
    } else if hi != 0 {
        Some(8 + (hi.trailing_zeros() / 8) as usize)
    } else {
        None
    }
}

/// SSE2, part of every x86_64 CPU: one compare per 16 bytes and a
/// movemask whose trailing zeros are the first flagged byte.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };

    /// The 16 bytes as a vector (one unaligned load once compiled).
    #[target_feature(enable = "sse2")]
    fn load(c: &[u8; 16]) -> __m128i {
        let (lo, hi) = c.split_at(8);
        let lo = i64::from_le_bytes(lo.try_into().unwrap_or_default());
        let hi = i64::from_le_bytes(hi.try_into().unwrap_or_default());
        _mm_set_epi64x(hi, lo)
    }

    /// Lanes of `x` that are at most `max` (unsigned) or DEL.
    #[target_feature(enable = "sse2")]
    fn first_at_most_or_del(c: &[u8; 16], max: u8) -> Option<usize> {
        let x = load(c);
        let low = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(max as i8)), x);
        let del = _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f));
        let bits = _mm_movemask_epi8(_mm_or_si128(low, del)) as u32;
        (bits != 0).then(|| bits.trailing_zeros() as usize)
    }

    /// The first byte of `c` that is a control byte (HTAB included) or DEL.
    #[inline]
    pub(super) fn first_not_value(c: &[u8; 16]) -> Option<usize> {
        // SAFETY: SSE2 is in the x86_64 baseline: every x86_64 CPU has it,
        // so the target feature the callee is compiled for is present.
        unsafe { first_at_most_or_del(c, 0x1f) }
    }

    /// The first byte of `c` that is a control byte, SP or DEL.
    #[inline]
    pub(super) fn first_not_target(c: &[u8; 16]) -> Option<usize> {
        // SAFETY: as in `first_not_value`.
        unsafe { first_at_most_or_del(c, 0x20) }
    }
}

/// Length of the run at the start of `s` of bytes `block` and `mask` do
/// not flag: sixteen bytes a step through `block`, then a word through
/// `mask`, then one at a time with the class table.
#[inline(always)]
fn run(
    s: &[u8],
    block: impl Fn(&[u8; 16]) -> Option<usize>,
    mask: impl Fn(u64) -> u64,
    class: u8,
) -> usize {
    let mut chunks = s.chunks_exact(16);
    let mut i = 0;
    for c in &mut chunks {
        if let Some(k) = block(c.try_into().unwrap_or(&[0; 16])) {
            return i + k;
        }
        i += 16;
    }
    if let Some(w) = chunks.remainder().first_chunk::<8>() {
        let m = mask(u64::from_le_bytes(*w));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + s[i..]
        .iter()
        .position(|&b| CLASS[b as usize] & class == 0)
        .unwrap_or(s.len() - i)
}

#[cfg(target_arch = "x86_64")]
use sse2::{first_not_target, first_not_value};

#[cfg(not(target_arch = "x86_64"))]
fn first_not_value(c: &[u8; 16]) -> Option<usize> {
    first_in_words(c, value_mask)
}

#[cfg(not(target_arch = "x86_64"))]
fn first_not_target(c: &[u8; 16]) -> Option<usize> {
    first_in_words(c, target_mask)
}

/// Length of the run of field-value bytes (HTAB, SP, VCHAR, obs-text) at
/// the start of `s`. The block and word scans stop at HTAB too (rare in
/// values) and the run goes on past it.
#[inline]
fn value_run(s: &[u8]) -> usize {
    let mut i = run(s, first_not_value, value_mask, VALUE);
    while s.get(i) == Some(&b'\t') {
        i += 1;
        i += run(&s[i..], first_not_value, value_mask, VALUE);
    }
    i
}

/// Length of the run of request-target bytes at the start of `s`.
#[inline]
fn target_run(s: &[u8]) -> usize {
    run(s, first_not_target, target_mask, TARGET)
}

/// Length of the run of token bytes at the start of `s`: the class table
/// for each byte (tokens are no byte range a word scan could test), in
/// blocks of eight the compiler unrolls without bounds checks.
#[inline]
fn token_run(s: &[u8]) -> usize {
    let mut blocks = s.chunks_exact(8);
    let mut i = 0;
    for block in &mut blocks {
        for (k, &b) in block.iter().enumerate() {
            if !is_token_byte(b) {
                return i + k;
            }
        }
        i += 8;
    }
    i + blocks
        .remainder()
        .iter()
        .position(|&b| !is_token_byte(b))
        .unwrap_or(s.len() - i)
}

/// A parsed request line: `(start, end)` offsets and where the fields begin.
pub(crate) struct RequestLine {
    pub method: (usize, usize),
    pub target: (usize, usize),
    pub version: Version,
    pub end: usize,
}

/// A parsed status line.
pub(crate) struct StatusLine {
    pub version: Version,
    pub code: u16,
    pub reason: (usize, usize),
    pub end: usize,
}

/// Consumes a line end at `pos`: `Some(Ok(next))`, `Some(Err)` for a bad
/// one, `None` if the input ends first.
#[inline]
fn newline(buf: &[u8], pos: usize) -> Option<Result<usize, Error>> {
    match *buf.get(pos)? {
        b'\n' => Some(Ok(pos + 1)),
        b'\r' => match *buf.get(pos + 1)? {
            b'\n' => Some(Ok(pos + 2)),
            _ => Some(Err(Error::NewLine)),
        },
        _ => Some(Err(Error::NewLine)),
    }
}

macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(Status::Partial),
        }
    };
}

fn version(buf: &[u8], pos: usize) -> Result<Status<Version>, Error> {
    let Some(v) = buf.get(pos..pos + 8) else {
        // Refuse early what can no longer become a version.
        let have = &buf[pos.min(buf.len())..];
        return if b"HTTP/1.1".starts_with(have) || b"HTTP/1.0".starts_with(have) {
            Ok(Status::Partial)
        } else {
            Err(Error::Version)
        };
    };
    match v {
        b"HTTP/1.1" => Ok(Status::Complete(Version::Http11)),
        b"HTTP/1.0" => Ok(Status::Complete(Version::Http10)),
        _ => Err(Error::Version),
    }
}

/// Parses `method SP target SP version CRLF`, after any empty lines.
pub(crate) fn parse_request_line(buf: &[u8]) -> Result<Status<RequestLine>, Error> {
    let mut pos = 0;
    // RFC 9112 §2.2: ignore empty lines before the request line.
    loop {
        match need!(buf.get(pos)) {
            b'\r' => {
                if *need!(buf.get(pos + 1)) != b'\n' {
                    return Err(Error::NewLine);
                }
                pos += 2;
            }
            b'\n' => pos += 1,
            _ => break,
        }
        if pos > MAX_HEADER_BYTES {
            return Err(Error::HeadTooLarge);
        }
    }
    let m_start = pos;
    pos += token_run(&buf[pos..]);
    if *need!(buf.get(pos)) != b' ' || pos == m_start {
        return Err(Error::Token);
    }
    let method = (m_start, pos);
    pos += 1;
    let t_start = pos;
    pos += target_run(buf.get(pos..).unwrap_or_default());
    if *need!(buf.get(pos)) != b' ' || pos == t_start {
        return Err(Error::Target);
    }
    let target = (t_start, pos);
    pos += 1;
    let version = match version(buf, pos)? {
        Status::Complete(v) => v,
        Status::Partial => return Ok(Status::Partial),
    };
    pos += 8;
    let end = need!(newline(buf, pos))?;
    Ok(Status::Complete(RequestLine {
        method,
        target,
        version,
        end,
    }))
}

/// Parses `version SP 3DIGIT [SP reason] CRLF`.
pub(crate) fn parse_status_line(buf: &[u8]) -> Result<Status<StatusLine>, Error> {
    let version = match version(buf, 0)? {
        Status::Complete(v) => v,
        Status::Partial => return Ok(Status::Partial),
    };
    if *need!(buf.get(8)) != b' ' {
        return Err(Error::Version);
    }
    let mut code: u16 = 0;
    for i in 9..12 {
        let b = *need!(buf.get(i));
        if !b.is_ascii_digit() {
            return Err(Error::Status);
        }
        code = code * 10 + u16::from(b - b'0');
    }
    let mut pos = 12;
    let reason_start;
    match *need!(buf.get(pos)) {
        b' ' => {
            pos += 1;
            reason_start = pos;
            loop {
                let b = *need!(buf.get(pos));
                if b == b'\r' || b == b'\n' {
                    break;
                }
                if CLASS[b as usize] & VALUE == 0 {
                    return Err(Error::HeaderValue);
                }
                pos += 1;
            }
        }
        b'\r' | b'\n' => reason_start = pos,
        _ => return Err(Error::Status),
    }
    let reason = (reason_start, pos);
    let end = need!(newline(buf, pos))?;
    Ok(Status::Complete(StatusLine {
        version,
        code,
        reason,
        end,
    }))
}

/// Parses fields from `pos` up to and including the empty line, calling
/// `on((name_start, name_len), (value_start, value_len))` for each.
/// `Complete(end)` is the offset just past the empty line.
pub(crate) fn parse_fields(
    buf: &[u8],
    pos: usize,
    on: impl FnMut((usize, usize), (usize, usize)) -> Result<(), Error>,
) -> Result<Status<usize>, Error> {
    let mut at = FieldsAt::new(pos);
    parse_fields_from(buf, &mut at, on)
}

/// Where a field section cut short by the end of its buffer resumes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldsAt {
    /// Start of the first field line not yet reported.
    line: usize,
    /// Inside that line's value: its name, where the value starts, and how
    /// far its bytes were checked.
    value: Option<((usize, usize), usize, usize)>,
}

impl FieldsAt {
    pub(crate) fn new(line: usize) -> Self {
        FieldsAt { line, value: None }
    }
}

/// [`parse_fields`] from `at`, which it moves past each complete field line
/// and, when the input ends inside a value, to where the value's check
/// stopped: the next call with more bytes resumes there instead of at the
/// first field.
fn parse_fields_from(
    buf: &[u8],
    at: &mut FieldsAt,
    mut on: impl FnMut((usize, usize), (usize, usize)) -> Result<(), Error>,
) -> Result<Status<usize>, Error> {
    let mut pos = at.line;
    loop {
        let (name, value_start) = match at.value.take() {
            Some((name, value_start, scanned)) => {
                pos = scanned;
                (name, value_start)
            }
            None => {
                let first = *need!(buf.get(pos));
                if first == b'\r' || first == b'\n' {
                    let end = need!(newline(buf, pos))?;
                    if end > MAX_HEADER_BYTES {
                        return Err(Error::HeadTooLarge);
                    }
                    return Ok(Status::Complete(end));
                }
                let name_start = pos;
                pos += token_run(&buf[pos..]);
                // Anything but a colon after the name covers obs-fold (a
                // line starting with SP/HTAB), a space before the colon,
                // and a line with no colon at all.
                if *need!(buf.get(pos)) != b':' || pos == name_start {
                    return Err(Error::HeaderName);
                }
                let name = (name_start, pos - name_start);
                pos += 1;
                while matches!(*need!(buf.get(pos)), b' ' | b'\t') {
                    pos += 1;
                }
                (name, pos)
            }
        };
        // The hot loop: most head bytes are value bytes.
        pos += value_run(&buf[pos..]);
        let Some(&b) = buf.get(pos) else {
            at.value = Some((name, value_start, pos));
            return Ok(Status::Partial);
        };
        if b != b'\r' && b != b'\n' {
            return Err(Error::HeaderValue);
        }
        let Some(next) = newline(buf, pos) else {
            at.value = Some((name, value_start, pos));
            return Ok(Status::Partial);
        };
        let next = next?;
        let mut value_end = pos;
        while value_end > value_start && matches!(buf[value_end - 1], b' ' | b'\t') {
            value_end -= 1;
        }
        pos = next;
        if pos > MAX_HEADER_BYTES {
            return Err(Error::HeadTooLarge);
        }
        on(name, (value_start, value_end - value_start))?;
        at.line = pos;
    }
}

/// Parses fields from `at` into `spans`, keeping the spans already there
/// (the lines before `at`); `at` moves as [`parse_fields_from`] says.
pub(crate) fn resume_field_spans(
    buf: &[u8],
    at: &mut FieldsAt,
    spans: &mut Vec<FieldSpan>,
) -> Result<Status<usize>, Error> {
    parse_fields_from(buf, at, |name, value| {
        if spans.len() >= MAX_HEADERS {
            return Err(Error::TooManyHeaders);
        }
        spans.push(FieldSpan::new(name, value).ok_or(Error::HeadTooLarge)?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request() {
        let mut h = [EMPTY_HEADER; 8];
        let mut req = Request::new(&mut h);
        let buf = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  */* \r\n\r\nrest";
        assert_eq!(req.parse(buf), Ok(Status::Complete(buf.len() - 4)));
        assert_eq!(req.method, Some("GET"));
        assert_eq!(req.target, Some(&b"/index.html?q=1"[..]));
        assert_eq!(req.version, Some(Version::Http11));
        assert_eq!(req.headers.len(), 2);
        assert_eq!(req.headers[1].name, "Accept");
        assert_eq!(req.headers[1].value, b"*/*");
    }

    #[test]
    fn every_prefix_is_partial() {
        let buf = b"POST /a HTTP/1.0\r\nContent-Length: 3\r\n\r\n";
        for n in 0..buf.len() {
            let mut h = [EMPTY_HEADER; 4];
            let mut req = Request::new(&mut h);
            assert_eq!(req.parse(&buf[..n]), Ok(Status::Partial), "prefix {n}");
        }
        let buf = b"HTTP/1.1 404 Not Found\nServer: x\n\n";
        for n in 0..buf.len() {
            let mut h = [EMPTY_HEADER; 4];
            let mut resp = Response::new(&mut h);
            assert_eq!(resp.parse(&buf[..n]), Ok(Status::Partial), "prefix {n}");
        }
        let mut h = [EMPTY_HEADER; 4];
        let mut resp = Response::new(&mut h);
        assert_eq!(resp.parse(buf), Ok(Status::Complete(buf.len())));
        assert_eq!(resp.code, Some(404));
        assert_eq!(resp.reason, Some(&b"Not Found"[..]));
    }

    #[test]
    fn parses_responses_without_reason() {
        let mut h = [EMPTY_HEADER; 4];
        let mut resp = Response::new(&mut h);
        assert_eq!(
            resp.parse(b"HTTP/1.1 200\r\n\r\n"),
            Ok(Status::Complete(16))
        );
        assert_eq!(resp.reason, Some(&b""[..]));
    }

    #[test]
    fn refuses_malformed_heads() {
        let cases: &[(&[u8], Error)] = &[
            (b"GE(T / HTTP/1.1\r\n\r\n", Error::Token),
            (b"GET  / HTTP/1.1\r\n\r\n", Error::Target),
            (b"GET / HTTP/2.0\r\n\r\n", Error::Version),
            (b"GET / XTTP", Error::Version),
            (b"GET / HTTP/1.1\rX", Error::NewLine),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", Error::HeaderName),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
                Error::HeaderName,
            ),
            (b"GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n", Error::HeaderValue),
            (b"GET / HTTP/1.1\r\n: b\r\n\r\n", Error::HeaderName),
        ];
        for (buf, err) in cases {
            let mut h = [EMPTY_HEADER; 4];
            let mut req = Request::new(&mut h);
            assert_eq!(
                req.parse(buf),
                Err(*err),
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
        let mut h = [EMPTY_HEADER; 4];
        let mut resp = Response::new(&mut h);
        assert_eq!(resp.parse(b"HTTP/1.1 2x0 OK\r\n"), Err(Error::Status));
    }

    #[test]
    fn enforces_limits() {
        let mut h = [EMPTY_HEADER; 1];
        let mut req = Request::new(&mut h);
        assert_eq!(
            req.parse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"),
            Err(Error::TooManyHeaders)
        );
        let mut big = b"GET / HTTP/1.1\r\nA: ".to_vec();
        big.resize(MAX_HEADER_BYTES + 10, b'a');
        let mut h = [EMPTY_HEADER; 1];
        let mut req = Request::new(&mut h);
        assert_eq!(req.parse(&big), Err(Error::HeadTooLarge));
    }

    #[test]
    fn word_scans_agree_with_the_byte_classes() {
        for b in 0..=255u8 {
            // Lanes of both words of a 16-byte step, the 8-byte step and
            // the single bytes after it; bytes above the first bad one
            // (borrows run upwards) must not move the run's end.
            for at in 0..40 {
                let mut s = vec![b'a'; 40];
                s[at] = b;
                if at + 1 < 40 {
                    s[at + 1] = 0x00;
                }
                let v = if CLASS[b as usize] & VALUE != 0 {
                    (at + 1).min(40)
                } else {
                    at
                };
                assert_eq!(value_run(&s), v, "value byte {b:#x} at {at}");
                let k = if is_token_byte(b) {
                    (at + 1).min(40)
                } else {
                    at
                };
                assert_eq!(token_run(&s), k, "token byte {b:#x} at {at}");
                let t = if CLASS[b as usize] & TARGET != 0 {
                    (at + 1).min(40)
                } else {
                    at
                };
                assert_eq!(target_run(&s), t, "target byte {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn block_scans_agree_with_the_word_scans() {
        for b in 0..=255u8 {
            for at in 0..16 {
                let mut c = [b'a'; 16];
                c[at] = b;
                assert_eq!(
                    first_not_value(&c),
                    first_in_words(&c, value_mask),
                    "value byte {b:#x} at {at}"
                );
                assert_eq!(
                    first_not_target(&c),
                    first_in_words(&c, target_mask),
                    "target byte {b:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn skips_leading_empty_lines() {
        let mut h = [EMPTY_HEADER; 1];
        let mut req = Request::new(&mut h);
        assert_eq!(
            req.parse(b"\r\n\nGET / HTTP/1.1\r\n\r\n"),
            Ok(Status::Complete(21))
        );
        assert_eq!(req.method, Some("GET"));
    }
}
