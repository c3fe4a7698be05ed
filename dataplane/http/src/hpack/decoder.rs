//! Header block decoding (RFC 7541 §3, §5, §6).
//!
//! "The block ended early" ([`DecoderError::NeedMore`]) is kept apart from
//! "the block is invalid", as in h2's `hpack/decoder.rs`: HTTP/2 hands the
//! decoder whole blocks, so for it both are fatal, but a caller feeding a
//! block in pieces can tell them apart.
//!
//! A decoder that joined a connection mid-way does not know the dynamic
//! table's earlier entries. [`Decoder::new_unsynced`] makes one that still
//! tracks every entry inserted since it joined — they are the newest, so
//! their indices are right — and reports fields that refer to older entries
//! as missing instead of guessing; see [`BlockState`].

use std::fmt;

use super::huffman::{self, HuffmanError};
use super::table::{DEFAULT_TABLE_SIZE, DynamicTable, MAX_TABLE_SIZE, STATIC_TABLE};

/// Which part of a representation the block ended inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeedMore {
    /// Inside the first octet of a representation (never: a representation
    /// starts with a whole octet; kept for h2 parity).
    UnexpectedEndOfStream,
    /// Inside a multi-octet integer.
    IntegerUnderflow,
    /// Inside a string's octets.
    StringUnderflow,
}

/// Why a header block cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderError {
    /// The block ended inside a representation.
    NeedMore(NeedMore),
    /// An index is 0 or past the end of the tables.
    InvalidTableIndex,
    /// A Huffman string is invalid.
    InvalidHuffmanCode,
    /// An integer does not fit in 32 bits.
    IntegerOverflow,
    /// A dynamic table size update above [`MAX_TABLE_SIZE`] (or the limit
    /// set with [`Decoder::set_max_size_limit`]).
    InvalidMaxDynamicSize,
    /// A dynamic table size update after the first field of a block
    /// (RFC 7541 §4.2).
    SizeUpdateNotAtStart,
}

impl fmt::Display for DecoderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecoderError::NeedMore(NeedMore::UnexpectedEndOfStream) => "block ended early",
            DecoderError::NeedMore(NeedMore::IntegerUnderflow) => "block ended inside an integer",
            DecoderError::NeedMore(NeedMore::StringUnderflow) => "block ended inside a string",
            DecoderError::InvalidTableIndex => "invalid table index",
            DecoderError::InvalidHuffmanCode => "invalid Huffman code",
            DecoderError::IntegerOverflow => "integer overflow",
            DecoderError::InvalidMaxDynamicSize => "dynamic table size update above the limit",
            DecoderError::SizeUpdateNotAtStart => "dynamic table size update after a field",
        })
    }
}

impl std::error::Error for DecoderError {}

impl From<HuffmanError> for DecoderError {
    fn from(_: HuffmanError) -> Self {
        DecoderError::InvalidHuffmanCode
    }
}

/// One decoded field. Borrowed from the block, the tables or the decoder's
/// scratch buffer; valid during the callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name (lowercase in valid HTTP/2, not checked here).
    pub name: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Sent as "never indexed" (RFC 7541 §6.2.3): a sensitive value.
    pub never_indexed: bool,
}

/// How far a decoded block can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// The table state is known: every field is exact.
    Complete,
    /// Decoded without knowing the table's history (joined mid-way or after
    /// a gap), but every field resolved against entries seen inserted. Right
    /// unless a block was missed since the decoder joined.
    Unverified,
    /// Some fields referred to entries the decoder never saw; they were left
    /// out (`missing` of them).
    Partial {
        /// Fields left out.
        missing: u32,
    },
    /// The block could not be decoded (invalid, or too large to buffer):
    /// only the fields before the failure, if any, are there, and the
    /// decoder's table is forgotten (later blocks are at best `Unverified`).
    Lost,
}

impl BlockState {
    /// Whether the block is known to be exact.
    pub fn is_complete(&self) -> bool {
        matches!(self, BlockState::Complete)
    }
}

/// An HPACK decoder: the dynamic table of one direction of a connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// Huffman-decoded strings, reused.
    scratch: Vec<u8>,
    /// A new entry's name and value, copied before insertion, reused.
    entry: Vec<u8>,
    /// Largest size update accepted.
    max_size_limit: usize,
    /// The table's history is known.
    synced: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a decoded string lives.
#[derive(Clone, Copy)]
enum Str {
    /// `block[start..end]`.
    Block(usize, usize),
    /// `scratch[start..end]`.
    Scratch(usize, usize),
}

/// What a table index refers to.
#[derive(Clone, Copy)]
enum Index {
    /// Static table position (0-based).
    Static(usize),
    /// Dynamic position (0 = newest).
    Dynamic(usize),
    /// An entry the decoder never saw.
    Unknown,
}

/// Where a field's name comes from.
#[derive(Clone, Copy)]
enum Name {
    Indexed(Index),
    Literal(Str),
}

impl Decoder {
    /// A decoder for a connection seen from its start.
    pub fn new() -> Self {
        Decoder {
            table: DynamicTable::new(DEFAULT_TABLE_SIZE),
            scratch: Vec::new(),
            entry: Vec::new(),
            max_size_limit: MAX_TABLE_SIZE,
            synced: true,
        }
    }

    /// A decoder whose table starts at `max_size` bytes instead of
    /// [`DEFAULT_TABLE_SIZE`] (RFC 7541 Appendix C.5 and C.6 assume 256).
    pub fn with_max_size(max_size: usize) -> Self {
        Decoder {
            table: DynamicTable::new(max_size.min(MAX_TABLE_SIZE)),
            ..Self::new()
        }
    }

    /// A decoder for a connection joined mid-way: the table's earlier
    /// entries are unknown, so every block is at best
    /// [`BlockState::Unverified`].
    pub fn new_unsynced() -> Self {
        Decoder {
            synced: false,
            ..Self::new()
        }
    }

    /// Forgets the table after bytes of the connection were lost: later
    /// blocks are decoded as by [`Self::new_unsynced`].
    pub fn desync(&mut self) {
        self.table.clear();
        self.synced = false;
    }

    /// Whether the table's history is known.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Caps size updates at `limit` bytes (the SETTINGS_HEADER_TABLE_SIZE
    /// the other side advertised, when known); at most [`MAX_TABLE_SIZE`].
    pub fn set_max_size_limit(&mut self, limit: usize) {
        self.max_size_limit = limit.min(MAX_TABLE_SIZE);
    }

    /// The dynamic table.
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Decodes one whole header block, calling `on` for each field in
    /// order. On error the fields before it were delivered and the table
    /// holds their insertions; the connection's HPACK state is then lost.
    pub fn decode<F: FnMut(Field<'_>)>(
        &mut self,
        block: &[u8],
        mut on: F,
    ) -> Result<BlockState, DecoderError> {
        let mut pos = 0;
        let mut missing: u32 = 0;
        let mut any_field = false;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed field (§6.1).
                let idx = integer(block, &mut pos, 7)?;
                any_field = true;
                match self.index(idx)? {
                    Index::Static(i) => {
                        let (n, v) = STATIC_TABLE[i];
                        on(Field {
                            name: n.as_bytes(),
                            value: v.as_bytes(),
                            never_indexed: false,
                        });
                    }
                    Index::Dynamic(i) => match self.table.get(i) {
                        Some(e) if !e.unknown_name => on(Field {
                            name: e.name,
                            value: e.value,
                            never_indexed: false,
                        }),
                        _ => missing += 1,
                    },
                    Index::Unknown => missing += 1,
                }
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3).
                if any_field {
                    return Err(DecoderError::SizeUpdateNotAtStart);
                }
                let size = integer(block, &mut pos, 5)?;
                if size > self.max_size_limit {
                    return Err(DecoderError::InvalidMaxDynamicSize);
                }
                self.table.set_max_size(size);
            } else {
                // Literal field (§6.2): with incremental indexing (01),
                // without indexing (0000) or never indexed (0001).
                let (prefix, indexing, never_indexed) = if b & 0xc0 == 0x40 {
                    (6, true, false)
                } else {
                    (4, false, b & 0x10 != 0)
                };
                any_field = true;
                self.scratch.clear();
                let idx = integer(block, &mut pos, prefix)?;
                let name = if idx == 0 {
                    Name::Literal(self.string(block, &mut pos)?)
                } else {
                    Name::Indexed(self.index(idx)?)
                };
                let value = self.string(block, &mut pos)?;
                let name_bytes: Option<&[u8]> = match name {
                    Name::Indexed(Index::Static(i)) => Some(STATIC_TABLE[i].0.as_bytes()),
                    Name::Indexed(Index::Dynamic(i)) => match self.table.get(i) {
                        Some(e) if !e.unknown_name => Some(e.name),
                        _ => None,
                    },
                    Name::Indexed(Index::Unknown) => None,
                    Name::Literal(s) => Some(resolve(s, block, &self.scratch)),
                };
                let value_bytes = resolve(value, block, &self.scratch);
                match name_bytes {
                    Some(n) => on(Field {
                        name: n,
                        value: value_bytes,
                        never_indexed,
                    }),
                    None => missing += 1,
                }
                if indexing {
                    // Copy before inserting: the name may be in the table.
                    self.entry.clear();
                    let known = name_bytes.is_some();
                    let name_len = name_bytes.map_or(0, <[u8]>::len);
                    if let Some(n) = name_bytes {
                        self.entry.extend_from_slice(n);
                    }
                    self.entry.extend_from_slice(value_bytes);
                    let (n, v) = self.entry.split_at(name_len);
                    self.table.insert(n, v, !known);
                }
            }
        }
        Ok(if self.synced {
            BlockState::Complete
        } else if missing > 0 {
            BlockState::Partial { missing }
        } else {
            BlockState::Unverified
        })
    }

    /// Resolves a 1-based index to the static or dynamic table.
    fn index(&self, idx: usize) -> Result<Index, DecoderError> {
        match idx {
            0 => Err(DecoderError::InvalidTableIndex),
            1..=61 => Ok(Index::Static(idx - 1)),
            _ => {
                let i = idx - 62;
                if i < self.table.len() {
                    Ok(Index::Dynamic(i))
                } else if self.synced {
                    Err(DecoderError::InvalidTableIndex)
                } else {
                    Ok(Index::Unknown)
                }
            }
        }
    }

    /// Reads a string literal (§5.2) at `pos`.
    fn string(&mut self, block: &[u8], pos: &mut usize) -> Result<Str, DecoderError> {
        let huff = block
            .get(*pos)
            .ok_or(DecoderError::NeedMore(NeedMore::StringUnderflow))?
            & 0x80
            != 0;
        let len = integer(block, pos, 7)?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= block.len())
            .ok_or(DecoderError::NeedMore(NeedMore::StringUnderflow))?;
        let raw = (*pos, end);
        *pos = end;
        if huff {
            let start = self.scratch.len();
            huffman::decode(&block[raw.0..raw.1], &mut self.scratch)?;
            Ok(Str::Scratch(start, self.scratch.len()))
        } else {
            Ok(Str::Block(raw.0, raw.1))
        }
    }
}

fn resolve<'a>(s: Str, block: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
    match s {
        Str::Block(a, b) => block.get(a..b).unwrap_or_default(),
        Str::Scratch(a, b) => scratch.get(a..b).unwrap_or_default(),
    }
}

/// Largest integer accepted: representations carry table indices, sizes
/// and string lengths, none of which need more than 32 bits.
const MAX_INTEGER: u64 = u32::MAX as u64;

/// Decodes an integer with an N-bit prefix (§5.1) at `pos`.
pub fn integer(block: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<usize, DecoderError> {
    let mask: u8 = ((1u16 << prefix_bits) - 1) as u8;
    let first = *block
        .get(*pos)
        .ok_or(DecoderError::NeedMore(NeedMore::UnexpectedEndOfStream))?;
    let mut p = *pos + 1;
    let mut value = u64::from(first & mask);
    if value == u64::from(mask) {
        let mut shift = 0u32;
        loop {
            let b = *block
                .get(p)
                .ok_or(DecoderError::NeedMore(NeedMore::IntegerUnderflow))?;
            p += 1;
            if shift > 28 {
                return Err(DecoderError::IntegerOverflow);
            }
            value += u64::from(b & 0x7f) << shift;
            if value > MAX_INTEGER {
                return Err(DecoderError::IntegerOverflow);
            }
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
    }
    *pos = p;
    usize::try_from(value).map_err(|_| DecoderError::IntegerOverflow)
}
