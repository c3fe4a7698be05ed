//! Drains the spool to S3: batches of the oldest entries, a bounded number of
//! uploads in flight, retries with backoff.
//!
//! Each entry is retried until it is stored while the failure is transient (5xx,
//! throttling, timeouts, connection errors): the object waits on disk, so an outage
//! costs disk, not memory, and loses nothing within the spool's limit.
//!
//! A set-up error (credentials, permissions, a missing or moved bucket, a proxy
//! answering instead of S3: [`ClientError::is_setup`]) is the store's fault, not
//! the object's: the object goes back to the queue and the whole store pauses,
//! then sends one object as a probe, with a backoff growing to [`SETUP_RETRY_CAP`];
//! the first success resumes full speed. No restart is needed once the set-up is
//! fixed. Any other refusal (a 4xx the object itself causes) drops the object,
//! counted. Error lines are rate-limited.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::client::{ClientError, S3Client};
use super::multipart::{self, MemoryBudget, MultipartError};
use crate::announce::Announcer;
use crate::backoff;
use crate::counters::{Counters, Loss};
use crate::ratelog::LogLimit;
use crate::spool::{Entry, Spool};

/// First retry delay after a transient failure.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay: also the longest an outage outlasts its end before
/// uploads resume.
const RETRY_CAP: Duration = Duration::from_secs(4);
/// First pause of the store after a set-up error.
const SETUP_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest pause between probes while the set-up stays broken: also the longest
/// a fixed set-up waits before uploads resume.
pub const SETUP_RETRY_CAP: Duration = Duration::from_secs(15);
/// At most one error line per this interval per kind of failure.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Objects up to this size are read from the spool on the uploader's own
/// thread; larger ones on a blocking thread.
const INLINE_READ_BYTES: u64 = 64 * 1024;
/// How often an idle uploader looks at the spool and its stop flag even without a
/// wake-up.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// One object's upload failure.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The spool file could not be read.
    #[error("cannot read the spool file `{path}`")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The single PUT failed.
    #[error("PUT failed")]
    Put(#[source] ClientError),
    /// The multipart upload failed.
    #[error("multipart upload failed")]
    Multipart(#[source] MultipartError),
}

impl UploadError {
    fn client_error(&self) -> Option<&ClientError> {
        match self {
            Self::Read { .. } => None,
            Self::Put(e) => Some(e),
            Self::Multipart(e) => e.client_error(),
        }
    }

    /// Worth retrying.
    pub fn is_transient(&self) -> bool {
        self.client_error().is_some_and(ClientError::is_transient)
    }

    /// The store's set-up is at fault, not the object.
    pub fn is_setup(&self) -> bool {
        self.client_error().is_some_and(ClientError::is_setup)
    }

    /// The S3 error code or transport reason, for logs.
    pub fn code(&self) -> &str {
        self.client_error()
            .map_or("spool read failed", ClientError::code)
    }
}

/// Shared between the store handle and the uploader task.
#[derive(Debug, Default)]
pub struct Control {
    /// Wakes the uploader: new spool entries, or time to halt.
    pub wake: Arc<Notify>,
    /// Stop now: in-flight uploads are abandoned (their files stay in the spool).
    pub halt: AtomicBool,
    /// Set-up errors have paused uploads: waiting for the spool to drain is
    /// pointless (set by the uploader, read by `shutdown`; Relaxed, a hint).
    pub paused: AtomicBool,
}

/// The uploader's settings and shared state.
#[derive(Debug)]
pub struct Uploader {
    /// Store id, for logs.
    pub store_id: String,
    /// The client.
    pub client: Arc<S3Client>,
    /// The spool to drain.
    pub spool: Arc<Spool>,
    /// The store's counters.
    pub counters: Arc<Counters>,
    /// Wake-up and halt.
    pub control: Arc<Control>,
    /// Uploads in flight at most.
    pub concurrency: usize,
    /// Objects this size or larger go up as multipart uploads.
    pub multipart_threshold: u64,
    /// Multipart part size.
    pub part_bytes: u64,
    /// Object bytes in memory across uploads in flight.
    pub memory: MemoryBudget,
    /// Rate limits for retry, set-up and refusal logs.
    pub logs: UploadLogs,
    /// Tells the requests waiting on an upload that it is stored.
    pub announcer: Arc<Announcer>,
}

/// The uploader's log limiters.
#[derive(Debug)]
pub struct UploadLogs {
    retry: LogLimit,
    setup: LogLimit,
    refused: LogLimit,
}

impl Default for UploadLogs {
    fn default() -> Self {
        Self {
            retry: LogLimit::new(LOG_INTERVAL),
            setup: LogLimit::new(LOG_INTERVAL),
            refused: LogLimit::new(LOG_INTERVAL),
        }
    }
}

/// How one upload task ended.
enum Outcome {
    /// Stored, dropped, or given back because of a halt.
    Settled,
    /// Given back to the queue: the store's set-up is broken.
    Setup(UploadError),
}

/// The store-wide pause after set-up errors.
#[derive(Default)]
struct Pause {
    /// Set-up failures in a row.
    failures: u32,
    /// No upload starts before this.
    until: Option<Instant>,
    /// A probe is in flight; no other upload starts.
    probing: bool,
}

impl Uploader {
    /// Runs until halted.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        let mut pause = Pause::default();
        loop {
            if this.control.halt.load(Ordering::Acquire) {
                break;
            }
            while let Some(done) = tasks.try_join_next() {
                this.settle(done.ok(), &mut pause);
            }
            this.announce_ready();
            let now = Instant::now();
            let paused = pause.until.is_some_and(|until| now < until);
            let free = if paused || (pause.probing && !tasks.is_empty()) {
                0
            } else if pause.failures > 0 {
                // The pause is over: one object probes the set-up.
                pause.probing = true;
                1usize.saturating_sub(tasks.len())
            } else {
                this.concurrency.saturating_sub(tasks.len())
            };
            if free > 0 {
                for entry in this.spool.take_batch(free) {
                    let this = Arc::clone(&this);
                    tasks.spawn(async move { this.upload_entry(entry).await });
                }
            }
            let wait = pause.until.map_or(IDLE_POLL, |until| {
                until.saturating_duration_since(now).min(IDLE_POLL)
            });
            tokio::select! {
                () = this.control.wake.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => this.settle(done.ok(), &mut pause),
                () = tokio::time::sleep(wait) => {}
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        this.announce_ready();
    }

    /// Makes the announcements written ahead whose objects are uploaded now,
    /// a batch at a time.
    fn announce_ready(&self) {
        loop {
            let ready = self.spool.take_ready();
            for (by, span) in &ready.spans {
                self.announcer
                    .announce_ahead(&self.counters, &**by, &ready.records[span.clone()]);
            }
            for _ in 0..ready.lost {
                Announcer::dropped(&self.counters);
            }
            if !ready.more {
                break;
            }
        }
    }

    /// Takes a finished task's outcome into the store-wide pause.
    fn settle(&self, outcome: Option<Outcome>, pause: &mut Pause) {
        match outcome {
            Some(Outcome::Setup(error)) => {
                let delay = backoff::delay(pause.failures, SETUP_RETRY_BASE, SETUP_RETRY_CAP);
                pause.failures = pause.failures.saturating_add(1);
                pause.until = Some(Instant::now() + delay);
                pause.probing = false;
                self.control.paused.store(true, Ordering::Relaxed);
                if let Some(skipped) = self.logs.setup.allow() {
                    tracing::error!(
                        store = %self.store_id,
                        code = error.code(),
                        error = %error,
                        failures = pause.failures,
                        retry_in_ms = delay.as_millis() as u64,
                        skipped,
                        "S3 refuses the store's requests (credentials, permissions, bucket or endpoint); objects wait in the spool"
                    );
                }
            }
            Some(Outcome::Settled) | None => {
                if pause.probing {
                    tracing::info!(store = %self.store_id, failures = pause.failures, "S3 accepts uploads again; resuming");
                    *pause = Pause::default();
                    self.control.paused.store(false, Ordering::Relaxed);
                }
            }
        }
    }

    async fn upload_entry(&self, entry: Entry) -> Outcome {
        let multipart = entry.len >= self.multipart_threshold;
        let mut attempt: u32 = 0;
        loop {
            let result = if multipart {
                multipart::upload(&self.client, &entry, self.part_bytes, &self.memory)
                    .await
                    .map_err(UploadError::Multipart)
            } else {
                self.put_single(&entry).await
            };
            let error = match result {
                Ok(()) => {
                    let notices = self.spool.complete(entry.seq);
                    Counters::add(&self.counters.here().stored, 1);
                    Counters::add(&self.counters.here().bytes, entry.len);
                    if multipart {
                        Counters::add(&self.counters.here().multipart, 1);
                    }
                    for (notice, deduplicated) in notices {
                        self.announcer.stored(
                            &self.counters,
                            notice,
                            &entry.digest,
                            entry.len,
                            &entry.content_type,
                            deduplicated,
                        );
                    }
                    return Outcome::Settled;
                }
                Err(e) => e,
            };
            Counters::add(&self.counters.here().errors, 1);
            if error.is_setup() {
                self.spool.release(entry.seq);
                return Outcome::Setup(error);
            }
            if !error.is_transient() {
                if let Some(skipped) = self.logs.refused.allow() {
                    tracing::error!(store = %self.store_id, digest = %entry.digest.to_hex(), code = error.code(), error = %error, skipped, "S3 refused the object; dropping it");
                }
                self.spool.discard(entry.seq);
                self.counters.lose(Loss::Refused, 1);
                return Outcome::Settled;
            }
            if let Some(skipped) = self.logs.retry.allow() {
                tracing::warn!(store = %self.store_id, digest = %entry.digest.to_hex(), attempt, code = error.code(), error = %error, skipped, "upload failed; retrying");
            }
            if self.control.halt.load(Ordering::Acquire) {
                self.spool.release(entry.seq);
                return Outcome::Settled;
            }
            tokio::time::sleep(backoff::delay(attempt, RETRY_BASE, RETRY_CAP)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn put_single(&self, entry: &Entry) -> Result<(), UploadError> {
        let _held = self.memory.acquire(entry.len).await;
        let path = entry.path.clone();
        let (offset, len) = (entry.offset, entry.len);
        let read = if len <= INLINE_READ_BYTES {
            // Written moments ago, so in the page cache: a read costs less
            // than handing it to a blocking thread and waking this one again.
            multipart::read_range(&path, offset, len)
        } else {
            tokio::task::spawn_blocking(move || multipart::read_range(&path, offset, len))
                .await
                .map_err(|join| UploadError::Read {
                    path: entry.path.clone(),
                    source: std::io::Error::other(join.to_string()),
                })?
        };
        let body = read.map_err(|source| UploadError::Read {
            path: entry.path.clone(),
            source,
        })?;
        self.client
            .put_object(&entry.digest.to_hex(), &entry.content_type, body)
            .await
            .map_err(UploadError::Put)
    }
}
