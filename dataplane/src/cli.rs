//! Command-line interface: runtime settings only. What to capture and where to
//! store it lives in the YAML config; the selection flags narrow capture to chosen
//! processes for targeted use and tests.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// tapwire: every HTTP(S) exchange of every process on this node, via eBPF.
#[derive(Debug, Parser)]
#[command(name = "tapwire", version, about, long_about = None)]
pub struct Cli {
    /// qpoint.yaml (version 2) to run with; without it, the embedded default
    /// (events and objects to stdout).
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
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

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
    /// Parse and validate a config file, print the stores it would start (secrets
    /// masked), and exit. Needs no privileges.
    CheckConfig {
        /// The qpoint.yaml file to check.
        file: PathBuf,
    },
}
