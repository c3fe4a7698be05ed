//! HTTP/1.1 (RFC 9112).
//!
//! - [`head`]: start lines and header fields, httparse-style
//!   ([`Request::parse`], [`Response::parse`]).
//! - [`body`]: body framing and the chunked coding.
//! - [`stream`]: [`Decoder`], one direction of a connection as events.
//! - [`conn`]: [`Connection`], both directions paired.

pub mod body;
pub mod conn;
pub mod head;
pub mod stream;

pub use body::{ChunkedDecoder, Framing, MAX_CHUNK_EXT_BYTES};
pub use conn::{ConnError, Connection, Direction};
pub use head::{
    EMPTY_HEADER, Error, Header, MAX_HEADER_BYTES, MAX_HEADERS, Method, Request, Response, Version,
    is_token_byte,
};
pub use stream::{Decoder, Event, Kind, MAX_PIPELINED_REQUESTS, RequestHead, ResponseHead};

#[cfg(test)]
mod tests;
