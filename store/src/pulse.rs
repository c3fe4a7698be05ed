//! The `type: pulse` event store: NDJSON batches POSTed to a Pulse service.
//!
//! `emit` pushes onto a bounded queue (`queue_capacity` events); a sender thread
//! gathers batches of up to `batch_max_events`, or whatever arrived within
//! `batch_max_delay_ms` of a batch's first event, and POSTs each to
//! `{endpoint}/events` with `Authorization: Bearer <token>`. A batch that fails
//! with a connection error, a timeout, 408, 429 or 5xx is sent again after an
//! exponential backoff with jitter, for as long as it takes: meanwhile the queue
//! fills and what does not fit is dropped and counted. Any other answer drops the
//! batch (counted). Delivery is at least once. The wire format is in
//! `docs/pulse.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use crate::config::{EventKind, KindError, Secret, SecretError, StoreKind};
use crate::counters::{Counters, Loss};
use crate::stores::{StartContext, StoreStartError};
use crate::{EventStore, StoreStats, backoff};

/// The path events are POSTed to, under the configured endpoint.
pub const EVENTS_PATH: &str = "/events";
/// The body's media type: one JSON object per line.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// Header carrying the number of events in the batch.
pub const COUNT_HEADER: &str = "x-tapwire-events";
/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one POST may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry delay.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest retry delay.
const RETRY_CAP: Duration = Duration::from_secs(5);
/// How often an idle sender looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Failed attempts logged at `warn` (then one in this many) per batch.
const LOG_EVERY: u32 = 10;

/// A `type: pulse` event store. Keys are documented in `docs/pulse.md`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PulseConfig {
    /// Store id (the entry's `id`).
    #[serde(skip)]
    pub id: String,
    /// Base URL; events are POSTed to `{endpoint}/events` (`url` is accepted too).
    #[serde(alias = "url")]
    pub endpoint: String,
    /// Bearer token, if any.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Events per POST at most, at least 1 (default 500).
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Longest an event waits before its batch is sent, in ms (default 1000).
    #[serde(default = "default_batch_max_delay_ms")]
    pub batch_max_delay_ms: u64,
    /// Events buffered in memory at most, at least 1; past it new events are
    /// dropped and counted (default 100000).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_batch_max_events() -> usize {
    500
}

fn default_batch_max_delay_ms() -> u64 {
    1000
}

fn default_queue_capacity() -> usize {
    100_000
}

impl PulseConfig {
    /// The URL batches are POSTed to; `endpoint` must be an http(s) URL.
    fn events_url(&self) -> Result<reqwest::Url, KindError> {
        let base = self.endpoint.trim_end_matches('/');
        reqwest::Url::parse(&format!("{base}{EVENTS_PATH}"))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                KindError::value(
                    "endpoint",
                    format!(
                        "endpoint `{}` is not an http:// or https:// URL",
                        self.endpoint
                    ),
                )
            })
    }
}

impl StoreKind for PulseConfig {
    const NAME: &'static str = "pulse";
    const ALIASES: &'static [&'static str] = &["url"];

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn check(&self) -> Result<(), KindError> {
        let url = self.events_url()?;
        if let Some(path) = &self.ca_file {
            if url.scheme() != "https" {
                return Err(KindError::value(
                    "ca_file",
                    "ca_file applies only to an https:// endpoint".to_owned(),
                ));
            }
            crate::s3::config::read_ca_file("ca_file", path)?;
        }
        for (key, value) in [
            ("batch_max_events", self.batch_max_events),
            ("queue_capacity", self.queue_capacity),
        ] {
            if value == 0 {
                return Err(KindError::value(key, format!("{key} must be at least 1")));
            }
        }
        Ok(())
    }

    fn summary(&self) -> String {
        let token = self
            .token
            .as_ref()
            .map_or("none".to_owned(), Secret::describe);
        format!(
            "pulse endpoint={} token={token} batch_max_events={} batch_max_delay_ms={} \
             queue_capacity={} ca_file={}",
            self.endpoint,
            self.batch_max_events,
            self.batch_max_delay_ms,
            self.queue_capacity,
            self.ca_file.as_deref().unwrap_or("none"),
        )
    }

    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        self.token.iter().map(|t| ("token", t)).collect()
    }
}

impl EventKind for PulseConfig {
    fn start(&self, _: &mut StartContext) -> Result<Arc<dyn EventStore>, StoreStartError> {
        Ok(Arc::new(PulseStore::start(self)?))
    }
}

/// A pulse store failed to start.
#[derive(Debug, thiserror::Error)]
pub enum PulseError {
    /// The token could not be read from the environment.
    #[error("store `{store}`: cannot read the token")]
    Token {
        /// Store id.
        store: String,
        /// What is missing.
        #[source]
        source: SecretError,
    },
    /// A key's value is refused (the same check the config loader makes).
    #[error("store `{store}`: {problem}")]
    Config {
        /// Store id.
        store: String,
        /// What is wrong.
        problem: KindError,
    },
    /// The HTTP client could not be built.
    #[error("store `{store}`: cannot build the HTTP client")]
    Client {
        /// Store id.
        store: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The sender thread or its runtime could not be started.
    #[error("store `{store}`: cannot start the sender thread")]
    Thread {
        /// Store id.
        store: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The `type: pulse` event store.
#[derive(Debug)]
pub struct PulseStore {
    id: String,
    tx: SyncSender<Bytes>,
    counters: Arc<Counters>,
    control: Arc<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Control {
    stop: AtomicBool,
    /// Set by `shutdown`: past it, failing batches are dropped instead of retried.
    deadline: Mutex<Option<Instant>>,
}

impl Control {
    fn past_deadline(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            && self
                .deadline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|d| Instant::now() >= d)
    }
}

impl PulseStore {
    /// Resolves the token, checks the endpoint and starts the sender thread. Makes
    /// no request: an unreachable Pulse is retried, not fatal.
    pub fn start(cfg: &PulseConfig) -> Result<Self, PulseError> {
        let store = || cfg.id.clone();
        let token = cfg
            .token
            .as_ref()
            .map(|t| t.resolve(&cfg.id, "token"))
            .transpose()
            .map_err(|source| PulseError::Token {
                store: store(),
                source,
            })?;
        let refused = |problem| PulseError::Config {
            store: store(),
            problem,
        };
        cfg.check().map_err(refused)?;
        let parsed = cfg.events_url().map_err(refused)?;
        let url = parsed.to_string();
        if parsed.scheme() == "http" {
            tracing::warn!(store = %cfg.id, url = %url, "PLAIN HTTP: events and the bearer token travel unencrypted; use it only on a trusted local network");
        }
        let ca_pem = cfg
            .ca_file
            .as_deref()
            .map(|path| crate::s3::config::read_ca_file("ca_file", path))
            .transpose()
            .map_err(refused)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would turn the POST into a GET whose 2xx would count the
            // batch as delivered: a redirect is an answer like any other 3xx.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tapwire/", env!("CARGO_PKG_VERSION")));
        for cert in ca_pem
            .as_deref()
            .map(reqwest::Certificate::from_pem_bundle)
            .transpose()
            .map_err(|source| PulseError::Client {
                store: store(),
                source,
            })?
            .unwrap_or_default()
        {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|source| PulseError::Client {
            store: store(),
            source,
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| PulseError::Thread {
                store: store(),
                source,
            })?;
        let (tx, rx) = sync_channel(cfg.queue_capacity);
        let counters = Arc::new(Counters::default());
        let control = Arc::new(Control::default());
        let sender = Sender {
            store_id: cfg.id.clone(),
            url: parsed,
            authorization: token.map(|t| format!("Bearer {t}")),
            http,
            runtime,
            rx,
            counters: Arc::clone(&counters),
            control: Arc::clone(&control),
            max_events: cfg.batch_max_events,
            max_delay: Duration::from_millis(cfg.batch_max_delay_ms),
        };
        let thread = std::thread::Builder::new()
            .name(format!("pulse-{}", cfg.id))
            .spawn(move || {
                crate::room::store_thread();
                sender.run();
            })
            .map_err(|source| PulseError::Thread {
                store: store(),
                source,
            })?;
        tracing::info!(store = %cfg.id, url = %url, "pulse store started");
        Ok(Self {
            id: cfg.id.clone(),
            tx,
            counters,
            control,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl EventStore for PulseStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn emit(&self, event: Bytes) {
        Counters::add(&self.counters.here().accepted, 1);
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.lose(Loss::QueueFull, 1);
            }
        }
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    fn shutdown(&self, deadline: Duration) {
        *self
            .control
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + deadline);
        self.control.stop.store(true, Ordering::Release);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for PulseStore {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        let mut deadline = self
            .control
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if deadline.is_none() {
            *deadline = Some(Instant::now());
        }
    }
}

/// The sender thread's state.
struct Sender {
    store_id: String,
    url: reqwest::Url,
    authorization: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    rx: Receiver<Bytes>,
    counters: Arc<Counters>,
    control: Arc<Control>,
    max_events: usize,
    max_delay: Duration,
}

/// What one POST attempt came to.
enum Outcome {
    Delivered,
    Retry(String),
    Refused(String),
}

impl Sender {
    fn run(self) {
        let mut batch: Vec<Bytes> = Vec::with_capacity(self.max_events);
        loop {
            match self.rx.recv_timeout(POLL_INTERVAL) {
                Ok(event) => batch.push(event),
                Err(RecvTimeoutError::Timeout) => {
                    if self.control.stop.load(Ordering::Acquire) {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let flush_at = Instant::now() + self.max_delay;
            while batch.len() < self.max_events {
                let now = Instant::now();
                if now >= flush_at || self.control.stop.load(Ordering::Acquire) {
                    while batch.len() < self.max_events {
                        match self.rx.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    break;
                }
                match self.rx.recv_timeout(flush_at - now) {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            self.send(&mut batch);
        }
        // Stopping: deliver what is still queued, until the deadline.
        while let Ok(event) = self.rx.try_recv() {
            batch.push(event);
            if batch.len() == self.max_events {
                self.send(&mut batch);
            }
        }
        self.send(&mut batch);
    }

    /// Sends `batch` until delivered, refused, or the shutdown deadline passes;
    /// leaves it empty.
    fn send(&self, batch: &mut Vec<Bytes>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut body = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum());
        for event in batch.drain(..) {
            body.extend_from_slice(&event);
            body.push(b'\n');
        }
        let body = Bytes::from(body);
        let mut attempt: u32 = 0;
        loop {
            if self.control.past_deadline() {
                tracing::warn!(store = %self.store_id, events = n, "shutdown deadline passed; dropping batch");
                self.counters.lose(Loss::Deadline, n);
                return;
            }
            match self.post(&body, n) {
                Outcome::Delivered => {
                    Counters::add(&self.counters.here().stored, n);
                    Counters::add(&self.counters.here().bytes, body.len() as u64);
                    return;
                }
                Outcome::Refused(reason) => {
                    Counters::add(&self.counters.here().errors, 1);
                    self.counters.lose(Loss::Refused, n);
                    tracing::error!(store = %self.store_id, events = n, reason = %reason, "pulse refused the batch; dropping it");
                    return;
                }
                Outcome::Retry(reason) => {
                    Counters::add(&self.counters.here().errors, 1);
                    if attempt.is_multiple_of(LOG_EVERY) {
                        tracing::warn!(store = %self.store_id, events = n, attempt, reason = %reason, "pulse batch failed; retrying");
                    }
                }
            }
            let delay = backoff::delay(attempt, RETRY_BASE, RETRY_CAP);
            let wake = Instant::now() + delay;
            while Instant::now() < wake && !self.control.past_deadline() {
                std::thread::sleep(
                    POLL_INTERVAL.min(wake.saturating_duration_since(Instant::now())),
                );
            }
            attempt = attempt.saturating_add(1);
        }
    }

    fn post(&self, body: &Bytes, n: u64) -> Outcome {
        let mut req = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(COUNT_HEADER, n)
            .body(body.clone());
        if let Some(auth) = &self.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let result = self.runtime.block_on(async {
            let resp = req.send().await?;
            let status = resp.status();
            // Read the body so the connection can be reused.
            let _ = resp.bytes().await;
            Ok::<_, reqwest::Error>(status)
        });
        match result {
            Ok(status) if status.is_success() => Outcome::Delivered,
            Ok(status)
                if status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                Outcome::Retry(format!("HTTP {}", status.as_u16()))
            }
            Ok(status) => Outcome::Refused(format!("HTTP {}", status.as_u16())),
            Err(error) => Outcome::Retry(error.to_string()),
        }
    }
}
