//! tapwire's benchmark harness (`cargo xtask bench`).
//!
//! - [`overhead`]: what tracing costs nginx under wrk, tapwire beside bpftrace and
//!   bcc's sslsniff, on loopback, in interleaved rounds.
//! - [`capacity`]: what the data plane takes without the kernel, and where it
//!   starts dropping.
//! - [`footprint`]: an idle agent's CPU and memory, and its peak memory under
//!   uploads far larger than its memory budget.
//! - [`late_files`]: the window from a program bringing a TLS file tapwire
//!   has not seen (a library it maps, an executable it execs) to that file's
//!   probes being live.
//! - [`tls_calls`]: what one OpenSSL call costs in a process tapwire selects
//!   and in one it does not.
//! - [`shard_feed`]: one shard fed whole exchanges on the calling thread (the
//!   shard bench, the allocation count).
//! - [`tapwire_log`]: the counters tapwire logs when it stops.
//! - [`soak`]: a long run of mixed traffic with S3 restarts: memory, objects
//!   and loss counters at the end.
//! - [`report`]: the markdown table and PNG chart in `perf/results/`.

pub mod capacity;
pub mod footprint;
pub mod late_files;
pub mod overhead;
pub mod report;
pub mod shard_feed;
pub mod soak;
pub mod tapwire_log;
pub mod tls_calls;
