//! Message body framing (RFC 9112 §6): how long a body is, and the chunked
//! transfer coding (§7.1) decoded as a stream.

use super::head::{Error, Method};
use crate::{Headers, name_eq};

/// Longest chunk extension skipped on one chunk-size line, in bytes.
///
/// Extensions are almost never sent; hyper caps them at 16 KiB per message.
/// They are skipped byte by byte without buffering, so this bounds only how
/// long a malformed line is tolerated.
pub const MAX_CHUNK_EXT_BYTES: usize = 4 * 1024;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without Content-Length or Transfer-Encoding, a
    /// response to HEAD, 1xx/204/304, or a 2xx to CONNECT).
    None,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// The chunked transfer coding, possibly with trailers.
    Chunked,
    /// Everything until the connection closes (a response with neither).
    CloseDelimited,
}

/// What the framing fields of a head say.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FramingFields {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_last: bool,
    /// An `Upgrade` field is present.
    pub upgrade: bool,
}

impl FramingFields {
    /// Reads Content-Length, Transfer-Encoding and Upgrade.
    pub fn read(headers: Headers<'_>) -> Result<Self, Error> {
        let mut f = FramingFields::default();
        for (name, value) in headers {
            if name_eq(name, b"content-length") {
                // A list of identical values is allowed (RFC 9110 §8.6).
                for part in value.split(|&b| b == b',') {
                    let n = parse_decimal(trim(part)).ok_or(Error::ContentLength)?;
                    match f.content_length {
                        Some(old) if old != n => return Err(Error::ContentLength),
                        _ => f.content_length = Some(n),
                    }
                }
            } else if name_eq(name, b"transfer-encoding") {
                for coding in value.split(|&b| b == b',') {
                    let coding = trim(coding);
                    if coding.is_empty() {
                        continue;
                    }
                    f.transfer_encoding = true;
                    f.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            } else if name_eq(name, b"upgrade") {
                f.upgrade = true;
            }
        }
        Ok(f)
    }

    /// A request's framing (RFC 9112 §6.3 rules 4–7).
    pub fn request(&self) -> Result<Framing, Error> {
        if self.transfer_encoding {
            return if self.chunked_last {
                Ok(Framing::Chunked)
            } else {
                Err(Error::TransferEncoding)
            };
        }
        Ok(match self.content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        })
    }

    /// A final response's framing given the request's method (§6.3 rules
    /// 1–3, 4, 6, 8).
    pub fn response(&self, status: u16, method: Method) -> Framing {
        if method == Method::Head
            || (100..200).contains(&status)
            || status == 204
            || status == 304
            || (method == Method::Connect && (200..300).contains(&status))
        {
            return Framing::None;
        }
        if self.transfer_encoding {
            return if self.chunked_last {
                Framing::Chunked
            } else {
                Framing::CloseDelimited
            };
        }
        match self.content_length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::CloseDelimited,
        }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Where a [`ChunkedDecoder`] is inside the coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size (`any` = at least one seen).
    Size { any: bool },
    /// Whitespace after the size (BWS before `;`).
    SizeWs,
    /// Inside chunk extensions, until the line end.
    Ext,
    /// Saw CR at the end of the size line.
    SizeLf,
    /// In chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CR (or LF) after chunk data.
    DataCr,
    /// Saw CR after chunk data.
    DataLf,
    /// The last chunk's size line was read; the trailer section follows.
    Done,
}

/// What one [`ChunkedDecoder::decode`] call produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked<'a> {
    /// Chunk data, borrowed from the input.
    Data(&'a [u8]),
    /// The input was used up inside framing bytes; feed more.
    NeedMore,
    /// The last chunk (`0`) was read: a trailer section (possibly empty)
    /// and an empty line follow.
    Last,
}

/// A streaming decoder for the chunked coding up to the last chunk; the
/// trailer section after it is a field section, parsed by the caller.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    ext_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { any: false },
            size: 0,
            ext_len: 0,
        }
    }

    /// Decodes from `buf`; returns how many bytes were consumed and what
    /// they made. Call again with the rest until `NeedMore` or `Last`.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<(usize, Chunked<'a>), Error> {
        let mut pos = 0;
        while pos < buf.len() {
            let b = buf[pos];
            match self.state {
                ChunkState::Size { any } => {
                    let digit = match b {
                        b'0'..=b'9' => Some(b - b'0'),
                        b'a'..=b'f' => Some(b - b'a' + 10),
                        b'A'..=b'F' => Some(b - b'A' + 10),
                        _ => None,
                    };
                    if let Some(d) = digit {
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or(Error::ChunkSize)?;
                        self.state = ChunkState::Size { any: true };
                    } else if !any {
                        return Err(Error::ChunkSize);
                    } else {
                        self.state = ChunkState::SizeWs;
                        continue;
                    }
                }
                ChunkState::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => {
                        self.ext_len = 0;
                        self.state = ChunkState::Ext;
                    }
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => {
                        pos += 1;
                        if let Some(out) = self.size_line_done() {
                            return Ok((pos, out));
                        }
                        continue;
                    }
                    _ => return Err(Error::ChunkSize),
                },
                ChunkState::Ext => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => {
                        pos += 1;
                        if let Some(out) = self.size_line_done() {
                            return Ok((pos, out));
                        }
                        continue;
                    }
                    // Extensions are token/quoted-string text; a control
                    // byte means this is not a size line.
                    0..=0x08 | 0x0a..=0x1f | 0x7f => return Err(Error::ChunkSize),
                    _ => {
                        self.ext_len += 1;
                        if self.ext_len > MAX_CHUNK_EXT_BYTES {
                            return Err(Error::ChunkSize);
                        }
                    }
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(Error::ChunkSize);
                    }
                    pos += 1;
                    if let Some(out) = self.size_line_done() {
                        return Ok((pos, out));
                    }
                    continue;
                }
                ChunkState::Data(left) => {
                    let avail = buf.len() - pos;
                    let take = usize::try_from(left).map_or(avail, |l| l.min(avail));
                    let rest = left - take as u64;
                    self.state = if rest == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(rest)
                    };
                    return Ok((pos + take, Chunked::Data(&buf[pos..pos + take])));
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.next_chunk(),
                    _ => return Err(Error::ChunkData),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(Error::ChunkData);
                    }
                    self.next_chunk();
                }
                ChunkState::Done => return Ok((pos, Chunked::Last)),
            }
            pos += 1;
        }
        if self.state == ChunkState::Done {
            return Ok((pos, Chunked::Last));
        }
        Ok((pos, Chunked::NeedMore))
    }

    /// Bytes of chunk data still expected in the current chunk, if inside
    /// one: what a gap of lost bytes can be charged to.
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            ChunkState::Data(n) => Some(n),
            _ => None,
        }
    }

    /// Accounts for `n` lost bytes inside the current chunk's data.
    pub(crate) fn skip_data(&mut self, n: u64) -> bool {
        match self.state {
            ChunkState::Data(left) if n <= left => {
                self.state = if left == n {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data(left - n)
                };
                true
            }
            _ => false,
        }
    }

    fn size_line_done(&mut self) -> Option<Chunked<'static>> {
        if self.size == 0 {
            self.state = ChunkState::Done;
            Some(Chunked::Last)
        } else {
            self.state = ChunkState::Data(self.size);
            None
        }
    }

    fn next_chunk(&mut self) {
        self.size = 0;
        self.state = ChunkState::Size { any: false };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), Error> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut fed = 0;
        while fed < input.len() {
            let end = (fed + step).min(input.len());
            let mut piece = &input[fed..end];
            loop {
                let (n, c) = d.decode(piece)?;
                piece = &piece[n..];
                fed += n;
                match c {
                    Chunked::Data(d) => out.extend_from_slice(d),
                    Chunked::NeedMore => break,
                    Chunked::Last => return Ok((out, fed)),
                }
            }
        }
        Err(Error::UnexpectedEof)
    }

    #[test]
    fn decodes_chunks_with_extensions() {
        let body = b"5;name=val;q=\"x\"\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: 1\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            let (out, used) = decode_all(body, step).expect("valid");
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz");
            assert_eq!(&body[used..], b"T: 1\r\n\r\n");
        }
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(decode_all(b"x\r\n", 1), Err(Error::ChunkSize));
        assert_eq!(
            decode_all(b"fffffffffffffffff\r\n", 1),
            Err(Error::ChunkSize)
        );
        assert_eq!(decode_all(b"1\r\nab\r\n", 1), Err(Error::ChunkData));
    }

    #[test]
    fn framing_rules() {
        let f = FramingFields::default();
        assert_eq!(f.response(200, Method::Get), Framing::CloseDelimited);
        assert_eq!(f.response(204, Method::Get), Framing::None);
        assert_eq!(f.response(304, Method::Get), Framing::None);
        assert_eq!(f.response(200, Method::Head), Framing::None);
        assert_eq!(f.response(200, Method::Connect), Framing::None);
        assert_eq!(f.request(), Ok(Framing::None));
        let spans = [];
        let _ = FramingFields::read(Headers::new(b"", &spans));
    }
}
