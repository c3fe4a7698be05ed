//! Telling requests that their objects are stored: each object store keeps the
//! [`Notice`]s that came with its objects and tells them, from its own thread,
//! once the object is durably at its destination.

use std::sync::Arc;

use crate::counters::Counters;
use crate::s3::AccessUrl;
use crate::{Digest, Notice, Object, Stored, Ticket, WrittenAhead};

/// One store's side of announcing: its id and how it addresses objects.
#[derive(Debug)]
pub struct Announcer {
    store: Arc<str>,
    url: Option<AccessUrl>,
}

impl Announcer {
    /// Announces for store `store`, objects addressed by `url` (none: stdout).
    pub fn new(store: &str, url: Option<AccessUrl>) -> Self {
        Self {
            store: Arc::from(store),
            url,
        }
    }

    /// The object `digest` (`size` bytes of `content_type`) is stored: tells
    /// `notice` and counts it in `counters`.
    pub fn stored(
        &self,
        counters: &Counters,
        notice: Notice,
        digest: &Digest,
        size: u64,
        content_type: &str,
        deduplicated: bool,
    ) {
        notice.stored(self.stored_as(digest, size, content_type, deduplicated));
        Counters::add(&counters.here().artifact_records, 1);
    }

    /// How this store holds the object `digest`.
    fn stored_as<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        content_type: &'a str,
        deduplicated: bool,
    ) -> Stored<'a> {
        Stored {
            store: &self.store,
            digest,
            size,
            content_type,
            url: self.url.as_ref(),
            deduplicated,
        }
    }

    /// Writes `notice`'s announcement of the object `digest` ahead into
    /// `out` ([`crate::Announce::write_ahead`]); returns who makes it once
    /// the object is stored ([`Announcer::announce_ahead`]).
    pub fn write_ahead(
        &self,
        notice: Notice,
        digest: &Digest,
        size: u64,
        content_type: &str,
        deduplicated: bool,
        out: &mut Vec<u8>,
    ) -> Option<Arc<dyn WrittenAhead>> {
        notice.write_ahead(
            self.stored_as(digest, size, content_type, deduplicated),
            out,
        )
    }

    /// The object of `record`, written ahead, is stored: `by` announces it;
    /// counted in `counters`.
    pub fn announce_ahead(&self, counters: &Counters, by: &dyn WrittenAhead, record: &[u8]) {
        by.announce(&self.store, record);
        Counters::add(&counters.here().artifact_records, 1);
    }

    /// `object` is in the store already (a duplicate of one stored before):
    /// counts it as accepted and deduplicated, announces it, and settles
    /// `ticket` as kept, all on the caller's thread.
    pub fn settle_duplicate(&self, counters: &Counters, object: &Object, mut ticket: Ticket) {
        Counters::add(&counters.here().accepted, 1);
        Counters::add(&counters.here().deduplicated, 1);
        if let Some(notice) = ticket.take_notice() {
            self.stored(
                counters,
                notice,
                &object.digest,
                object.bytes.len() as u64,
                &object.content_type,
                true,
            );
        }
        ticket.kept();
    }

    /// A notice for a stored object was dropped: counts it.
    pub fn dropped(counters: &Counters) {
        Counters::add(&counters.here().artifact_records_dropped, 1);
    }
}
