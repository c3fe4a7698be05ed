//! Start-up and shutdown: privileges, config, secrets, stores, capture — in that
//! order, so that a bad config or a missing credential stops the agent before
//! anything is loaded into the kernel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tapwire_store::config::{EventStoreConfig, ObjectStoreConfig, SecretError};
use tapwire_store::stdout::{
    STDOUT_QUEUE_LINES, StdoutEventStore, StdoutObjectStore, StdoutWriter,
};
use tapwire_store::{EventStore, ObjectStore, PulseError, PulseStore, S3Error, S3Store};

use tapwire_common::{DropReason, Record, config::Exclusion};

use crate::capture::{self, Capture, Selection};
use crate::cli::Cli;
use crate::config::{self, Config, ConfigError, Services};
use crate::pipeline::output::Fanout;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineStats, Router, wire};
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
    /// The status server could not listen.
    #[error("cannot start the status server on `{addr}` (`--httpd-listen`)")]
    Status {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Signal handling could not be set up.
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    /// A capture knob from the environment is invalid.
    #[error("invalid capture option")]
    Options(#[source] anyhow::Error),
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
            Self::Config(_) | Self::Secret(_) => 2,
            _ => 1,
        }
    }
}

/// Every configured store, started.
#[derive(Default)]
pub struct Stores {
    /// Event stores; each event goes to every one.
    pub events: Vec<Arc<dyn EventStore>>,
    /// Object stores; each object goes to every one.
    pub objects: Vec<Arc<dyn ObjectStore>>,
    /// The S3 stores among `objects`, for their readiness and spool levels.
    pub s3: Vec<Arc<S3Store>>,
    /// The writer the stdout stores share.
    stdout: Option<Arc<StdoutWriter>>,
}

/// Stores a reload keeps running, with the config each was started from.
#[derive(Default)]
pub struct Running {
    events: Vec<(EventStoreConfig, Arc<dyn EventStore>)>,
    objects: Vec<(ObjectStoreConfig, Arc<dyn ObjectStore>)>,
    s3: Vec<Arc<S3Store>>,
    stdout: Option<Arc<StdoutWriter>>,
}

impl Stores {
    /// Starts every store in `config`. Secrets must already resolve.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_keeping(config, &Running::default())
    }

    /// Starts the stores of `config`, reusing those in `running` whose config is
    /// the same (a reload keeps them untouched).
    pub fn start_keeping(config: &Config, running: &Running) -> Result<Self, StartError> {
        let mut stdout: Option<Arc<StdoutWriter>> = running.stdout.clone();
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
            if let Some((_, kept)) = running.events.iter().find(|(c, _)| c == store) {
                events.push(Arc::clone(kept));
                continue;
            }
            match store {
                EventStoreConfig::Stdout { id } => {
                    events.push(Arc::new(StdoutEventStore::new(id, stdout_writer()?)));
                }
                EventStoreConfig::Pulse(p) => events.push(Arc::new(PulseStore::start(p)?)),
            }
        }
        let mut objects: Vec<Arc<dyn ObjectStore>> = Vec::new();
        let mut s3 = Vec::new();
        for store in &config.services.object_stores {
            if let Some((_, kept)) = running.objects.iter().find(|(c, _)| c == store) {
                objects.push(Arc::clone(kept));
                s3.extend(running.s3.iter().filter(|s| s.id() == kept.id()).cloned());
                continue;
            }
            match store {
                ObjectStoreConfig::Stdout { id } => {
                    objects.push(Arc::new(StdoutObjectStore::new(id, stdout_writer()?)));
                }
                ObjectStoreConfig::S3(s) => {
                    let store = Arc::new(S3Store::start(s)?);
                    s3.push(Arc::clone(&store));
                    objects.push(store);
                }
            }
        }
        Ok(Self {
            events,
            objects,
            s3,
            stdout,
        })
    }

    /// The stores whose config is the same in `old` (which `self` was started
    /// from) and `new`; the others are stopped after delivering what they hold,
    /// waiting at most `grace` for each.
    pub fn keep_unchanged(&self, old: &Services, new: &Services, grace: Duration) -> Running {
        let mut running = Running {
            stdout: self.stdout.clone(),
            ..Running::default()
        };
        for (cfg, store) in old.event_stores.iter().zip(&self.events) {
            if new.event_stores.contains(cfg) {
                running.events.push((cfg.clone(), Arc::clone(store)));
            } else {
                store.shutdown(grace);
                tracing::info!(store = store.id(), stats = ?store.stats(), "event store replaced");
            }
        }
        for (cfg, store) in old.object_stores.iter().zip(&self.objects) {
            if new.object_stores.contains(cfg) {
                running.objects.push((cfg.clone(), Arc::clone(store)));
            } else {
                store.shutdown(grace);
                tracing::info!(store = store.id(), stats = ?store.stats(), "object store replaced");
            }
        }
        running.s3 = self
            .s3
            .iter()
            .filter(|s| running.objects.iter().any(|(_, o)| o.id() == s.id()))
            .cloned()
            .collect();
        running
    }

    /// Only the stores in `running` (when a reload could restart nothing else).
    pub fn from_running(running: Running) -> Self {
        Self {
            events: running.events.into_iter().map(|(_, s)| s).collect(),
            objects: running.objects.into_iter().map(|(_, s)| s).collect(),
            s3: running.s3,
            stdout: running.stdout,
        }
    }

    /// What `/readyz` asks each store: S3 stores whether they reached their
    /// endpoint; stdout and pulse stores are ready once started.
    pub fn readiness(&self) -> Vec<(&'static str, String, crate::status::ready::Reached)> {
        let mut out: Vec<(&'static str, String, crate::status::ready::Reached)> = Vec::new();
        for store in &self.events {
            out.push(("event", store.id().to_owned(), Box::new(|| true)));
        }
        for store in &self.objects {
            let reached: crate::status::ready::Reached =
                match self.s3.iter().find(|s| s.id() == store.id()) {
                    Some(s3) => {
                        // Weak: a reload must be able to close a replaced store.
                        let s3 = Arc::downgrade(s3);
                        Box::new(move || s3.upgrade().is_some_and(|s| s.reached_endpoint()))
                    }
                    None => Box::new(|| true),
                };
            out.push(("object", store.id().to_owned(), reached));
        }
        out
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

/// Loads the config named on the command line, or the embedded default.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    match &cli.config {
        Some(path) => config::load_file(path),
        None => config::parse(config::DEFAULT_NAME, config::DEFAULT_YAML),
    }
}

/// How often running counters are logged.
const STATS_EVERY: Duration = Duration::from_secs(30);
/// How often counters are published to the status server.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Runs the agent until SIGINT or SIGTERM: capture → readers → shards → stores.
pub fn run(cli: &Cli) -> Result<(), StartError> {
    privileges::check()?;
    let mut config = load_config(cli)?;
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
    // The status server first, so probes see why the agent is not ready yet.
    let status = Arc::new(crate::status::Status::default());
    let _status_server = match cli.httpd_listen.unwrap_or_default().addr() {
        Some(addr) => Some(
            crate::status::StatusServer::start(addr, Arc::clone(&status))
                .map_err(|source| StartError::Status { addr, source })?,
        ),
        None => None,
    };
    let mut stores = Stores::start(&config)?;
    status.ready.set_stores(stores.readiness());
    let selection = Selection {
        pids: cli.pids.clone(),
        exes: cli.exes.clone(),
        cgroups: cli.cgroups.clone(),
    };
    let options = capture::debug::options(selection).map_err(StartError::Options)?;

    let readers = max_cpu_id().map_err(StartError::Cpus)? + 1;
    let shards = cli.shards.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let fanout = Fanout {
        events: stores.events.clone(),
        objects: stores.objects.clone(),
    };
    let mut pipeline_config = PipelineConfig::new(readers, shards);
    if let Some(budget) = cli.memory_budget.or(config.tapwire.memory_budget) {
        pipeline_config.memory_budget = usize::try_from(budget.0).unwrap_or(usize::MAX);
    }
    if let Some(idle) = config.tapwire.idle_timeout {
        pipeline_config.idle_timeout = Duration::from_secs(idle.0);
    }
    let (pipeline, routers) =
        Pipeline::start(pipeline_config, wire::decode, fanout).map_err(StartError::Threads)?;
    let plan = pipeline.plan();
    let mut routers: Vec<Option<Router>> = routers.into_iter().map(Some).collect();
    let capture = Capture::start(options, |cpu| {
        let mut router = routers.get_mut(cpu as usize).and_then(Option::take);
        move |raw: &[u8], record: Record<'_>| {
            let Some(router) = router.as_mut() else {
                return;
            };
            match wire::conn_id(&record) {
                Some(conn_id) => router.route(conn_id, &[raw]),
                // A process exit releases its connections in every shard.
                None if matches!(record, Record::ProcExit(_)) => router.broadcast(&[raw]),
                None => {}
            }
        }
    })?;
    tracing::info!(
        readers,
        shards = plan.shards,
        memory_budget = pipeline_config.memory_budget,
        frame_queue_bytes = plan.frame_queue_bytes,
        event_stores = stores.events.len(),
        object_stores = stores.objects.len(),
        "capture ready"
    );

    status.ready.set_attached(true);

    let mut reloads = crate::status::gather::Reloads::default();
    let mut logged = Instant::now();
    let signal = loop {
        match signals.wait_timeout(PUBLISH_EVERY) {
            Some("SIGHUP") => {
                let result = reload(
                    cli,
                    &mut config,
                    &mut stores,
                    pipeline.store_slots(),
                    &mut reloads,
                );
                status.ready.set_stores(stores.readiness());
                status.reloaded(result);
            }
            Some(signal) => break signal,
            None => {}
        }
        let stats = pipeline.stats();
        status.publish(crate::status::gather::gather(
            &capture, &stats, &stores, reloads,
        ));
        if logged.elapsed() >= STATS_EVERY {
            log_stats(&capture, &stats);
            crate::logging::log_suppressed();
            logged = Instant::now();
        }
    };
    status.ready.set_attached(false);
    tracing::info!(signal, "stopping");
    let kernel_drops = capture.drops();
    let ring_full_per_cpu = capture.ring_full_per_cpu();
    let excluded = capture.excluded();
    let counters = capture.reader_counters();
    capture.stop();
    let stats = pipeline.stop();
    stores.shutdown(SHUTDOWN_GRACE);
    log_final(
        &kernel_drops,
        &ring_full_per_cpu,
        &excluded,
        &counters,
        &stats,
    );
    Ok(())
}

/// Reloads the config (SIGHUP), logging and counting the outcome; returns the
/// message `tapwire reload-config` shows.
fn reload(
    cli: &Cli,
    config: &mut Config,
    stores: &mut Stores,
    slots: &[Arc<std::sync::Mutex<Fanout>>],
    reloads: &mut crate::status::gather::Reloads,
) -> Result<String, String> {
    tracing::info!("reloading the config");
    match crate::reload::reload(cli, config, stores, slots) {
        Ok(outcome) => {
            reloads.ok += 1;
            let message = if outcome.stopped.is_empty() && outcome.started.is_empty() {
                "config reloaded: stores unchanged".to_owned()
            } else {
                format!(
                    "config reloaded: stores stopped [{}], started [{}]",
                    outcome.stopped.join(", "),
                    outcome.started.join(", ")
                )
            };
            tracing::info!(stopped = ?outcome.stopped, started = ?outcome.started, "{message}");
            Ok(message)
        }
        Err(err) => {
            reloads.failed += 1;
            let message = crate::capture::loader::error_chain(&err);
            tracing::error!(error = %message, "config reload refused; the previous config keeps running");
            Err(message)
        }
    }
}

fn log_stats(capture: &Capture, stats: &PipelineStats) {
    let drops = capture.drops();
    let dropped: u64 = drops.iter().sum();
    let shards = stats.total();
    let routing = stats.routing();
    tracing::info!(
        kernel_dropped = dropped,
        pushback_waits = routing.pushback_waits,
        records = shards.records,
        transactions = shards.transactions,
        gap_records = shards.gap_records,
        body_shed_bytes = shards.body_shed_bytes,
        budget_used = stats.budget_used,
        "running"
    );
}

/// One final line with every counter, for operators and the benchmark harness.
fn log_final(
    kernel_drops: &[u64],
    kernel_drops_per_cpu: &[u64],
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
    // CPUs whose ring overflowed, by CPU id.
    let per_cpu: serde_json::Map<String, serde_json::Value> = kernel_drops_per_cpu
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(cpu, n)| (cpu.to_string(), (*n).into()))
        .collect();
    let summary = serde_json::json!({
        "kernel_drops": kernel,
        "kernel_ring_full_per_cpu": per_cpu,
        "kernel_excluded": excluded,
        "ring_records": records,
        "routing": stats.routing(),
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
