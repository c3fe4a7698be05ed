//! The on-disk spool between `put` and the uploader.
//!
//! Objects are appended by the storage thread ([`writer`]) in batches to segment
//! files ([`dir`]), each behind a header with its digest ([`header`]), one
//! vectored write and one `fdatasync` per batch. The uploader takes them oldest
//! first; a segment is deleted once every object in it is stored. On start every
//! whole object left by a previous run is queued again; past the size limit new
//! objects are refused and counted. Announcements waiting for uploads past
//! what memory holds wait on disk too ([`ahead`]).

pub mod ahead;
pub mod dir;
pub mod header;
pub mod known;
pub mod writer;

pub use dir::{Admit, AheadWait, Awaited, Entry, Spool, SpoolError, SpoolLevels};
pub use writer::{PendingQueue, StorageThread};
