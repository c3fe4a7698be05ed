//! The compiled plan: every runtime decision, made once from `qpoint.yaml` and
//! the command line before anything starts. `check-config` builds the same
//! plan and prints it, so it accepts exactly what start-up accepts.
//!
//! The plan holds: what the probes capture ([`CapturePolicy`]: selection,
//! direction, loopback, filters), what happens to each HTTP transaction
//! ([`HttpPlan`], from the plugin stack `tap.http` names), the pipeline sizes
//! ([`Sizes`]) and the validated stores.

use std::fmt::Write as _;

use tapwire_common::config::capture as bits;

use crate::capture::filters::ProcessFilters;
use crate::capture::procs::ProcessTable;
use crate::capture::{Options, Selection};
use crate::cli::Cli;
use crate::config::{self, Config, ConfigError, Direction};
use crate::plugins::HttpPlan;

pub use crate::pipeline::event_fields::{direction_word, is_internal};

/// Default ring bytes per CPU (see [`crate::capture::loader::RING_BYTES_PER_CPU`]).
pub use crate::capture::loader::{RING_BYTES_PER_CPU, WAKE_DIVISOR};

/// Why no plan could be built.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The config file is unusable (located).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A command-line value is unusable.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// What the probes capture. Applied in the kernel: an excluded connection's
/// payload never enters a ring.
#[derive(Debug, Clone)]
pub struct CapturePolicy {
    /// Which processes (empty: all).
    pub selection: Selection,
    /// Which connections by direction (`tap.direction`).
    pub direction: Direction,
    /// Leave out connections whose peer is a loopback address
    /// (`tap.ignore_loopback`).
    pub ignore_loopback: bool,
    /// Processes left out, wholly or in part (`tap.filters`).
    pub filters: ProcessFilters,
}

impl CapturePolicy {
    /// The `Config::capture` bits the probes read.
    pub fn kernel_bits(&self) -> u32 {
        let directions = match self.direction {
            Direction::All => bits::INGRESS | bits::EGRESS_INTERNAL | bits::EGRESS_EXTERNAL,
            Direction::Ingress => bits::INGRESS,
            Direction::Egress => bits::EGRESS_INTERNAL | bits::EGRESS_EXTERNAL,
            Direction::EgressInternal => bits::EGRESS_INTERNAL,
            Direction::EgressExternal => bits::EGRESS_EXTERNAL,
        };
        if self.ignore_loopback {
            directions | bits::IGNORE_LOOPBACK
        } else {
            directions
        }
    }
}

/// Pipeline sizes (command line).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Shard threads.
    pub shards: usize,
    /// Ring bytes per CPU.
    pub ring_bytes: u32,
    /// Wake-up divisor of the rings.
    pub wake_divisor: u32,
    /// High-water mark of graceful overload, percent of a ring.
    pub overload_percent: u32,
    /// Probe TLS calls with uprobe sessions where the kernel has them.
    pub uprobe_sessions: bool,
    /// Bytes the data plane may buffer (`--memory-budget`, else
    /// `tapwire.memory_budget`); `None`: the pipeline's default.
    pub memory_budget: Option<usize>,
    /// Silence after which a connection's buffered transactions are released
    /// (`tapwire.idle_timeout`); `None`: the pipeline's default.
    pub idle_timeout: Option<std::time::Duration>,
}

/// Every runtime decision.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the config came from (a path, or the embedded default).
    pub source: String,
    /// The validated config (stores, stacks as written).
    pub config: Config,
    /// What the probes capture.
    pub capture: CapturePolicy,
    /// What each HTTP transaction becomes.
    pub http: HttpPlan,
    /// Pipeline sizes.
    pub sizes: Sizes,
}

impl Plan {
    /// Builds the plan from the config the command line names (or the
    /// embedded default) and the command line itself.
    pub fn build(cli: &Cli) -> Result<Plan, PlanError> {
        let (source, config) = match &cli.config {
            Some(path) => (path.display().to_string(), config::load_file(path)?),
            None => (
                config::DEFAULT_NAME.to_owned(),
                config::parse(config::DEFAULT_NAME, config::DEFAULT_YAML)?,
            ),
        };
        Self::from_config(source, config, cli)
    }

    /// Builds the plan from an already loaded config and the command line.
    pub fn from_config(source: String, config: Config, cli: &Cli) -> Result<Plan, PlanError> {
        if !cli.ring_bytes.is_power_of_two() || cli.ring_bytes < 4096 {
            return Err(PlanError::Flag {
                flag: "--ring-bytes",
                message: format!("{} is not a power of two of at least 4096", cli.ring_bytes),
            });
        }
        if cli.wake_divisor == 0 {
            return Err(PlanError::Flag {
                flag: "--wake-divisor",
                message: "must be at least 1".to_owned(),
            });
        }
        if cli.shards == Some(0) {
            return Err(PlanError::Flag {
                flag: "--shards",
                message: "must be at least 1".to_owned(),
            });
        }
        let shards = cli.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        Ok(Plan {
            source,
            capture: CapturePolicy {
                selection: Selection {
                    pids: cli.pids.clone(),
                    exes: cli.exes.clone(),
                    cgroups: cli.cgroups.clone(),
                },
                direction: config.tap.direction,
                ignore_loopback: config.tap.ignore_loopback,
                filters: config.filters.clone(),
            },
            http: config.http.clone(),
            sizes: Sizes {
                shards,
                ring_bytes: cli.ring_bytes,
                wake_divisor: cli.wake_divisor,
                overload_percent: cli.overload_percent,
                uprobe_sessions: cli.uprobe_sessions,
                memory_budget: cli
                    .memory_budget
                    .or(config.tapwire.memory_budget)
                    .map(|b| usize::try_from(b.0).unwrap_or(usize::MAX)),
                idle_timeout: config
                    .tapwire
                    .idle_timeout
                    .map(|s| std::time::Duration::from_secs(s.0)),
            },
            config,
        })
    }

    /// The loader options of this plan.
    pub fn capture_options(&self) -> Options {
        Options {
            selection: self.capture.selection.clone(),
            ring_bytes: self.sizes.ring_bytes,
            wake_divisor: self.sizes.wake_divisor,
            overload_percent: self.sizes.overload_percent,
            capture: self.capture.kernel_bits(),
            processes: std::sync::Arc::new(ProcessTable::new(self.capture.filters.clone())),
            uprobe_sessions: self.sizes.uprobe_sessions,
        }
    }

    /// A human-readable account of every decision (secrets masked).
    pub fn summary(&self) -> String {
        let mut out = crate::check::stores(&self.source, &self.config);
        let sel = &self.capture.selection;
        let selection = if sel.pids.is_empty() && sel.exes.is_empty() && sel.cgroups.is_empty() {
            "all processes".to_owned()
        } else {
            format!(
                "pids={:?} exes={:?} cgroups={:?}",
                sel.pids, sel.exes, sel.cgroups
            )
        };
        let _ = writeln!(
            out,
            "capture: {selection}; direction={} ignore_loopback={} (the agent's own traffic is never captured)",
            self.capture.direction.name(),
            self.capture.ignore_loopback,
        );
        let _ = write!(
            out,
            "filters (first match wins):\n{}",
            self.capture.filters.describe()
        );
        let _ = writeln!(out, "http: {}", self.http.describe());
        let _ = writeln!(
            out,
            "pipeline: shards={} ring_bytes={} wake_divisor={} overload_percent={} memory_budget={} idle_timeout={}",
            self.sizes.shards,
            self.sizes.ring_bytes,
            self.sizes.wake_divisor,
            self.sizes.overload_percent,
            self.sizes
                .memory_budget
                .map_or("default".to_owned(), |b| b.to_string()),
            self.sizes
                .idle_timeout
                .map_or("default".to_owned(), |d| format!("{}s", d.as_secs())),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_those_qtap_names() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.9",
            "100.64.0.1",
            "100.127.255.254",
            "::1",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for external in [
            "203.0.113.2",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2001:db8::1",
            "::ffff:203.0.113.9",
        ] {
            assert!(!is_internal(external.parse().unwrap()), "{external}");
        }
        assert_eq!(direction_word(false, "8.8.8.8".parse().unwrap()), "ingress");
        assert_eq!(
            direction_word(true, "8.8.8.8".parse().unwrap()),
            "egress-external"
        );
        assert_eq!(
            direction_word(true, "10.0.0.1".parse().unwrap()),
            "egress-internal"
        );
    }
}
