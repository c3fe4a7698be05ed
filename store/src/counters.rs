//! Shared monotonic counters behind [`StoreStats`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreStats;

/// The atomic twin of [`StoreStats`]. Every counter is independent, so `Relaxed`
/// is enough: a snapshot may be a few increments behind, never torn within one
/// counter.
#[derive(Debug, Default)]
pub struct Counters {
    /// See [`StoreStats::accepted`].
    pub accepted: AtomicU64,
    /// See [`StoreStats::stored`].
    pub stored: AtomicU64,
    /// See [`StoreStats::deduplicated`].
    pub deduplicated: AtomicU64,
    /// See [`StoreStats::dropped`].
    pub dropped: AtomicU64,
    /// See [`StoreStats::errors`].
    pub errors: AtomicU64,
    /// See [`StoreStats::multipart`].
    pub multipart: AtomicU64,
    /// See [`StoreStats::bytes`].
    pub bytes: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> StoreStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            accepted: get(&self.accepted),
            stored: get(&self.stored),
            deduplicated: get(&self.deduplicated),
            dropped: get(&self.dropped),
            errors: get(&self.errors),
            multipart: get(&self.multipart),
            bytes: get(&self.bytes),
        }
    }
}
