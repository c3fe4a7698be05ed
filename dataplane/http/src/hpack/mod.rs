//! HPACK header compression (RFC 7541), decoding side.
//!
//! - [`huffman`]: the static Huffman code, table-driven.
//! - [`table`]: the static table and the dynamic table with eviction.
//! - [`decoder`]: [`Decoder`], one direction's HPACK state.

pub mod decoder;
pub mod huffman;
pub mod table;

pub use decoder::{BlockState, Decoder, DecoderError, Field, NeedMore};
pub use table::{DEFAULT_TABLE_SIZE, DynamicTable, ENTRY_OVERHEAD, MAX_TABLE_SIZE, STATIC_TABLE};

#[cfg(test)]
mod tests;
