//! Command-line interface: runtime settings only. What to capture and where to
//! store it lives in the YAML config; the selection flags narrow capture to chosen
//! processes for targeted use and tests.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// tapwire: every HTTP(S) exchange of every process on this node, via eBPF.
#[derive(Debug, Parser)]
#[command(name = "tapwire", version, about, long_about = None)]
pub struct Cli {
    /// qpoint.yaml (version 2) to run with; without it, the embedded default:
    /// every HTTP transaction recorded in full, events and objects to stdout.
    #[arg(long, short = 'c', env = "TAPWIRE_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Log filter for stderr (`info`, `debug`, `tapwire=trace`, …); `RUST_LOG` also works.
    #[arg(long, env = "TAPWIRE_LOG", global = true)]
    pub log_level: Option<String>,

    /// Capture only this process and its descendants (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Capture only processes running this executable (repeatable).
    #[arg(long = "exe", value_name = "PATH")]
    pub exes: Vec<PathBuf>,

    /// Capture only processes in this cgroup (v2 path, repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,

    /// Shard threads (HTTP parsing); default: one per CPU.
    #[arg(long, value_name = "N", global = true)]
    pub shards: Option<usize>,

    /// Bytes of each CPU's ring buffer (a power of two, at least 4096). One
    /// probe hit can emit up to 8 MiB while the reader cannot run; smaller
    /// rings overflow sooner (counted as `ring_full`).
    #[arg(long, value_name = "BYTES", env = "TAPWIRE_RING_BYTES", global = true,
          default_value_t = crate::capture::loader::RING_BYTES_PER_CPU)]
    pub ring_bytes: u32,

    /// A record that brings a ring past 1/N full wakes its reader at once;
    /// below that the reader finds records on its poll timer.
    #[arg(long, value_name = "N", env = "TAPWIRE_WAKE_DIVISOR", global = true,
          default_value_t = crate::capture::loader::WAKE_DIVISOR)]
    pub wake_divisor: u32,

    /// Print every raw ring record as one NDJSON line on stdout instead of
    /// parsing HTTP and running the stores (for inspecting what the probes see).
    #[arg(long, env = "TAPWIRE_DEBUG_CAPTURE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub print_records: bool,

    /// Bytes the data plane may buffer (e.g. `128MiB`); overrides
    /// `tapwire.memory_budget` in the config. Default 128 MiB.
    #[arg(long, value_name = "SIZE")]
    pub memory_budget: Option<crate::config::ByteSize>,

    /// A subcommand; without one, the agent runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the plan start-up would build from a config file and the command
    /// line, print it (stores with secrets masked, capture, HTTP handling,
    /// sizes), and exit. Accepts exactly what start-up accepts; needs no
    /// privileges and reads no secrets.
    CheckConfig {
        /// The qpoint.yaml file to check.
        file: PathBuf,
    },
}
