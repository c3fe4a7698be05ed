//! The hand-off between objects and the event that names them.
//!
//! An event that names an object must not go out before the object is kept: an
//! agent killed in between would leave an event pointing at nothing. So each
//! object handed to a store travels with a [`Ticket`], and the event waits on the
//! [`Receipt`] the tickets share. A receipt may live inside another value
//! ([`HoldsReceipt`]), so that what the objects' notices share and the receipt
//! are one allocation. A store settles a ticket once the object is
//! durably kept (spooled and synced, or written to stdout's stream ahead of the
//! event) by calling [`Ticket::kept`]; a ticket dropped any other way marks its
//! object "not kept" — a full spool, a write error or a refused object can never
//! be reported as kept by mistake. When every ticket is settled the event goes
//! out, saying which objects were not kept.
//!
//! A ticket may also carry a [`Notice`]: who to tell once the object is durably
//! stored at its destination (S3: uploaded, or found already there; stdout:
//! written). The store calls [`Notice::stored`] from its own thread, after the
//! fact, so announcing costs the caller of `put` nothing; only an object the
//! store already holds is announced at once, from `put`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::Digest;

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

/// What a [`Receipt`] lives in: the receipt itself, or a value that keeps one
/// beside what else the tickets' objects share.
pub trait HoldsReceipt: Send + Sync {
    /// The receipt.
    fn receipt(&self) -> &Receipt;
}

impl HoldsReceipt for Receipt {
    fn receipt(&self) -> &Receipt {
        self
    }
}

impl Receipt {
    /// A receipt with no tickets yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A ticket for object `index` (below [`MAX_OBJECTS`]; higher indexes share
    /// the last bit) going to one store.
    pub fn ticket(self: &Arc<Self>, index: usize) -> Ticket {
        Ticket::on(Arc::clone(self) as Arc<dyn HoldsReceipt>, index)
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
pub struct Ticket {
    receipt: Option<Arc<dyn HoldsReceipt>>,
    bit: u64,
    kept: bool,
    /// Who to tell once the object is stored, if anyone.
    notice: Option<Notice>,
}

impl Ticket {
    /// A ticket for object `index` (below [`MAX_OBJECTS`]; higher indexes
    /// share the last bit) on the receipt `holder` keeps, going to one store.
    pub fn on(holder: Arc<dyn HoldsReceipt>, index: usize) -> Self {
        // Relaxed: the count only has to be complete before the receipt is
        // polled, and the tickets are handed out by the thread that polls it.
        holder.receipt().outstanding.fetch_add(1, Ordering::Relaxed);
        Ticket {
            receipt: Some(holder),
            bit: 1 << index.min(MAX_OBJECTS - 1),
            kept: false,
            notice: None,
        }
    }

    /// A ticket nobody waits on (for callers that emit no event).
    pub fn detached() -> Self {
        Self {
            receipt: None,
            bit: 0,
            kept: false,
            notice: None,
        }
    }

    /// The same ticket, announcing the object's storage to `notice`.
    pub fn with_notice(mut self, notice: Notice) -> Self {
        self.notice = Some(notice);
        self
    }

    /// Takes the notice out, for the store to keep until the object is stored.
    pub fn take_notice(&mut self) -> Option<Notice> {
        self.notice.take()
    }

    /// The object is kept: settle the ticket.
    pub fn kept(mut self) {
        self.kept = true;
    }
}

/// An object durably stored, as its store announces it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The store's id.
    pub store: &'a str,
    /// The object's digest (its key).
    pub digest: &'a Digest,
    /// The object's size in bytes.
    pub size: u64,
    /// Its MIME type.
    pub content_type: &'a str,
    /// How it can be fetched (S3: the `access_url` template, filled with
    /// `digest`); `None` when the store has no address for it (stdout).
    pub url: Option<&'a crate::s3::AccessUrl>,
    /// The store already held these bytes: nothing new was written.
    pub deduplicated: bool,
}

/// Hears that objects are stored (the agent's `artifact_record` events).
pub trait Announce: Send + Sync {
    /// Object `part` of what this announcer stands for is stored. Called on the
    /// store's own thread (uploader, writer), or on the thread that put the
    /// object when the store knows it is there already; must not block.
    fn stored(&self, part: usize, stored: Stored<'_>);

    /// Writes into `out`, ahead of time, the announcement of object `part`
    /// once it is stored as `stored` says (its wall-clock time excepted), so
    /// that a store with too many announcements waiting can keep it on disk
    /// instead of in memory; returns who makes it then
    /// ([`WrittenAhead::announce`]). `None` (the default): it cannot be
    /// written ahead, and the store drops it (counted).
    fn write_ahead(
        &self,
        part: usize,
        stored: Stored<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Arc<dyn WrittenAhead>> {
        let _ = (part, stored, out);
        None
    }
}

/// Makes announcements written ahead of time ([`Announce::write_ahead`]).
pub trait WrittenAhead: Send + Sync {
    /// The object of `record`, written ahead for object store `store`, is
    /// stored: announce it. Called on the store's own thread; must not block.
    fn announce(&self, store: &str, record: &[u8]);
}

/// One object's wish to be announced once stored: cheap to carry (an `Arc` and
/// an index), dropped unannounced when the object is not stored.
pub struct Notice {
    to: Arc<dyn Announce>,
    part: usize,
}

impl Notice {
    /// Announces object `part` to `to`.
    pub fn new(to: Arc<dyn Announce>, part: usize) -> Self {
        Self { to, part }
    }

    /// Which object of its announcer this notice is for.
    pub fn part(&self) -> usize {
        self.part
    }

    /// The object is stored: announce it.
    pub fn stored(self, stored: Stored<'_>) {
        self.to.stored(self.part, stored);
    }

    /// Writes the announcement ahead into `out` (see [`Announce::write_ahead`]).
    pub fn write_ahead(
        self,
        stored: Stored<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Arc<dyn WrittenAhead>> {
        self.to.write_ahead(self.part, stored, out)
    }
}

impl fmt::Debug for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notice").field("part", &self.part).finish()
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("receipt", &self.receipt.as_ref().map(|h| h.receipt()))
            .field("bit", &self.bit)
            .field("kept", &self.kept)
            .field("notice", &self.notice)
            .finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(holder) = self.receipt.take() {
            let receipt = holder.receipt();
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

    /// A value that keeps a receipt beside what else its objects share.
    struct Request {
        receipt: Receipt,
    }

    impl HoldsReceipt for Request {
        fn receipt(&self) -> &Receipt {
            &self.receipt
        }
    }

    #[test]
    fn a_receipt_kept_inside_another_value_is_settled_by_its_tickets() {
        let request = Arc::new(Request {
            receipt: Receipt::default(),
        });
        let a = Ticket::on(request.clone(), 0);
        let b = Ticket::on(request.clone(), 1);
        assert!(!request.receipt.settled());
        a.kept();
        drop(b);
        assert!(request.receipt.settled());
        assert!(request.receipt.kept(0));
        assert!(!request.receipt.kept(1));
        assert_eq!(Arc::strong_count(&request), 1, "tickets let go of it");
    }

    #[test]
    fn no_tickets_is_settled() {
        assert!(Receipt::new().settled());
        Ticket::detached().kept();
    }
}
