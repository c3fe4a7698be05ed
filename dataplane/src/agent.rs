//! Start-up and shutdown: privileges, config, secrets, stores, capture — in that
//! order, so that a bad config or a missing credential stops the agent before
//! anything is loaded into the kernel.

use std::sync::Arc;
use std::time::Duration;

use tapwire_store::config::{EventStoreConfig, ObjectStoreConfig, SecretError};
use tapwire_store::stdout::{
    STDOUT_QUEUE_LINES, StdoutEventStore, StdoutObjectStore, StdoutWriter,
};
use tapwire_store::{EventStore, ObjectStore, PulseError, PulseStore, S3Error, S3Store};

use tapwire_common::{DropReason, Record, config::Exclusion};

use crate::capture::{self, Capture};
use crate::cli::Cli;
use crate::config::{Config, ConfigError};
use crate::pipeline::output::Fanout;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineStats, Router, wire};
use crate::plan::Plan;
use crate::privileges::{self, PrivilegeError};

/// How long shutdown waits for stores to deliver what they hold.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not root, or missing capabilities.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A credential named in the config is not available.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// An S3 store could not be started (the error names the store).
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A pulse store could not be started (the error names the store).
    #[error(transparent)]
    Pulse(#[from] PulseError),
    /// Standard output could not be set up.
    #[error("cannot start the stdout writer")]
    Stdout(#[source] std::io::Error),
    /// Signal handling could not be set up.
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    /// A command-line value is invalid.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// The CPU list could not be read.
    #[error("cannot read `/sys/devices/system/cpu/possible`")]
    Cpus(#[source] std::io::Error),
    /// The pipeline threads could not be started.
    #[error("cannot start the pipeline threads")]
    Threads(#[source] std::io::Error),
    /// Loading or attaching the probes failed.
    #[error("cannot start capture")]
    Capture(#[from] capture::CaptureError),
}

impl StartError {
    /// Process exit code: 2 for a config the user must fix, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Secret(_) | Self::Plan(_) => 2,
            _ => 1,
        }
    }
}

/// Every configured store, started.
pub struct Stores {
    /// Event stores; each event goes to every one.
    pub events: Vec<Arc<dyn EventStore>>,
    /// Object stores; each object goes to every one.
    pub objects: Vec<Arc<dyn ObjectStore>>,
}

impl Stores {
    /// Starts every store in `config`. Secrets must already resolve.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let mut stdout: Option<Arc<StdoutWriter>> = None;
        let mut stdout_writer = || -> Result<Arc<StdoutWriter>, StartError> {
            if let Some(w) = &stdout {
                return Ok(w.clone());
            }
            let w = StdoutWriter::start(STDOUT_QUEUE_LINES).map_err(StartError::Stdout)?;
            stdout = Some(w.clone());
            Ok(w)
        };
        let mut events: Vec<Arc<dyn EventStore>> = Vec::new();
        for store in &config.services.event_stores {
            match store {
                EventStoreConfig::Stdout { id } => {
                    events.push(Arc::new(StdoutEventStore::new(id, stdout_writer()?)));
                }
                EventStoreConfig::Pulse(p) => events.push(Arc::new(PulseStore::start(p)?)),
            }
        }
        let mut objects: Vec<Arc<dyn ObjectStore>> = Vec::new();
        for store in &config.services.object_stores {
            match store {
                ObjectStoreConfig::Stdout { id } => {
                    objects.push(Arc::new(StdoutObjectStore::new(id, stdout_writer()?)));
                }
                ObjectStoreConfig::S3(s) => objects.push(Arc::new(S3Store::start(s)?)),
            }
        }
        Ok(Self { events, objects })
    }

    /// Delivers what every store holds, waiting at most `deadline` for each.
    pub fn shutdown(&self, deadline: Duration) {
        for store in &self.events {
            store.shutdown(deadline);
            tracing::info!(store = store.id(), stats = ?store.stats(), "event store stopped");
        }
        for store in &self.objects {
            store.shutdown(deadline);
            tracing::info!(store = store.id(), stats = ?store.stats(), "object store stopped");
        }
    }
}

/// How often running counters are logged.
const STATS_EVERY: Duration = Duration::from_secs(30);

/// Runs the agent until SIGINT or SIGTERM: capture → readers → shards → stores.
pub fn run(cli: &Cli) -> Result<(), StartError> {
    privileges::check()?;
    let plan = Plan::build(cli)?;
    let config = &plan.config;
    for (store, key) in config.inline_secrets() {
        tracing::warn!(
            store,
            key,
            "secret written in the config file (`type: text`); prefer `type: env`"
        );
    }
    for (store, key, secret) in config.secrets() {
        secret.resolve(store, key)?;
    }
    let signals = crate::signals::Signals::block().map_err(StartError::Signals)?;
    let stores = Stores::start(config)?;
    let options = plan.capture_options();

    let readers = max_cpu_id().map_err(StartError::Cpus)? + 1;
    let shards = plan.sizes.shards;
    let fanout = Fanout {
        events: stores.events.clone(),
        objects: stores.objects.clone(),
        http: plan.http.clone(),
    };
    let (pipeline, routers) =
        Pipeline::start(PipelineConfig { readers, shards }, wire::decode, fanout)
            .map_err(StartError::Threads)?;
    let mut routers: Vec<Option<Router>> = routers.into_iter().map(Some).collect();
    let capture = Capture::start(options, |cpu| {
        let mut router = routers.get_mut(cpu as usize).and_then(Option::take);
        move |raw: &[u8], record: Record<'_>| {
            if let (Some(router), Some(conn_id)) = (router.as_mut(), wire::conn_id(&record)) {
                router.route(conn_id, &[raw]);
            }
        }
    })?;
    tracing::info!(
        readers,
        shards,
        event_stores = stores.events.len(),
        object_stores = stores.objects.len(),
        direction = plan.capture.direction.name(),
        ignore_loopback = plan.capture.ignore_loopback,
        http = %plan.http.describe(),
        "capture ready"
    );

    let signal = loop {
        if let Some(signal) = signals.wait_timeout(STATS_EVERY) {
            break signal;
        }
        log_stats(&capture, &pipeline.stats());
    };
    tracing::info!(signal, "stopping");
    let kernel_drops = capture.drops();
    let excluded = capture.excluded();
    let counters = capture.reader_counters();
    capture.stop();
    let stats = pipeline.stop();
    stores.shutdown(SHUTDOWN_GRACE);
    log_final(&kernel_drops, &excluded, &counters, &stats);
    Ok(())
}

fn log_stats(capture: &Capture, stats: &PipelineStats) {
    let drops = capture.drops();
    let dropped: u64 = drops.iter().sum();
    let shards = stats.total();
    tracing::info!(
        kernel_dropped = dropped,
        queue_full = stats.queue_full.iter().sum::<u64>(),
        records = shards.records,
        transactions = shards.transactions,
        gap_records = shards.gap_records,
        output_full = shards.output_full,
        "running"
    );
}

/// One final line with every counter, for operators and the benchmark harness.
fn log_final(
    kernel_drops: &[u64],
    excluded: &[u64],
    readers: &[(u32, Arc<capture::ReaderCounters>)],
    stats: &PipelineStats,
) {
    let kernel: serde_json::Map<String, serde_json::Value> = DropReason::ALL
        .iter()
        .zip(kernel_drops)
        .map(|(reason, n)| (reason.name().to_owned(), (*n).into()))
        .collect();
    let excluded: serde_json::Map<String, serde_json::Value> = Exclusion::ALL
        .iter()
        .zip(excluded)
        .map(|(reason, n)| (reason.name().to_owned(), (*n).into()))
        .collect();
    let records: u64 = readers
        .iter()
        .map(|(_, c)| c.records.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let shards = stats.total();
    let summary = serde_json::json!({
        "kernel_drops": kernel,
        "kernel_excluded": excluded,
        "ring_records": records,
        "queue_full": stats.queue_full.iter().sum::<u64>(),
        "shards": shards,
    });
    tracing::info!(counters = %summary, "stopped");
}

/// Highest CPU id that may come online (the per-CPU rings are indexed by it).
fn max_cpu_id() -> std::io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    // The format is a list of ranges: `0-3` or `0,2-5`; the last number is the highest.
    let last = text.trim().rsplit([',', '-']).next().unwrap_or("0");
    last.parse()
        .map_err(|_| std::io::Error::other(format!("cannot parse cpu list `{text}`")))
}
