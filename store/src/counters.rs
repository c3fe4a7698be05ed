//! Shared monotonic counters behind [`StoreStats`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::{Drops, StoreStats};

/// Copies of a set of counters that several threads add to. Each thread adds
/// into one stripe (threads take them in turn, [`stripe`]), so threads on
/// different cores do not write the same cache lines: a store's counters are
/// added to by every shard, once or more per object, and one shared set would
/// move its lines between cores on every object. Reads sum the stripes.
pub const STRIPES: usize = 16;

/// The next stripe a thread takes.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

/// This thread's stripe, below [`STRIPES`].
#[inline]
pub fn stripe() -> usize {
    STRIPE.with(|s| *s)
}

/// The atomic twin of [`StoreStats`], striped ([`STRIPES`]): add through
/// [`Counters::here`], read with [`Counters::snapshot`]. Every counter is
/// independent, so `Relaxed` is enough: a snapshot may be a few increments
/// behind, never torn within one counter.
#[derive(Debug, Default)]
pub struct Counters {
    stripes: Box<[Cells; STRIPES]>,
}

/// One stripe of [`Counters`], on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Cells {
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
    /// See [`Drops::shed`].
    Shed,
}

impl Loss {
    const COUNT: usize = 9;
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// This thread's stripe, to add to.
    #[inline]
    pub fn here(&self) -> &Cells {
        &self.stripes[stripe()]
    }

    /// Counts `n` items dropped for `reason`.
    pub fn lose(&self, reason: Loss, n: u64) {
        let here = self.here();
        Self::add(&here.dropped, n);
        Self::add(&here.drops[reason as usize], n);
    }

    /// The current values: the sums over the stripes.
    pub fn snapshot(&self) -> StoreStats {
        let get = |c: &dyn Fn(&Cells) -> &AtomicU64| {
            self.stripes
                .iter()
                .map(|s| c(s).load(Ordering::Relaxed))
                .sum()
        };
        let drop = |reason: Loss| get(&|s| &s.drops[reason as usize]);
        StoreStats {
            accepted: get(&|s| &s.accepted),
            stored: get(&|s| &s.stored),
            deduplicated: get(&|s| &s.deduplicated),
            dropped: get(&|s| &s.dropped),
            errors: get(&|s| &s.errors),
            multipart: get(&|s| &s.multipart),
            bytes: get(&|s| &s.bytes),
            synced_files: get(&|s| &s.synced_files),
            synced_dirs: get(&|s| &s.synced_dirs),
            recovered: get(&|s| &s.recovered),
            waits: get(&|s| &s.waits),
            artifact_records: get(&|s| &s.artifact_records),
            artifact_records_dropped: get(&|s| &s.artifact_records_dropped),
            drops: Drops {
                queue_full: drop(Loss::QueueFull),
                shed: drop(Loss::Shed),
                spool_full: drop(Loss::SpoolFull),
                no_space: drop(Loss::NoSpace),
                write_error: drop(Loss::WriteError),
                refused: drop(Loss::Refused),
                corrupt: drop(Loss::Corrupt),
                unwritten: drop(Loss::Unwritten),
                deadline: drop(Loss::Deadline),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_more_threads_than_stripes_add_up_exactly() {
        let counters = Counters::default();
        let (threads, each) = (2 * STRIPES + 3, 1000u64);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..each {
                        Counters::add(&counters.here().accepted, 1);
                        Counters::add(&counters.here().bytes, 3);
                        counters.lose(Loss::Deadline, 1);
                    }
                });
            }
        });
        let n = threads as u64 * each;
        let s = counters.snapshot();
        assert_eq!((s.accepted, s.bytes, s.dropped), (n, 3 * n, n));
        assert_eq!((s.drops.deadline, s.drops.queue_full), (n, 0));
    }
}
