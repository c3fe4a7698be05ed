//! From captured records to stored transactions.
//!
//! ```text
//! reader (one per CPU) ──frame queue per (reader, shard)──► shard (by conn id)
//!     ──► objects and events, on the shard's thread ──► event and object stores
//! ```
//!
//! - [`budget`]: the memory budget and how it is split.
//! - [`queue`]: the framed SPSC byte queue between readers and shards.
//! - [`reorder`]: per-connection sequence ordering with a bounded window.
//! - [`shard`]: connection tracking and HTTP parsing into transactions.
//! - [`txn`]: transactions and their event JSON.
//! - [`output`]: objects and events to the stores (the shards' sink).
//! - [`digests`]: the digests of a shard's recent objects, reused for the same bytes.
//! - [`records`]: `artifact_record` events, told by the object stores.
//! - [`batch`]: a shard's events of one round, handed to each store as one block.
//! - [`input`]: the decoded record a shard consumes.

pub mod batch;
pub mod budget;
pub mod digests;
pub mod event_fields;
pub mod input;
pub mod output;
pub mod queue;
pub mod records;
pub mod reorder;
mod run;
pub mod shard;
#[cfg(test)]
mod tests;
pub mod txn;
pub mod wire;

pub use run::{Pipeline, PipelineConfig, PipelineStats, Router, RouterCounters, now_ns, shed_mark};
