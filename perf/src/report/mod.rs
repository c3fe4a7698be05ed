//! The results: a markdown file and a PNG chart in `perf/results/`, named by date
//! and host, and the same table on standard output.
//!
//! - [`machine`]: what the numbers were measured on.
//! - [`summary`]: medians and ratios over rounds.
//! - [`markdown`]: the tables.
//! - [`chart`]: the ratio chart.

pub mod chart;
pub mod machine;
pub mod markdown;
pub mod summary;
