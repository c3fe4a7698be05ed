//! The hand-off between objects and the event that names them.
//!
//! An event that names an object must not go out before the object is kept: an
//! agent killed in between would leave an event pointing at nothing. So each
//! object handed to a store travels with a [`Ticket`], and the event waits on the
//! [`Receipt`] the tickets share. A store settles a ticket once the object is
//! durably kept (spooled and synced, or written to stdout's stream ahead of the
//! event) by calling [`Ticket::kept`]; a ticket dropped any other way marks its
//! object "not kept" — a full spool, a write error or a refused object can never
//! be reported as kept by mistake. When every ticket is settled the event goes
//! out, saying which objects were not kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Objects one receipt tracks at most (one bit each).
pub const MAX_OBJECTS: usize = 64;

/// What the tickets of one event share.
#[derive(Debug, Default)]
pub struct Receipt {
    /// Tickets not yet settled.
    outstanding: AtomicUsize,
    /// Bit `i` set: object `i` was not kept by some store.
    not_kept: AtomicU64,
}

impl Receipt {
    /// A receipt with no tickets yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A ticket for object `index` (below [`MAX_OBJECTS`]; higher indexes share
    /// the last bit) going to one store.
    pub fn ticket(self: &Arc<Self>, index: usize) -> Ticket {
        // Relaxed: the count only has to be complete before the receipt is
        // polled, and the tickets are handed out by the thread that polls it.
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Ticket {
            receipt: Some(Arc::clone(self)),
            bit: 1 << index.min(MAX_OBJECTS - 1),
            kept: false,
        }
    }

    /// Every ticket is settled.
    pub fn settled(&self) -> bool {
        // Acquire pairs with the Release decrement in `Ticket::drop`: once zero
        // is seen, every `not_kept` bit set before it is visible.
        self.outstanding.load(Ordering::Acquire) == 0
    }

    /// Whether every store kept object `index` (meaningful once settled).
    pub fn kept(&self, index: usize) -> bool {
        let bit = 1u64 << index.min(MAX_OBJECTS - 1);
        self.not_kept.load(Ordering::Relaxed) & bit == 0
    }
}

/// One object's claim on a [`Receipt`], held by the store that took the object.
#[derive(Debug)]
pub struct Ticket {
    receipt: Option<Arc<Receipt>>,
    bit: u64,
    kept: bool,
}

impl Ticket {
    /// A ticket nobody waits on (for callers that emit no event).
    pub fn detached() -> Self {
        Self {
            receipt: None,
            bit: 0,
            kept: false,
        }
    }

    /// The object is kept: settle the ticket.
    pub fn kept(mut self) {
        self.kept = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(receipt) = self.receipt.take() {
            if !self.kept {
                receipt.not_kept.fetch_or(self.bit, Ordering::Relaxed);
            }
            // Release pairs with the Acquire load in `Receipt::settled`.
            receipt.outstanding.fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_once_every_ticket_is_and_dropped_means_not_kept() {
        let receipt = Receipt::new();
        let a = receipt.ticket(0);
        let b = receipt.ticket(1);
        let c = receipt.ticket(1);
        assert!(!receipt.settled());
        a.kept();
        b.kept();
        assert!(!receipt.settled());
        drop(c);
        assert!(receipt.settled());
        assert!(receipt.kept(0));
        assert!(!receipt.kept(1), "one store of two did not keep object 1");
    }

    #[test]
    fn no_tickets_is_settled() {
        assert!(Receipt::new().settled());
        Ticket::detached().kept();
    }
}
