//! Drains the spool to S3: batches of the oldest entries, a bounded number of
//! uploads in flight, retries with backoff.
//!
//! Each entry is retried until it is stored while the failure is transient (5xx,
//! throttling, timeouts, connection errors): the object waits on disk, so an outage
//! costs disk, not memory, and loses nothing within the spool's limit.
//! Authentication and permission errors and a missing bucket (the store's set-up,
//! not the object) are retried [`AUTH_ATTEMPTS`] times, then the object is parked
//! (kept on disk, left alone until the next start) and the error is logged. Any other refusal (a 4xx the object itself causes) drops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::client::{ClientError, S3Client};
use super::multipart::{self, MemoryBudget, MultipartError};
use crate::backoff;
use crate::counters::Counters;
use crate::spool::{Entry, Spool};

/// First retry delay after a transient failure.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay: also the longest an outage outlasts its end before
/// uploads resume.
const RETRY_CAP: Duration = Duration::from_secs(4);
/// Tries for an object refused for authentication, permission or a missing bucket.
pub const AUTH_ATTEMPTS: u32 = 3;
/// How often an idle uploader looks at the spool and its stop flag even without a
/// wake-up.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Retries logged at `warn` (then one in [`LOG_EVERY`]) per object.
const LOG_EVERY: u32 = 10;

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

    /// Refused for authentication or permission reasons.
    pub fn is_auth(&self) -> bool {
        self.client_error().is_some_and(ClientError::is_auth)
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
}

impl Uploader {
    /// Runs until halted.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut tasks = JoinSet::new();
        loop {
            if this.control.halt.load(Ordering::Acquire) {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let free = this.concurrency.saturating_sub(tasks.len());
            if free > 0 {
                for entry in this.spool.take_batch(free) {
                    let this = Arc::clone(&this);
                    tasks.spawn(async move { this.upload_entry(entry).await });
                }
            }
            tokio::select! {
                () = this.control.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    async fn upload_entry(&self, entry: Entry) {
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
                    self.spool.complete(entry.seq);
                    Counters::add(&self.counters.stored, 1);
                    Counters::add(&self.counters.bytes, entry.len);
                    if multipart {
                        Counters::add(&self.counters.multipart, 1);
                    }
                    return;
                }
                Err(e) => e,
            };
            Counters::add(&self.counters.errors, 1);
            let digest = entry.digest.to_hex();
            if error.is_transient() {
                if attempt.is_multiple_of(LOG_EVERY) {
                    tracing::warn!(store = %self.store_id, digest = %digest, attempt, code = error.code(), error = %error, "upload failed; retrying");
                }
            } else if error.is_auth() {
                tracing::error!(store = %self.store_id, digest = %digest, attempt, code = error.code(), error = %error, "upload refused");
                if attempt + 1 >= AUTH_ATTEMPTS {
                    tracing::error!(store = %self.store_id, digest = %digest, "object kept in the spool until the next start");
                    self.spool.park(entry.seq);
                    return;
                }
            } else {
                tracing::error!(store = %self.store_id, digest = %digest, code = error.code(), error = %error, "upload refused; dropping object");
                self.spool.discard(entry.seq);
                Counters::add(&self.counters.dropped, 1);
                return;
            }
            tokio::time::sleep(backoff::delay(attempt, RETRY_BASE, RETRY_CAP)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn put_single(&self, entry: &Entry) -> Result<(), UploadError> {
        let _held = self.memory.acquire(entry.len).await;
        let path = entry.path.clone();
        let (offset, len) = (entry.offset, entry.len);
        let body = tokio::task::spawn_blocking(move || multipart::read_range(&path, offset, len))
            .await
            .map_err(|join| UploadError::Read {
                path: entry.path.clone(),
                source: std::io::Error::other(join.to_string()),
            })?
            .map_err(|source| UploadError::Read {
                path: entry.path.clone(),
                source,
            })?;
        self.client
            .put_object(&entry.digest.to_hex(), &entry.content_type, body)
            .await
            .map_err(UploadError::Put)
    }
}
