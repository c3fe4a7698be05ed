//! Stores that count what they are given and keep nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tapwire_store::{EventStore, Object, ObjectStore, StoreStats, Ticket};

/// Counts items and bytes.
#[derive(Default)]
pub struct Counting {
    items: AtomicU64,
    bytes: AtomicU64,
}

impl Counting {
    fn add(&self, bytes: usize) {
        self.add_many(1, bytes);
    }

    fn add_many(&self, items: u64, bytes: usize) {
        self.items.fetch_add(items, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Items so far.
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl EventStore for Counting {
    fn id(&self) -> &str {
        "count-events"
    }
    fn emit(&self, event: Bytes) {
        self.add(event.len());
    }
    /// A block taken whole, as the stdout store takes it: its events
    /// counted, their bytes without the newlines.
    fn emit_lines(&self, lines: Bytes, count: u64) {
        self.add_many(count, lines.len().saturating_sub(count as usize));
    }
    fn stats(&self) -> StoreStats {
        StoreStats {
            accepted: self.items(),
            stored: self.items(),
            bytes: self.bytes(),
            ..StoreStats::default()
        }
    }
    fn shutdown(&self, _deadline: Duration) {}
}

impl ObjectStore for Counting {
    fn id(&self) -> &str {
        "count-objects"
    }
    fn put_with(&self, object: Object, ticket: Ticket) {
        self.add(object.bytes.len());
        ticket.kept();
    }
    fn access_url(&self) -> Option<&tapwire_store::s3::AccessUrl> {
        None
    }
    fn stats(&self) -> StoreStats {
        EventStore::stats(self)
    }
    fn shutdown(&self, _deadline: Duration) {}
}
