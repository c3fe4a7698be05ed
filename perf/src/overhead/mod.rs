//! The end-to-end overhead benchmark: nginx serving HTTPS (and plain HTTP) and a
//! Go HTTPS server on loopback under wrk, with each tracer in turn, rounds
//! interleaved.
//!
//! - [`process`]: child processes stopped on drop, their output collected.
//!
//! The S3 server of the object-store configuration is the tests' SeaweedFS
//! (`tapwire_testkit::Weed`).
//! - [`procfs`]: CPU time and peak memory from `/proc`.
//! - [`nginx`]: the server, its config and certificate.
//! - [`gotls`]: the Go HTTPS server, and the per-call cost of the Go probes.
//! - [`wrk`]: the load generator and its report.
//! - [`tracer`]: the configurations and how each tracer starts and stops.
//! - [`run`]: the rounds.
//! - [`headers`]: the kernel-header workaround that lets bcc compile here.
//! - [`bpf_stats`]: the probes' run time per program, for the profile run.

pub mod bpf_stats;
pub mod gotls;
pub mod headers;
pub mod nginx;
pub mod process;
pub mod procfs;
pub mod run;
pub mod tracer;
pub mod wrk;

pub use run::{Plan, Results, Sample, TracerRun, Workload, run};
pub use tracer::Config;
