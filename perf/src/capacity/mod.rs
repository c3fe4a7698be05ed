//! The capacity benchmark: no kernel. Records of many HTTP/1.1 keep-alive
//! connections, in the probes' wire format, are pushed from reader threads through the data plane's
//! [`Pipeline`](tapwire::pipeline::Pipeline) (reader → shard → HTTP parser →
//! output → stores) into stores that only count, at paced offered loads rising
//! until drops begin.
//!
//! - [`frames`]: the records, encoded as the probes write them.
//! - [`stores`]: counting event and object stores.
//! - [`run`]: reader threads, pacing, the search for the first drop.

pub mod frames;
pub mod run;
pub mod stores;

pub use run::{CapacityPlan, CapacityResults, Point, run};
