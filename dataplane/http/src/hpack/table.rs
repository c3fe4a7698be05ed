//! The static and dynamic tables (RFC 7541 §2.3, §4, Appendix A).

use std::collections::VecDeque;

/// Bytes each entry counts beyond its name and value (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// Dynamic table size a connection starts with: the initial value of
/// SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Largest dynamic table size update accepted, in bytes.
///
/// A peer may advertise any SETTINGS_HEADER_TABLE_SIZE up to 2^32-1, but
/// common servers and clients use 4 KiB to 64 KiB. An observer does not see
/// both directions' settings in one place, so it accepts any update up to
/// this bound, which caps the memory one connection's table can hold.
pub const MAX_TABLE_SIZE: usize = 1024 * 1024;

/// Entries of the static table, index 1 first (RFC 7541 Appendix A).
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// One dynamic entry: where its bytes are in [`DynamicTable::data`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    offset: usize,
    name_len: usize,
    value_len: usize,
    /// Inserted while the decoder did not know the name (joined
    /// mid-connection and the name referred to an entry never seen).
    unknown_name: bool,
}

/// The dynamic table: entries newest first, their bytes in one buffer that
/// is compacted now and then, so inserting does not allocate once the
/// buffer has grown to the table's working size.
#[derive(Debug)]
pub struct DynamicTable {
    /// Entry bytes; bytes before `start` belong to evicted entries.
    data: Vec<u8>,
    start: usize,
    /// Newest first.
    entries: VecDeque<Entry>,
    /// Sum of entry sizes (name + value + 32).
    size: usize,
    max_size: usize,
}

impl Default for DynamicTable {
    fn default() -> Self {
        Self::new(DEFAULT_TABLE_SIZE)
    }
}

/// A dynamic entry as returned by [`DynamicTable::get`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Name bytes (empty if `unknown_name`).
    pub name: &'a [u8],
    /// Value bytes.
    pub value: &'a [u8],
    /// The name was never known (see [`super::Decoder::new_unsynced`]).
    pub unknown_name: bool,
}

impl DynamicTable {
    /// An empty table with a maximum size in bytes.
    pub fn new(max_size: usize) -> Self {
        DynamicTable {
            data: Vec::new(),
            start: 0,
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// Current size (RFC 7541 §4.1).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Current maximum size.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at 0-based position `i`, newest first (HPACK index 62 is
    /// position 0).
    pub fn get(&self, i: usize) -> Option<EntryRef<'_>> {
        let e = self.entries.get(i)?;
        let name_end = e.offset.checked_add(e.name_len)?;
        let value_end = name_end.checked_add(e.value_len)?;
        Some(EntryRef {
            name: self.data.get(e.offset..name_end)?,
            value: self.data.get(name_end..value_end)?,
            unknown_name: e.unknown_name,
        })
    }

    /// Applies a dynamic table size update (RFC 7541 §4.3).
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.data.clear();
        self.start = 0;
        self.size = 0;
    }

    /// Adds an entry, evicting old ones (RFC 7541 §4.4). An entry larger
    /// than the maximum size empties the table and is not added.
    pub fn insert(&mut self, name: &[u8], value: &[u8], unknown_name: bool) {
        let entry_size = name.len() + value.len() + ENTRY_OVERHEAD;
        if entry_size > self.max_size {
            self.clear();
            return;
        }
        self.evict_to(self.max_size - entry_size);
        if self.start > 0 && self.start >= self.data.len() / 2 {
            self.data.drain(..self.start);
            for e in &mut self.entries {
                e.offset -= self.start;
            }
            self.start = 0;
        }
        let offset = self.data.len();
        self.data.extend_from_slice(name);
        self.data.extend_from_slice(value);
        self.entries.push_front(Entry {
            offset,
            name_len: name.len(),
            value_len: value.len(),
            unknown_name,
        });
        self.size += entry_size;
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.name_len + e.value_len + ENTRY_OVERHEAD;
            self.start = e.offset + e.name_len + e.value_len;
        }
        if self.entries.is_empty() {
            self.data.clear();
            self.start = 0;
            self.size = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first() {
        let mut t = DynamicTable::new(100);
        t.insert(b"aaaa", b"1111", false); // 40
        t.insert(b"bbbb", b"2222", false); // 80
        t.insert(b"cccc", b"3333", false); // 120 > 100: evicts "aaaa"
        assert_eq!(t.len(), 2);
        assert_eq!(t.size(), 80);
        assert_eq!(t.get(0).map(|e| e.name), Some(&b"cccc"[..]));
        assert_eq!(t.get(1).map(|e| e.value), Some(&b"2222"[..]));
        t.set_max_size(40);
        assert_eq!(t.len(), 1);
        t.insert(&[b'x'; 100], b"", false);
        assert!(t.is_empty());
        for i in 0..1000u32 {
            t.set_max_size(4096);
            t.insert(format!("n{i}").as_bytes(), &[b'v'; 200], false);
            assert_eq!(t.get(0).map(|e| e.name), Some(format!("n{i}").as_bytes()));
        }
        assert!(t.data.len() <= 2 * 4096);
    }
}
