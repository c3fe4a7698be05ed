//! The on-disk spool between `put` and the uploader.
//!
//! Objects are written by the storage thread ([`writer`]) in batches through
//! io_uring ([`uring`]) to one file each ([`dir`]): written under a temporary name
//! and renamed when whole, named by arrival order and digest. The uploader takes
//! them oldest first and deletes each file once the object is stored. On start
//! every complete file left by a previous run is queued again; past the size limit
//! the oldest waiting objects are dropped and counted.

pub mod dir;
pub mod header;
pub mod known;
pub mod uring;
pub mod writer;

pub use dir::{Admit, Awaited, Entry, Spool, SpoolError};
pub use uring::{BatchWriter, WriteJob};
pub use writer::{PendingQueue, StorageThread};
