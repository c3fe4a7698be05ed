//! tapwire's benchmark harness (`cargo xtask bench`).
//!
//! - [`overhead`]: what tracing costs nginx under wrk, tapwire beside bpftrace and
//!   bcc's sslsniff, on loopback, in interleaved rounds.
//! - [`capacity`]: what the data plane takes without the kernel, and where it
//!   starts dropping.
//! - [`late_files`]: the window from a program loading a TLS library tapwire
//!   has not seen to that file's probes being live.
//! - [`soak`]: a long run of mixed traffic with S3 restarts: memory, objects
//!   and loss counters at the end.
//! - [`report`]: the markdown table and PNG chart in `perf/results/`.

pub mod capacity;
pub mod late_files;
pub mod overhead;
pub mod report;
pub mod soak;
