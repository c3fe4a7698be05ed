//! HTTP parsers for tapwire: pure functions over byte slices, no I/O.
//!
//! - [`http1`]: HTTP/1.1 (RFC 9112) heads in httparse's shape, body framing
//!   (Content-Length, chunked with trailers, close-delimited) and a streaming
//!   per-direction decoder ([`http1::Decoder`]) plus a per-connection pairing of
//!   the two directions ([`http1::Connection`]).
//! - [`hpack`]: HPACK (RFC 7541) with the dynamic table and Huffman decoding.
//! - [`h2`]: HTTP/2 (RFC 9113) frames and a per-direction decoder that turns a
//!   byte stream into per-stream events, including when joined mid-connection.
//! - [`tls_hello`]: the server name (SNI) of a TLS ClientHello, the one part
//!   of a TLS connection tapwire reads from the socket bytes.
//!
//! Nothing here allocates per byte: the decoders own a few buffers that are
//! reused from message to message and bounded by named limits. Bodies are never
//! buffered; they come out as slices of the input. No input makes a parser
//! panic; the fuzz targets in `fuzz/` check that.

pub mod h2;
mod headers;
pub mod hpack;
pub mod http1;
pub mod tls_hello;

pub use headers::{FieldSpan, Headers, HeadersIter, name_eq};

/// Capacity a decoder's reusable buffer keeps between messages, in bytes.
///
/// Buffers grow to the largest head or header block seen (up to the named
/// limits, 64–256 KiB) and are reused; one that grew past this is released
/// after use, so thousands of idle connections do not each hold the peak.
pub const RETAINED_BUFFER_BYTES: usize = 16 * 1024;

/// Releases `buf` if it grew past [`RETAINED_BUFFER_BYTES`]; else clears it.
pub(crate) fn recycle<T>(buf: &mut Vec<T>) {
    if buf.capacity() * size_of::<T>() > RETAINED_BUFFER_BYTES {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// Which direction of a connection bytes or events belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: requests.
    Request,
    /// Server to client: responses.
    Response,
}

/// The outcome of a parse that may need more input.
///
/// `Partial` is not an error: the input ended before the item did; call again
/// with more bytes (the same prefix plus what came next).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The item was complete; `T` is usually how many bytes it took.
    Complete(T),
    /// The input ended inside the item.
    Partial,
}

impl<T> Status<T> {
    /// Whether the item was complete.
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// The complete value, if any.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(t) => Some(t),
            Status::Partial => None,
        }
    }
}

/// What the first bytes of a connection's client-to-server stream look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The HTTP/2 connection preface (RFC 9113 §3.4), or a prefix of it.
    Http2,
    /// A plausible HTTP/1 request line start: a method token and a space.
    Http1,
    /// Not enough bytes to tell (no space yet within a method-sized prefix).
    Unknown,
    /// Neither.
    Other,
}

/// Longest method token [`detect`] waits for before giving up (`UNSUBSCRIBE`
/// is 11 bytes; extension methods are rarely longer).
const MAX_DETECT_METHOD_LEN: usize = 24;

/// Guesses the protocol of a client-to-server stream from its first bytes.
pub fn detect(client_bytes: &[u8]) -> Protocol {
    let preface = h2::PREFACE;
    let n = client_bytes.len().min(preface.len());
    if n > 0 && client_bytes[..n] == preface[..n] {
        return if n == preface.len() || client_bytes.len() < preface.len() {
            // A prefix of "PRI * ..." is also a valid HTTP/1 start, but no
            // HTTP/1 client sends the method PRI.
            Protocol::Http2
        } else {
            Protocol::Other
        };
    }
    for (i, &b) in client_bytes.iter().enumerate().take(MAX_DETECT_METHOD_LEN) {
        if b == b' ' {
            return if i > 0 {
                Protocol::Http1
            } else {
                Protocol::Other
            };
        }
        if !http1::is_token_byte(b) {
            return Protocol::Other;
        }
    }
    if client_bytes.len() < MAX_DETECT_METHOD_LEN {
        Protocol::Unknown
    } else {
        Protocol::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_protocols() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(detect(h2::PREFACE), Protocol::Http2);
        assert_eq!(detect(b"PRI * HT"), Protocol::Http2);
        assert_eq!(detect(b"GE"), Protocol::Unknown);
        assert_eq!(detect(b"\x16\x03\x01"), Protocol::Other);
        assert_eq!(detect(b""), Protocol::Unknown);
    }
}
