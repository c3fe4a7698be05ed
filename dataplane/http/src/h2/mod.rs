//! HTTP/2 (RFC 9113), decoding side.
//!
//! - [`frame`]: frame headers and payloads.
//! - [`conn`]: [`Decoder`], one direction of a connection as per-stream
//!   events, from the start or joined mid-way.
//! - [`pair`]: [`Connection`], both directions.
//! - [`grpc`]: recognising gRPC.

pub mod conn;
pub mod frame;
pub mod grpc;
pub mod pair;

pub use conn::{
    Decoder, Event, HeaderBlock, MAX_BUFFERED_FRAME_BYTES, MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_LIST_BYTES, RESYNC_WINDOW_BYTES, Side, Stats,
};
pub use frame::{
    DEFAULT_MAX_FRAME_SIZE, Error, FRAME_HEADER_LEN, Frame, FrameHeader, FrameType, PREFACE,
    Priority, Settings, parse_frame, parse_payload,
};
pub use grpc::{grpc_status, is_grpc, is_grpc_content_type};
pub use pair::{ConnError, Connection};

#[cfg(test)]
mod tests;
