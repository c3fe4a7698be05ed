//! Putting one connection's records back in sequence order.
//!
//! Records of one connection can reach its shard out of order: each CPU has its
//! own ring and reader, and a thread that migrates between CPUs leaves earlier
//! records in the old CPU's ring. Every record carries a per-connection sequence
//! number (open is 0), so the shard delivers in order, holding early arrivals in a
//! bounded window. When the window overflows or a hole outlives
//! [`REORDER_TIMEOUT_NS`], the missing records are declared lost: delivery jumps
//! the hole and reports it as a gap, which the transaction carries as a flag.
//! Nothing is papered over.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::budget::{Budget, Charge, Use};

/// Most records held waiting for an earlier one, per connection. Under
/// graceful overload a large call that passes a ring's high-water mark goes
/// on as payload-less records, one per 16 KiB (512 for an 8 MiB call), so the
/// window holds the records of several such calls; the bytes held stay bounded
/// by [`MAX_HELD_BYTES`] and the memory budget.
pub const MAX_HELD_RECORDS: usize = 8 * 1024;
/// Most bytes held waiting for an earlier record, per connection: 16 MiB covers a
/// reader that sleeps through a fast connection's burst on another CPU.
pub const MAX_HELD_BYTES: usize = 16 << 20;
/// How long a hole may stay open before its records are declared lost: several
/// reader poll intervals, so a slow reader is not mistaken for loss.
pub const REORDER_TIMEOUT_NS: u64 = 500_000_000;

/// What [`Reorder::offer`] did with a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// It is the next one: deliver it now, then call [`Reorder::pop_ready`].
    Deliver,
    /// It was copied into the window to wait for earlier records.
    Held,
    /// It is older than what was already delivered (or skipped), or a
    /// second copy of a record already held: dropped.
    Late,
}

/// The reorder window of one connection.
#[derive(Debug, Default)]
pub struct Reorder {
    /// Sequence number delivery waits for.
    next: u64,
    /// Early records by sequence number: (arrival time, bytes).
    held: BTreeMap<u64, (u64, Vec<u8>)>,
    held_bytes: usize,
    /// What the held records take of the memory budget.
    charge: Charge,
    /// The budget refused a record: give up on the hole now.
    over_budget: bool,
}

impl Reorder {
    /// A window expecting `first` next.
    pub fn starting_at(first: u64) -> Self {
        Self {
            next: first,
            ..Self::default()
        }
    }

    /// The sequence number delivery waits for.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Records waiting.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether record `seq` would be held to wait for earlier ones.
    pub fn would_hold(&self, seq: u64) -> bool {
        seq > self.next && !self.held.contains_key(&seq)
    }

    /// Offers record `seq` (raw bytes `bytes`, arriving at `now_ns`). A record
    /// held early is charged to `budget`; when it does not fit, it is held all
    /// the same (no record is dropped) and the hole is given up at once.
    pub fn offer(&mut self, seq: u64, bytes: &[u8], now_ns: u64, budget: &Arc<Budget>) -> Offer {
        if seq == self.next {
            self.next += 1;
            Offer::Deliver
        } else if !self.would_hold(seq) {
            // Older than what was delivered, or a second copy (which must
            // not replace the first: the held bytes and their charge are
            // counted once per sequence number).
            Offer::Late
        } else {
            if !self.charge.grow(budget, bytes.len(), Use::Held) {
                self.over_budget = true;
            }
            self.held_bytes += bytes.len();
            self.held.insert(seq, (now_ns, bytes.to_vec()));
            Offer::Held
        }
    }

    /// The next held record if it is now in order, or — when the window is over
    /// its limits or its oldest hole is older than the timeout — the first held
    /// record after the hole, with the number of records skipped and why the
    /// hole was given up.
    pub fn pop_ready(&mut self, now_ns: u64) -> Option<(u64, Vec<u8>, u64, Option<GaveUp>)> {
        let (&seq, &(arrived, _)) = self.held.first_key_value()?;
        let gave_up = if seq == self.next {
            None
        } else if self.over_budget {
            Some(GaveUp::Budget)
        } else if self.held.len() > MAX_HELD_RECORDS || self.held_bytes > MAX_HELD_BYTES {
            Some(GaveUp::Window)
        } else if now_ns.saturating_sub(arrived) > REORDER_TIMEOUT_NS {
            Some(GaveUp::Timeout)
        } else {
            return None;
        };
        let (_, bytes) = self.held.remove(&seq)?;
        self.held_bytes -= bytes.len();
        self.charge.shrink(bytes.len());
        if self.held.is_empty() {
            self.over_budget = false;
            self.charge.release();
        }
        let skipped = seq - self.next;
        self.next = seq + 1;
        Some((seq, bytes, skipped, gave_up))
    }
}

/// Why a hole was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// It outlived [`REORDER_TIMEOUT_NS`].
    Timeout,
    /// The window passed [`MAX_HELD_RECORDS`] or [`MAX_HELD_BYTES`].
    Window,
    /// The memory budget refused a record to hold.
    Budget,
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Reorder {
        fn offer_t(&mut self, seq: u64, bytes: &[u8], now_ns: u64) -> Offer {
            self.offer(seq, bytes, now_ns, &Budget::unlimited())
        }

        /// [`Reorder::pop_ready`] without the reason.
        fn pop(&mut self, now_ns: u64) -> Option<(u64, Vec<u8>, u64)> {
            self.pop_ready(now_ns)
                .map(|(seq, bytes, skipped, _)| (seq, bytes, skipped))
        }
    }

    #[test]
    fn a_record_the_budget_refuses_is_held_and_the_hole_given_up() {
        let budget = Budget::new(4);
        let mut r = Reorder::starting_at(0);
        assert_eq!(r.offer(2, b"ab", 0, &budget), Offer::Held);
        assert!(r.pop(0).is_none());
        assert_eq!(r.offer(3, b"cde", 0, &budget), Offer::Held);
        assert_eq!(budget.used(), 2);
        assert_eq!(
            r.pop_ready(0),
            Some((2, b"ab".to_vec(), 2, Some(GaveUp::Budget)))
        );
        assert_eq!(r.pop_ready(0), Some((3, b"cde".to_vec(), 0, None)));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn in_order_records_pass_straight_through() {
        let mut r = Reorder::starting_at(0);
        for seq in 0..5 {
            assert_eq!(r.offer_t(seq, b"x", 0), Offer::Deliver);
            assert!(r.pop(0).is_none());
        }
    }

    #[test]
    fn early_records_wait_for_the_hole_to_fill() {
        let mut r = Reorder::starting_at(0);
        assert_eq!(r.offer_t(0, b"a", 0), Offer::Deliver);
        assert_eq!(r.offer_t(2, b"c", 0), Offer::Held);
        assert_eq!(r.offer_t(3, b"d", 0), Offer::Held);
        assert!(r.pop(0).is_none());
        assert_eq!(r.offer_t(1, b"b", 0), Offer::Deliver);
        assert_eq!(r.pop(0), Some((2, b"c".to_vec(), 0)));
        assert_eq!(r.pop(0), Some((3, b"d".to_vec(), 0)));
        assert_eq!(r.pop(0), None);
        assert_eq!(r.offer_t(1, b"b", 0), Offer::Late);
    }

    #[test]
    fn a_duplicate_of_a_held_record_is_late_and_the_window_empties() {
        let budget = Budget::new(1 << 20);
        let mut r = Reorder::starting_at(0);
        assert_eq!(r.offer(2, b"first", 0, &budget), Offer::Held);
        assert_eq!(r.offer(2, b"second copy", 0, &budget), Offer::Late);
        assert_eq!(budget.used(), 5);
        assert_eq!(r.pop(u64::MAX), Some((2, b"first".to_vec(), 2)));
        assert_eq!((r.held(), r.held_bytes, budget.used()), (0, 0, 0));
    }

    #[test]
    fn a_hole_that_outlives_the_timeout_is_reported_as_a_gap() {
        let mut r = Reorder::starting_at(5);
        assert_eq!(r.offer_t(8, b"h", 100), Offer::Held);
        assert!(r.pop(100 + REORDER_TIMEOUT_NS).is_none());
        assert_eq!(
            r.pop_ready(101 + REORDER_TIMEOUT_NS),
            Some((8, b"h".to_vec(), 3, Some(GaveUp::Timeout)))
        );
        assert_eq!(r.next_seq(), 9);
        assert_eq!(r.offer_t(6, b"late", 0), Offer::Late);
    }

    #[test]
    fn an_overflowing_window_gives_up_on_the_hole() {
        let mut r = Reorder::starting_at(0);
        for seq in 1..=MAX_HELD_RECORDS as u64 + 1 {
            assert_eq!(r.offer_t(seq, b"x", 0), Offer::Held);
        }
        let (seq, _, skipped, why) = r.pop_ready(0).unwrap();
        assert_eq!((seq, skipped, why), (1, 1, Some(GaveUp::Window)));
        // The rest are now in order.
        assert_eq!(r.pop(0).map(|(s, _, k)| (s, k)), Some((2, 0)));
    }
}
