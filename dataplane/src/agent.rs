//! Start-up and shutdown: privileges, config, secrets, stores, capture — in that
//! order, so that a bad config or a missing credential stops the agent before
//! anything is loaded into the kernel.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tapwire_store::config::SecretError;
use tapwire_store::{StartContext, StoreStartError, Stores};

use tapwire_common::{DropReason, Record, config::Exclusion};

use crate::capture::sendfile::{FileSendCounters, FileSends};
use crate::capture::{self, Capture, RecordSink};
use crate::cli::Cli;
use crate::config::{self, Config, ConfigError};
use crate::pipeline::output::Fanout;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineStats, Router, wire};
use crate::plan::Plan;
use crate::privileges::{self, PrivilegeError};
use crate::signals::Signal;

/// How long stopping may take in all, from the signal to exit: capture stops, the
/// pipeline drains, then every store flushes (in parallel) within what is left.
/// Past it, or on a second SIGINT/SIGTERM, the process exits at once.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);
/// The share of [`SHUTDOWN_DEADLINE`] the stores get, at most: what is left when
/// they start, less this margin for the final log lines.
const EXIT_MARGIN: Duration = Duration::from_secs(1);

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
    /// A store could not be started (the error names the store).
    #[error(transparent)]
    Store(#[from] StoreStartError),
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

/// Loads the config named on the command line, or the embedded default (as
/// [`Plan::build`] does; a reload reads it again).
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
    abort_on_panic();
    privileges::check()?;
    let plan = Plan::build(cli)?;
    let mut config = plan.config.clone();
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
        None => {
            if plan.http.names_metrics() {
                tracing::warn!(
                    "a stack has `http_metrics` but the status server is off \
                     (`--httpd-listen off`): its series are not published"
                );
            }
            None
        }
    };
    let readers = max_cpu_id().map_err(StartError::Cpus)? + 1;
    let shards = plan.sizes.shards;
    let memory_budget = plan
        .sizes
        .memory_budget
        .unwrap_or(crate::pipeline::budget::DEFAULT_MEMORY_BUDGET);
    // The start context (the shared stdout writer) outlives start-up: a reload
    // starts stores with it. Each store's queue, and an S3 store's index and
    // waiting announcements, are sized from the memory budget's split, so a
    // slow store pushes back before bodies run out of budget.
    let split = crate::pipeline::budget::Plan::new(memory_budget, readers, shards);
    let mut store_context = StartContext::new(tapwire_store::stores::StoreMemory {
        queue_bytes: split.store_queue_bytes(),
        index_bytes: split.store_index_bytes(),
        notice_bytes: split.store_notice_bytes(),
    });
    let mut stores = crate::reload::start_stores(
        &config.services,
        &crate::reload::Running::default(),
        &mut store_context,
    )?;
    status.ready.set_stores(crate::reload::readiness(&stores));
    let options = plan.capture_options();

    let fanout = Fanout::new(
        stores.events.clone(),
        stores.objects.clone(),
        Arc::clone(&options.processes),
        plan.http.clone(),
    );
    fanout
        .records
        .set(&stores.events, config.services.record_routes());
    let mut pipeline_config = PipelineConfig::new(readers, shards);
    pipeline_config.memory_budget = memory_budget;
    if let Some(idle) = plan.sizes.idle_timeout {
        pipeline_config.idle_timeout = idle;
    }
    let (pipeline, routers) =
        Pipeline::start(pipeline_config, wire::decode, fanout).map_err(StartError::Threads)?;
    let sizing = pipeline.plan();
    let mut routers: Vec<Option<Router>> = routers.into_iter().map(Some).collect();
    let file_sends = Arc::new(FileSendCounters::default());
    let shed_mark = crate::pipeline::shed_mark(options.overload_percent);
    let capture = Capture::start(options, |cpu| ToShards {
        router: routers.get_mut(cpu as usize).and_then(Option::take),
        shed_mark,
        counters: Arc::clone(&file_sends),
        sends: FileSends::default(),
    })?;
    tracing::info!(
        readers,
        shards = sizing.shards,
        memory_budget = pipeline_config.memory_budget,
        frame_queue_bytes = sizing.frame_queue_bytes,
        event_stores = stores.events.len(),
        object_stores = stores.objects.len(),
        direction = plan.capture.direction.name(),
        ignore_loopback = plan.capture.ignore_loopback,
        http = %plan.http.describe(),
        "capture ready"
    );

    status.ready.set_attached(true);
    // Start-up (BTF, the probes' object, every TLS file's symbol tables) is
    // done: give what it freed back to the system now, rather than keep it
    // mapped for as long as this thread stays idle.
    // SAFETY: `mi_collect` only frees memory mimalloc holds and nothing
    // references; harmless when mimalloc is not the allocator (tests).
    unsafe { libmimalloc_sys::mi_collect(true) };

    let mut reloads = crate::status::gather::Reloads::default();
    let mut logged = Instant::now();
    let signal = loop {
        match signals.wait_timeout(PUBLISH_EVERY) {
            Some(Signal::Hangup) => {
                let result = reload(
                    cli,
                    &mut config,
                    &mut stores,
                    &mut store_context,
                    pipeline.store_slots(),
                    &mut reloads,
                );
                status.ready.set_stores(crate::reload::readiness(&stores));
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
    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    if let Err(error) = signals.watch_stop(deadline) {
        tracing::warn!(%error, "cannot start the stop watchdog; a second signal will not force the exit");
    }
    tracing::info!(
        signal = signal.name(),
        deadline_s = SHUTDOWN_DEADLINE.as_secs(),
        "stopping"
    );
    let kernel_drops = capture.drops();
    let ring_full_per_cpu = capture.ring_full_per_cpu();
    let excluded = capture.excluded();
    let counters = capture.reader_counters();
    let late_files = capture.late_files();
    let kernel_maps = capture.kernel_maps();
    let filtered = capture.filtered();
    // The kernel takes seconds to remove the probes on a busy machine (a grace
    // period per uprobe), so they are detached beside the drain and the stores'
    // flush rather than after them: a stop that waits out its deadline on a
    // stalled store must not then also wait for the kernel. Their counters were
    // read above.
    let probes = capture.stop();
    let detach = std::thread::Builder::new()
        .name("detach".into())
        .spawn(move || drop(probes));
    let stats = pipeline.stop();
    stores.shutdown(
        deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(EXIT_MARGIN),
    );
    log_final(
        &kernel_drops,
        &ring_full_per_cpu,
        &excluded,
        &counters,
        &stats,
        &late_files,
        &file_sends,
        &kernel_maps,
        filtered,
    );
    crate::signals::stop_finished();
    match detach {
        Ok(detach) => {
            let _ = detach.join();
        }
        // The probes went with the failed spawn's closure: already detached.
        Err(error) => tracing::warn!(%error, "cannot start the detach thread"),
    }
    Ok(())
}

/// Reloads the config (SIGHUP), logging and counting the outcome; returns the
/// message `tapwire reload-config` shows.
fn reload(
    cli: &Cli,
    config: &mut Config,
    stores: &mut Stores,
    context: &mut StartContext,
    slots: &[Arc<Mutex<Fanout>>],
    reloads: &mut crate::status::gather::Reloads,
) -> Result<String, String> {
    tracing::info!("reloading the config");
    match crate::reload::reload(cli, config, stores, context, slots) {
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
    let late = capture.late_files();
    tracing::info!(
        kernel_dropped = dropped,
        late_tls_files = late.live_window.files,
        live_window_p50_us = late.live_window.p50_us,
        live_window_p99_us = late.live_window.p99_us,
        pushback_waits = routing.pushback_waits,
        records = shards.records,
        transactions = shards.transactions,
        gap_records = shards.gap_records,
        body_shed_bytes = shards.body_shed_bytes,
        connections = shards.connections,
        budget_used = stats.budget_used,
        "running"
    );
}

/// One final line with every counter, for operators and the benchmark harness.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per source of counters, each read before capture stops"
)]
fn log_final(
    kernel_drops: &[u64],
    kernel_drops_per_cpu: &[u64],
    excluded: &[u64],
    readers: &[(u32, Arc<capture::ReaderCounters>)],
    stats: &PipelineStats,
    late_files: &capture::LateFiles,
    file_sends: &FileSendCounters,
    kernel_maps: &[(String, capture::sweep::MapCount)],
    filtered: capture::Filtered,
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
        "filtered_programs": filtered.programs,
        "filtered_late": filtered.late_events,
        "ring_records": records,
        "routing": stats.routing(),
        "shards": shards,
        "late_files": late_files,
        "sendfile": file_sends,
        "kernel_maps": kernel_maps
            .iter()
            .map(|(name, c)| (name.clone(), serde_json::json!(c)))
            .collect::<serde_json::Map<_, _>>(),
    });
    tracing::info!(counters = %summary, "stopped");
}

/// Makes a panic in any thread abort the process after it is reported: a
/// thread that died would otherwise leave an agent that looks healthy and
/// captures nothing, where a supervisor restarts an aborted one (and the spool
/// makes the restart lossless).
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(panic = %info, "a thread panicked; aborting");
        std::process::abort();
    }));
}

/// Highest CPU id that may come online (the per-CPU rings are indexed by it).
fn max_cpu_id() -> std::io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    // The format is a list of ranges: `0-3` or `0,2-5`; the last number is the highest.
    let last = text.trim().rsplit([',', '-']).next().unwrap_or("0");
    last.parse()
        .map_err(|_| std::io::Error::other(format!("cannot parse cpu list `{text}`")))
}

/// A reader's records, routed to the shards that own their connections.
struct ToShards {
    router: Option<Router>,
    /// Ring fill, in percent, past which a reader waiting for a shard
    /// presses ([`Router::watch`]).
    shed_mark: u32,
    counters: Arc<FileSendCounters>,
    sends: FileSends,
}

impl RecordSink for ToShards {
    fn record(&mut self, raw: &[u8], record: Record<'_>) {
        let Some(router) = self.router.as_mut() else {
            return;
        };
        if let Record::FileSend(rec) = &record {
            // Bytes sent from a file: read back and routed as data.
            self.sends.expand(rec, &self.counters, |parts| {
                router.route(rec.conn_id, parts)
            });
            return;
        }
        match wire::conn_id(&record) {
            Some(conn_id) => router.route(conn_id, &[raw]),
            // A process exit releases its connections in every shard.
            None if matches!(record, Record::ProcExit(_)) => router.broadcast(&[raw]),
            None => {}
        }
    }

    fn drained(&mut self) {
        if let Some(router) = self.router.as_mut() {
            router.wake_pending();
        }
    }

    fn passed(&mut self, at_ns: u64) {
        if let Some(router) = self.router.as_ref() {
            router.drained_until(at_ns);
        }
    }

    fn watch(&mut self, fill: crate::capture::ringbuf::RingFill) {
        if let Some(router) = self.router.as_mut() {
            router.watch(fill, self.shed_mark);
        }
    }
}
