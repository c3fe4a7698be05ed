//! tapwire's stores: where events (metadata) and objects (payloads) go.
//!
//! Two small traits, [`EventStore`] and [`ObjectStore`], each implemented by a store
//! type from `qpoint.yaml` (`stdout`, `pulse`; `stdout`, `s3`). Every store owns a
//! bounded queue and the thread(s) that drain it: `emit`/`put` never block the
//! caller, and what a full queue refuses is dropped and counted in [`StoreStats`].

pub mod access_url;
pub mod announce;
mod backoff;
pub mod calendar;
pub mod config;
pub mod counters;
pub mod handoff;
pub mod hex;
pub mod pulse;
mod ratelog;
pub mod room;
pub mod s3;
pub mod spool;
pub mod stdout;
pub mod stores;

pub use handoff::{Announce, HoldsReceipt, Notice, Receipt, Stored, Ticket, WrittenAhead};
pub use pulse::{PulseError, PulseStore};
pub use s3::{S3Error, S3Store};
pub use stores::{StartContext, StoreStartError, Stores};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// A BLAKE3 digest: an object's identity and its S3 key (as lowercase hex).
pub type Digest = blake3::Hash;

/// A payload to store: headers or a body, exactly as captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// BLAKE3 of `bytes`.
    pub digest: Digest,
    /// MIME type of `bytes` (`application/http-headers`, the body's
    /// Content-Type, …); shared, so handing an object to several stores and
    /// naming it in an event copies no text.
    pub content_type: Arc<str>,
    /// The bytes themselves; cloning shares them.
    pub bytes: Bytes,
}

impl Object {
    /// Wraps `bytes`, computing their digest.
    pub fn new(content_type: impl Into<Arc<str>>, bytes: Bytes) -> Self {
        Self {
            digest: blake3::hash(&bytes),
            content_type: content_type.into(),
            bytes,
        }
    }
}

/// Counters a store publishes; all monotonic since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Items handed to the store.
    pub accepted: u64,
    /// Items durably written (stdout: printed; pulse: acknowledged; s3: uploaded).
    pub stored: u64,
    /// Items skipped because the same digest was stored recently.
    pub deduplicated: u64,
    /// Items dropped, all reasons: the sum of [`StoreStats::drops`].
    pub dropped: u64,
    /// Items dropped, by reason.
    pub drops: Drops,
    /// Requests that failed (each retry counts).
    pub errors: u64,
    /// Objects uploaded with multipart uploads.
    pub multipart: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Spool files fsynced before their objects counted as kept.
    pub synced_files: u64,
    /// Spool directory fsyncs (one per batch, after the renames).
    pub synced_dirs: u64,
    /// Objects found whole in the spool at start and queued again.
    pub recovered: u64,
    /// Times a producer found the store's queue full and waited for room
    /// (backpressure: the shard slowed down instead of losing the item).
    pub waits: u64,
    /// `artifact_record` announcements made: one per stored object a request
    /// asked about (object stores only).
    pub artifact_records: u64,
    /// Announcements not made for objects that were stored: requests waiting
    /// on uploads past the spool's byte limit (those past
    /// `spool::dir::MAX_NOTICES` wait on disk), or lost with their file.
    pub artifact_records_dropped: u64,
}

/// Items a store dropped, by reason; each is counted where it happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drops {
    /// The store's in-memory queue was full (by count or bytes).
    pub queue_full: u64,
    /// The spool was at its size or object limit: the object was refused.
    pub spool_full: u64,
    /// The disk returned ENOSPC (or EDQUOT) while spooling: the object was refused.
    pub no_space: u64,
    /// Another I/O error while spooling.
    pub write_error: u64,
    /// The server refused the object itself (a 4xx that is not a set-up error).
    pub refused: u64,
    /// An object found in the spool at start did not match its digest (cut short
    /// or damaged).
    pub corrupt: u64,
    /// Lines the output did not take (stdout closed, or still queued at the
    /// shutdown deadline).
    pub unwritten: u64,
    /// Items still undelivered when the shutdown deadline passed.
    pub deadline: u64,
    /// Objects refused while the queue was full and the kernel's rings were
    /// past their high-water mark: kept waiting, the shards would have left
    /// whole records to be lost in the kernel (`tapwire_store::room`).
    pub shed: u64,
}

/// A destination for events: one JSON object per event, serialized.
pub trait EventStore: Send + Sync {
    /// The store id from the config.
    fn id(&self) -> &str;
    /// Queues one event (a serialized JSON object, no trailing newline). A store
    /// whose queue drains locally (stdout) makes the caller wait for room while
    /// the queue is full, at most [`room::PUSHBACK_WAIT`]; one that buffers for
    /// outages (pulse) never waits. What the store cannot take is dropped and
    /// counted.
    fn emit(&self, event: Bytes);
    /// Queues `count` events at once: `lines` holds them in order, each
    /// followed by a newline (events never hold one: JSON escapes it). A
    /// store that writes lines (stdout) takes the block whole, as one item of
    /// its queue; the default hands each event to [`emit`](Self::emit).
    fn emit_lines(&self, lines: Bytes, count: u64) {
        for event in split_lines(lines) {
            self.emit(event);
        }
        let _ = count;
    }
    /// Counters so far.
    fn stats(&self) -> StoreStats;
    /// Delivers what is queued, waiting at most `deadline`, then stops.
    fn shutdown(&self, deadline: Duration);
}

/// The newline-terminated lines of `lines`, without their newlines; each a
/// slice of it.
pub fn split_lines(mut lines: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if lines.is_empty() {
            return None;
        }
        let end = lines
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(lines.len());
        let mut line = lines.split_to((end + 1).min(lines.len()));
        line.truncate(end);
        Some(line)
    })
}

/// A destination for objects.
pub trait ObjectStore: Send + Sync {
    /// The store id from the config.
    fn id(&self) -> &str;
    /// Queues one object. While the store's in-memory queue is full the caller
    /// waits for room, at most [`room::PUSHBACK_WAIT`] (backpressure: see
    /// [`room`]); what the store cannot take is dropped and counted. The store settles `ticket` with [`Ticket::kept`] once
    /// the object is durably kept, or drops it (the object is then reported as not
    /// kept): the event naming the object waits for that.
    fn put_with(&self, object: Object, ticket: Ticket);
    /// Queues one object that no event waits on.
    fn put(&self, object: Object) {
        self.put_with(object, Ticket::detached());
    }
    /// How events address this store's objects (S3: its `access_url`
    /// template, filled with an object's digest); `None`: they are not
    /// addressed (stdout).
    fn access_url(&self) -> Option<&s3::AccessUrl>;
    /// Counters so far.
    fn stats(&self) -> StoreStats;
    /// Delivers (or spools) what is queued, waiting at most `deadline`, then stops.
    fn shutdown(&self, deadline: Duration);
    /// Whether the store has reached its destination since it started (the
    /// agent's `/readyz`); stores with nothing to reach are ready at once.
    fn reached_destination(&self) -> bool {
        true
    }
    /// Levels now, by name (metrics gauges `tapwire_store_NAME`): what waits
    /// in the store's queue and spool. None by default.
    fn levels(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
