//! Shared monotonic counters behind [`StoreStats`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Drops, StoreStats};

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
    /// See [`StoreStats::synced_files`].
    pub synced_files: AtomicU64,
    /// See [`StoreStats::synced_dirs`].
    pub synced_dirs: AtomicU64,
    /// See [`StoreStats::recovered`].
    pub recovered: AtomicU64,
    /// See [`StoreStats::waits`].
    pub waits: AtomicU64,
    /// See [`StoreStats::artifact_records`].
    pub artifact_records: AtomicU64,
    /// See [`StoreStats::artifact_records_dropped`].
    pub artifact_records_dropped: AtomicU64,
    /// Drops by reason, in [`Drop`]'s order.
    drops: [AtomicU64; Loss::COUNT],
}

/// Why an item was dropped: one counter each in [`Drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// See [`Drops::queue_full`].
    QueueFull,
    /// See [`Drops::spool_full`].
    SpoolFull,
    /// See [`Drops::no_space`].
    NoSpace,
    /// See [`Drops::write_error`].
    WriteError,
    /// See [`Drops::refused`].
    Refused,
    /// See [`Drops::corrupt`].
    Corrupt,
    /// See [`Drops::unwritten`].
    Unwritten,
    /// See [`Drops::deadline`].
    Deadline,
}

impl Loss {
    const COUNT: usize = 8;
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` items dropped for `reason`.
    pub fn lose(&self, reason: Loss, n: u64) {
        Self::add(&self.dropped, n);
        Self::add(&self.drops[reason as usize], n);
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
            synced_files: get(&self.synced_files),
            synced_dirs: get(&self.synced_dirs),
            recovered: get(&self.recovered),
            waits: get(&self.waits),
            artifact_records: get(&self.artifact_records),
            artifact_records_dropped: get(&self.artifact_records_dropped),
            drops: Drops {
                queue_full: get(&self.drops[Loss::QueueFull as usize]),
                spool_full: get(&self.drops[Loss::SpoolFull as usize]),
                no_space: get(&self.drops[Loss::NoSpace as usize]),
                write_error: get(&self.drops[Loss::WriteError as usize]),
                refused: get(&self.drops[Loss::Refused as usize]),
                corrupt: get(&self.drops[Loss::Corrupt as usize]),
                unwritten: get(&self.drops[Loss::Unwritten as usize]),
                deadline: get(&self.drops[Loss::Deadline as usize]),
            },
        }
    }
}
