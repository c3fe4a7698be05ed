//! The capacity benchmark: no kernel. Synthetic records of many HTTP/1.1
//! keep-alive connections are pushed from reader threads through the data plane's
//! [`Pipeline`](tapwire::pipeline::Pipeline) (reader → shard → HTTP parser →
//! output → stores) into stores that only count, at paced offered loads rising
//! until drops begin.
//!
//! - [`frames`]: the synthetic records and their decoder.
//! - [`stores`]: counting event and object stores.
//! - [`run`]: reader threads, pacing, the search for the first drop.

pub mod frames;
pub mod run;
pub mod stores;

pub use run::{CapacityPlan, CapacityResults, Point, run};
