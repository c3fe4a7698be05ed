//! One memory budget, in bytes, for everything the pipeline buffers.
//!
//! The budget is split once at start: a fixed share for the reader → shard frame
//! queues (allocated up front, so their total holds at any CPU count), the rest for
//! what grows with traffic — bodies being assembled and records held in reorder
//! windows — which is charged against one shared counter as it is buffered and
//! released when it leaves. When a body chunk does not fit, it is shed (counted,
//! the transaction marked `truncated`); headers and the other metadata are never
//! refused, so a user keeps every request's method, path and status.
//!
//! Bodies by themselves may not take the last share of the buffered bytes
//! ([`HELD_RESERVE_SHARE`]): records held in reorder windows carry heads
//! too, and a budget spent by bodies alone (uploads never answered hold
//! theirs until their connection ends) must not make every other
//! connection's out-of-order record a hole given up at once. Bodies are shed
//! first, metadata last. Held records do not also cut what bodies may take:
//! both count in the one total, and bodies alone stop at their share.
//!
//! Events a shard holds until their objects are kept count in the bodies'
//! share too, but are never refused (an event is metadata; the hold has its
//! own bound, `pipeline::output`): a full hold leaves bodies that much less
//! room, so they are shed sooner.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The budget when none is configured: room for bursts of large bodies on a
/// busy node. Spent whole, it comes on top of the agent's idle size (about
/// 60 MiB) and the kernel rings mapped into it (16 MiB per CPU). With an
/// S3 store whose bucket is slower than capture, on two CPUs, the peak was
/// 178.5–191.1 MiB in five rounds (perf/results/2026-12-04-vm-five-rounds.md).
pub const DEFAULT_MEMORY_BUDGET: usize = 128 << 20;
/// The smallest budget accepted: the frame queues' floor plus a few bodies.
pub const MIN_MEMORY_BUDGET: usize = 8 << 20;
/// Share of the budget given to the frame queues (1/4).
const FRAME_QUEUE_SHARE: usize = 4;
/// Bytes of one (reader, shard) frame queue at most: more only delays
/// backpressure without smoothing anything a shard's brief stall needs.
pub const MAX_FRAME_QUEUE_BYTES: usize = 4 << 20;
/// Bytes of one frame queue at least: four full-size records
/// ([`tapwire_common::MAX_PAYLOAD`] plus its header).
pub const MIN_FRAME_QUEUE_BYTES: usize = 64 << 10;

/// How the budget is split, given the thread counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Shard threads: the requested count, lowered when the frame queues of that
    /// many shards would not fit their share at [`MIN_FRAME_QUEUE_BYTES`] each.
    pub shards: usize,
    /// Bytes of each (reader, shard) frame queue.
    pub frame_queue_bytes: usize,
    /// Bytes for bodies and reorder windows, shared by every shard.
    pub buffered_bytes: usize,
}

/// Share of the buffered bytes a store's in-memory queue may hold (1/8): a
/// slow store then pushes back on the shards well before bodies being
/// assembled run out of budget and are shed. A quarter held twice as many
/// bodies waiting for a spool on a slow disk, and as many again behind them
/// in the shards, and let a burst of announcements that a bucket's catching
/// up releases at once take as much in the stdout writer's queue, for no
/// more throughput (perf/results/2026-12-03-vm-store-memory.md).
const STORE_QUEUE_SHARE: usize = 8;
/// A store's queue at least, however small the budget.
const MIN_STORE_QUEUE_BYTES: usize = 4 << 20;
/// A store's queue at most: more only delays backpressure.
const MAX_STORE_QUEUE_BYTES: usize = 64 << 20;
/// Share of the buffered bytes an S3 store's index of the objects waiting in
/// its spool may take (1/4): 183,500 objects with the default budget on two
/// CPUs, within 4–64 MiB.
const STORE_INDEX_SHARE: usize = 4;
/// Share of the buffered bytes an S3 store's announcements waiting in memory
/// for uploads may take (1/16): 26,214 with the default budget on two CPUs
/// (7 MiB); past them announcements wait on disk.
const STORE_NOTICE_SHARE: usize = 16;

impl Plan {
    /// Payload bytes each store's in-memory queue may hold (see
    /// `tapwire_store::room`).
    pub fn store_queue_bytes(&self) -> u64 {
        self.store_share(STORE_QUEUE_SHARE)
    }

    /// Memory an S3 store's index of the objects waiting in its spool may
    /// take.
    pub fn store_index_bytes(&self) -> u64 {
        self.store_share(STORE_INDEX_SHARE)
    }

    /// `1/share` of the buffered bytes, within 4–64 MiB.
    fn store_share(&self, share: usize) -> u64 {
        (self.buffered_bytes / share).clamp(MIN_STORE_QUEUE_BYTES, MAX_STORE_QUEUE_BYTES) as u64
    }

    /// Memory an S3 store's announcements waiting for uploads may take.
    pub fn store_notice_bytes(&self) -> u64 {
        (self.buffered_bytes / STORE_NOTICE_SHARE) as u64
    }

    /// Splits `budget` for `readers` readers and up to `shards` shards.
    pub fn new(budget: usize, readers: usize, shards: usize) -> Plan {
        let budget = budget.max(MIN_MEMORY_BUDGET);
        let readers = readers.max(1);
        let queue_share = budget / FRAME_QUEUE_SHARE;
        let fitting = queue_share / (readers * MIN_FRAME_QUEUE_BYTES);
        let shards = shards.clamp(1, fitting.max(1));
        let frame_queue_bytes =
            (queue_share / (readers * shards)).clamp(MIN_FRAME_QUEUE_BYTES, MAX_FRAME_QUEUE_BYTES);
        Plan {
            shards,
            frame_queue_bytes,
            buffered_bytes: budget
                .saturating_sub(frame_queue_bytes * readers * shards)
                .max(budget / 2),
        }
    }
}

/// Share of the buffered bytes that only records held in reorder windows may
/// take (1/8): bodies by themselves stop short of it.
pub const HELD_RESERVE_SHARE: usize = 8;

/// What a charge is for: bodies alone stop short of the reserve, held
/// records may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Use {
    /// Body bytes being assembled or waiting in a store's queue.
    #[default]
    Body,
    /// Records held in a reorder window.
    Held,
    /// Events held until their objects are kept: in the bodies' share,
    /// taken whether or not they fit ([`Charge::grow_anyway`]).
    Events,
}

impl Use {
    /// Whether the bytes count in the bodies' share.
    fn in_body_share(self) -> bool {
        self != Use::Held
    }
}

/// The shared counter of buffered bytes (bodies, held records).
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// What bodies by themselves may take: all but the held records' reserve.
    body_limit: usize,
    /// Bytes charged, bodies and held records.
    used: AtomicUsize,
    /// Of those, bytes charged for bodies.
    bodies: AtomicUsize,
}

/// Adds `bytes` to `counter` if the sum stays within `limit`.
fn take_within(counter: &AtomicUsize, bytes: usize, limit: usize) -> bool {
    // Relaxed: the counters guard no other memory, they only bound totals.
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(bytes).filter(|&n| n <= limit)
        })
        .is_ok()
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            body_limit: limit - limit / HELD_RESERVE_SHARE,
            used: AtomicUsize::new(0),
            bodies: AtomicUsize::new(0),
        })
    }

    /// A budget that never refuses (tests, tools).
    pub fn unlimited() -> Arc<Budget> {
        Self::new(usize::MAX)
    }

    /// Takes `bytes` for `what` if they fit; false (nothing taken) if they
    /// do not.
    pub fn try_take(&self, bytes: usize, what: Use) -> bool {
        if what.in_body_share() && !take_within(&self.bodies, bytes, self.body_limit) {
            return false;
        }
        if !take_within(&self.used, bytes, self.limit) {
            if what.in_body_share() {
                self.bodies.fetch_sub(bytes, Ordering::Relaxed);
            }
            return false;
        }
        true
    }

    /// Takes `bytes` for `what` whether or not they fit: for what has a bound
    /// of its own and must not be refused. What asks next finds that much
    /// less room.
    fn take_anyway(&self, bytes: usize, what: Use) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        if what.in_body_share() {
            self.bodies.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes missing for `bytes` more for a held record to fit now (0: they
    /// fit).
    pub fn short_to_hold(&self, bytes: usize) -> usize {
        self.used().saturating_add(bytes).saturating_sub(self.limit)
    }

    /// Gives back `bytes` taken before for `what`.
    pub fn give_back(&self, bytes: usize, what: Use) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        if what.in_body_share() {
            self.bodies.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Bytes taken from a [`Budget`] by one buffer, given back when it is dropped.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<Budget>>,
    bytes: usize,
    /// What the bytes are for (one use per buffer).
    what: Use,
}

impl Charge {
    /// Takes `bytes` more from `budget` for this buffer, used for `what`;
    /// false if they do not fit.
    pub fn grow(&mut self, budget: &Arc<Budget>, bytes: usize, what: Use) -> bool {
        if !budget.try_take(bytes, what) {
            return false;
        }
        self.add(budget, bytes, what);
        true
    }

    /// Takes `bytes` more from `budget` for this buffer, used for `what`,
    /// whether or not they fit (see [`Budget::take_anyway`]).
    pub fn grow_anyway(&mut self, budget: &Arc<Budget>, bytes: usize, what: Use) {
        budget.take_anyway(bytes, what);
        self.add(budget, bytes, what);
    }

    /// Notes `bytes` taken from `budget` for `what`.
    fn add(&mut self, budget: &Arc<Budget>, bytes: usize, what: Use) {
        if self.budget.is_none() {
            self.budget = Some(Arc::clone(budget));
        }
        debug_assert!(self.bytes == 0 || self.what == what, "one use per buffer");
        self.what = what;
        self.bytes += bytes;
    }

    /// Bytes this buffer holds of the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back `bytes` of what this buffer holds.
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        if bytes == 0 {
            // Nothing to give back: no atomic operations on the shared
            // counters (a message's charge is released, then dropped).
            return;
        }
        if let Some(budget) = &self.budget {
            budget.give_back(bytes, self.what);
        }
        self.bytes -= bytes;
    }

    /// Gives back everything.
    pub fn release(&mut self) {
        self.shrink(self.bytes);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_queues_stay_within_their_share_at_any_cpu_count() {
        for cpus in [1, 2, 8, 64, 256, 1024] {
            let plan = Plan::new(DEFAULT_MEMORY_BUDGET, cpus, cpus);
            let queues = plan.frame_queue_bytes * cpus * plan.shards;
            assert!(
                queues <= DEFAULT_MEMORY_BUDGET / FRAME_QUEUE_SHARE
                    || (plan.shards == 1 && plan.frame_queue_bytes == MIN_FRAME_QUEUE_BYTES),
                "{cpus} cpus: {plan:?}"
            );
            assert!(plan.frame_queue_bytes >= MIN_FRAME_QUEUE_BYTES);
            assert!(plan.buffered_bytes >= DEFAULT_MEMORY_BUDGET / 2, "{plan:?}");
        }
        // A small node keeps one shard per CPU.
        assert_eq!(Plan::new(DEFAULT_MEMORY_BUDGET, 2, 2).shards, 2);
        assert_eq!(
            Plan::new(DEFAULT_MEMORY_BUDGET, 2, 2).frame_queue_bytes,
            MAX_FRAME_QUEUE_BYTES
        );
        // 64 CPUs: 32 MiB of queues at 64 KiB each is 8 shards.
        assert_eq!(Plan::new(DEFAULT_MEMORY_BUDGET, 64, 64).shards, 8);
    }

    #[test]
    fn the_stores_memory_is_split_from_the_budget() {
        use tapwire_store::spool::dir::{
            INDEX_BYTES_PER_OBJECT, MAX_NOTICES, MAX_OBJECTS, NOTICE_BYTES, notices_within,
            objects_within,
        };
        let plan = Plan::new(DEFAULT_MEMORY_BUDGET, 2, 2);
        assert_eq!(plan.store_queue_bytes(), 14 << 20);
        assert_eq!(plan.store_index_bytes(), 28 << 20);
        assert_eq!(plan.store_notice_bytes(), 7 << 20);
        let objects = objects_within(plan.store_index_bytes());
        assert_eq!(objects, 183_500);
        assert!(objects as u64 * INDEX_BYTES_PER_OBJECT <= plan.store_index_bytes());
        let notices = notices_within(plan.store_notice_bytes());
        assert_eq!(notices, 26_214);
        assert!(notices as u64 * NOTICE_BYTES <= plan.store_notice_bytes());
        // A large budget: the spool's own caps.
        let plan = Plan::new(1 << 30, 2, 2);
        assert_eq!(objects_within(plan.store_index_bytes()), MAX_OBJECTS);
        assert_eq!(notices_within(plan.store_notice_bytes()), MAX_NOTICES);
    }

    #[test]
    fn charges_are_refused_past_the_limit_and_given_back_on_drop() {
        let budget = Budget::new(100);
        let mut a = Charge::default();
        assert!(a.grow(&budget, 60, Use::Body));
        let mut b = Charge::default();
        assert!(!b.grow(&budget, 41, Use::Held));
        assert!(b.grow(&budget, 40, Use::Held));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        b.shrink(15);
        assert_eq!(budget.used(), 25);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn bodies_leave_the_held_records_their_reserve() {
        let budget = Budget::new(800);
        let mut body = Charge::default();
        assert!(!body.grow(&budget, 701, Use::Body));
        assert!(body.grow(&budget, 700, Use::Body));
        assert!(
            !body.grow(&budget, 1, Use::Body),
            "bodies stop at the reserve"
        );
        let mut held = Charge::default();
        assert!(held.grow(&budget, 100, Use::Held));
        assert!(!held.grow(&budget, 1, Use::Held), "nothing past the limit");
        assert_eq!(budget.used(), 800);
        drop((body, held));
        // Held records taken first leave bodies the rest of the limit, up to
        // their own share: they do not cut it by the reserve as well.
        let mut held = Charge::default();
        let mut body = Charge::default();
        assert!(held.grow(&budget, 500, Use::Held));
        assert!(!body.grow(&budget, 301, Use::Body));
        assert!(body.grow(&budget, 300, Use::Body));
        assert_eq!(budget.used(), 800);
        // Given back by use: the body's share is whole again.
        drop((body, held));
        let mut body = Charge::default();
        assert!(body.grow(&budget, 700, Use::Body));
    }

    #[test]
    fn held_events_are_never_refused_and_cut_the_bodies_share() {
        let budget = Budget::new(800);
        let mut events = Charge::default();
        events.grow_anyway(&budget, 200, Use::Events);
        let mut body = Charge::default();
        assert!(
            !body.grow(&budget, 501, Use::Body),
            "events are in the bodies' share"
        );
        assert!(body.grow(&budget, 500, Use::Body));
        // Past the bodies' share and the limit, events are still taken.
        events.grow_anyway(&budget, 200, Use::Events);
        assert_eq!(budget.used(), 900);
        let mut held = Charge::default();
        assert!(!held.grow(&budget, 1, Use::Held));
        events.release();
        assert_eq!(budget.used(), 500);
        assert!(
            body.grow(&budget, 200, Use::Body),
            "the bodies' share is whole again"
        );
        assert!(held.grow(&budget, 100, Use::Held));
    }
}
