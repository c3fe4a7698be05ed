//! [`S3Store`]: the `type: s3` object store.
//!
//! `put` pushes onto a bounded queue; the storage thread spools to disk; the
//! uploader thread (its own single-threaded tokio runtime) drains the spool to S3.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::{ClientConfig, ClientError, S3Client};
use super::multipart::MemoryBudget;
use super::sign::Credentials;
use super::uploader::{Control, UploadLogs, Uploader};
use crate::access_url::AccessUrl;
use crate::announce::Announcer;
use crate::config::{KindError, S3Config, SecretError, StartupCheck, StoreKind as _};
use crate::counters::{Counters, Loss};
use crate::spool::{PendingQueue, Spool, SpoolError, StorageThread};
use crate::stores::StoreMemory;
use crate::{Object, ObjectStore, StoreStats, Ticket};

/// How often `shutdown` looks at the spool while waiting for it to drain.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// An S3 store failed to start.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A credential could not be read from the environment.
    #[error("store `{store}`: cannot read credentials")]
    Credentials {
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
    #[error("store `{store}`: cannot build the S3 client")]
    Client {
        /// Store id.
        store: String,
        /// The cause.
        #[source]
        source: ClientError,
    },
    /// The spool directory could not be opened.
    #[error("store `{store}`: cannot open the spool")]
    Spool {
        /// Store id.
        store: String,
        /// The cause.
        #[source]
        source: SpoolError,
    },
    /// A thread or the runtime could not be started.
    #[error("store `{store}`: cannot start the upload threads")]
    Thread {
        /// Store id.
        store: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The start-up bucket check failed (and `startup_check` is `fatal`).
    #[error("store `{store}`: bucket `{bucket}` at `{endpoint}` failed the start-up check: {code}")]
    BucketCheck {
        /// Store id.
        store: String,
        /// Endpoint.
        endpoint: String,
        /// Bucket.
        bucket: String,
        /// S3 error code (`NoSuchBucket`, `SignatureDoesNotMatch`) or transport
        /// reason (`connection refused`).
        code: String,
        /// The cause.
        #[source]
        source: Box<ClientError>,
    },
}

/// The `type: s3` object store.
#[derive(Debug)]
pub struct S3Store {
    id: String,
    queue: PendingQueue,
    spool: Arc<Spool>,
    counters: Arc<Counters>,
    control: Arc<Control>,
    stop_spooling: Arc<AtomicBool>,
    threads: Mutex<Threads>,
    access_url: AccessUrl,
    /// Announces objects settled on the caller's thread (already uploaded).
    announcer: Arc<Announcer>,
    recovered: usize,
    /// The start-up bucket check succeeded.
    check_passed: bool,
}

#[derive(Debug, Default)]
struct Threads {
    storage: Option<JoinHandle<()>>,
    uploader: Option<JoinHandle<()>>,
}

impl S3Store {
    /// Resolves the credentials, opens the spool (queueing what a previous run
    /// left), checks the bucket with the credentials, and starts the storage and
    /// upload threads.
    ///
    /// A failed bucket check is an error when `startup_check` is `fatal` (the
    /// default) and a warning otherwise. Blocks for the check; call it before
    /// entering an async runtime, or from a blocking context.
    pub fn start(cfg: &S3Config) -> Result<Self, S3Error> {
        Self::start_with(cfg, StoreMemory::default())
    }

    /// [`S3Store::start`] within `memory`: its in-memory queue, its spool's
    /// index and the announcements waiting in memory for uploads.
    pub fn start_with(cfg: &S3Config, memory: StoreMemory) -> Result<Self, S3Error> {
        let queue_bytes = memory.queue_bytes;
        let store = || cfg.id.clone();
        let credentials = Credentials {
            access_key: cfg
                .access_key
                .resolve(&cfg.id, "access_key")
                .map_err(|source| S3Error::Credentials {
                    store: store(),
                    source,
                })?,
            secret_key: cfg
                .secret_key
                .resolve(&cfg.id, "secret_key")
                .map_err(|source| S3Error::Credentials {
                    store: store(),
                    source,
                })?,
        };
        cfg.check().map_err(|problem| S3Error::Config {
            store: store(),
            problem,
        })?;
        let session_token = cfg
            .session_token
            .as_ref()
            .map(|t| t.resolve(&cfg.id, "session_token"))
            .transpose()
            .map_err(|source| S3Error::Credentials {
                store: store(),
                source,
            })?;
        let ca_pem = cfg
            .ca_file
            .as_deref()
            .map(|path| super::config::read_ca_file("ca_file", path))
            .transpose()
            .map_err(|problem| S3Error::Config {
                store: store(),
                problem,
            })?;
        if cfg.insecure {
            tracing::warn!(
                store = %cfg.id,
                endpoint = %cfg.endpoint,
                "PLAIN HTTP (`insecure: true`): captured payloads and request signatures travel unencrypted; use it only on a trusted local network"
            );
        }
        let client = Arc::new(
            S3Client::new(ClientConfig {
                endpoint: super::client::request_endpoint(&cfg.endpoint, &cfg.region),
                bucket: cfg.bucket.clone(),
                region: cfg.region.clone(),
                insecure: cfg.insecure,
                credentials,
                session_token,
                encryption: cfg.encryption(),
                ca_pem,
                max_idle_connections: cfg.concurrency,
            })
            .map_err(|source| S3Error::Client {
                store: store(),
                source,
            })?,
        );
        let (spool, recovery) = Spool::open(&PathBuf::from(&cfg.spool_dir), cfg.spool_max_bytes)
            .map_err(|source| S3Error::Spool {
                store: store(),
                source,
            })?;
        let spool = spool
            .hold_at_most(crate::spool::dir::objects_within(memory.index_bytes))
            .notices_at_most(crate::spool::dir::notices_within(memory.notice_bytes));
        let recovered = recovery.objects;
        let spool = Arc::new(spool);
        let counters = Arc::new(Counters::default());
        Counters::add(&counters.here().recovered, recovered as u64);
        counters.lose(Loss::Corrupt, recovery.corrupt as u64);
        let control = Arc::new(Control::default());
        let access_url =
            AccessUrl::new(&cfg.access_url, client.scheme(), &cfg.endpoint, &cfg.bucket);
        let announcer = Arc::new(Announcer::new(&cfg.id, Some(access_url.clone())));
        let uploader = Uploader {
            store_id: cfg.id.clone(),
            client: Arc::clone(&client),
            spool: Arc::clone(&spool),
            counters: Arc::clone(&counters),
            control: Arc::clone(&control),
            concurrency: cfg.concurrency.max(1),
            multipart_threshold: cfg.multipart_threshold_bytes,
            part_bytes: cfg.multipart_part_bytes,
            memory: MemoryBudget::default(),
            logs: UploadLogs::default(),
            announcer: Arc::clone(&announcer),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("s3-{}", cfg.id))
            .build()
            .map_err(|source| S3Error::Thread {
                store: store(),
                source,
            })?;

        // The check runs on the uploader's thread and runtime, so `start` works
        // whether or not the caller is inside a runtime of its own.
        let (check_tx, check_rx) = std::sync::mpsc::channel();
        let fatal = cfg.startup_check == StartupCheck::Fatal;
        let check_client = Arc::clone(&client);
        let uploader_thread = std::thread::Builder::new()
            .name(format!("s3-{}", cfg.id))
            .spawn(move || {
                crate::room::store_thread();
                runtime.block_on(async move {
                    let check = check_client.check_bucket().await;
                    let failed = check.is_err();
                    let _ = check_tx.send(check);
                    if failed && fatal {
                        return;
                    }
                    uploader.run().await;
                });
            })
            .map_err(|source| S3Error::Thread {
                store: store(),
                source,
            })?;
        let check = check_rx.recv().unwrap_or_else(|_| {
            Err(ClientError::Malformed {
                operation: "bucket check",
                field: "answer",
            })
        });
        let check_passed = check.is_ok();
        if let Err(source) = check {
            if fatal {
                let _ = uploader_thread.join();
                return Err(S3Error::BucketCheck {
                    store: store(),
                    endpoint: cfg.endpoint.clone(),
                    bucket: cfg.bucket.clone(),
                    code: source.code().to_owned(),
                    source: Box::new(source),
                });
            }
            tracing::warn!(store = %cfg.id, endpoint = %cfg.endpoint, bucket = %cfg.bucket, code = source.code(), error = %source, "start-up bucket check failed; objects wait in the spool");
        }

        let stop_spooling = Arc::new(AtomicBool::new(false));
        let (queue, storage_thread) = StorageThread::spawn(
            &cfg.id,
            queue_bytes,
            Arc::clone(&spool),
            Arc::clone(&counters),
            Arc::clone(&control.wake),
            Arc::clone(&stop_spooling),
            Arc::clone(&announcer),
        )
        .map_err(|source| {
            control.halt.store(true, Ordering::Release);
            control.wake.notify_one();
            S3Error::Thread {
                store: store(),
                source,
            }
        })?;
        tracing::info!(store = %cfg.id, endpoint = %cfg.endpoint, bucket = %cfg.bucket, recovered, corrupt = recovery.corrupt, max_objects = spool.max_objects(), "s3 store started");
        Ok(Self {
            id: cfg.id.clone(),
            queue,
            spool,
            counters,
            control,
            stop_spooling,
            threads: Mutex::new(Threads {
                storage: Some(storage_thread),
                uploader: Some(uploader_thread),
            }),
            access_url,
            announcer,
            recovered,
            check_passed,
        })
    }

    /// Whether this store has reached its endpoint since it started: the
    /// start-up bucket check, an upload or a found-existing object succeeded.
    pub fn reached_endpoint(&self) -> bool {
        let s = self.counters.snapshot();
        self.check_passed || s.stored > 0 || s.deduplicated > 0
    }

    /// Objects found in the spool at start (left by a previous run).
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    /// Objects accepted (or recovered) and not yet settled: neither stored,
    /// deduplicated nor dropped.
    pub fn pending(&self) -> u64 {
        let s = self.counters.snapshot();
        let lost = s.dropped - s.drops.corrupt;
        (s.accepted + self.recovered as u64).saturating_sub(s.stored + s.deduplicated + lost)
    }

    /// Objects in the spool (waiting or uploading).
    pub fn spooled(&self) -> usize {
        self.spool.len()
    }

    fn halt(&self) {
        self.stop_spooling.store(true, Ordering::Release);
        self.control.halt.store(true, Ordering::Release);
        self.control.wake.notify_one();
    }
}

impl ObjectStore for S3Store {
    fn id(&self) -> &str {
        &self.id
    }

    fn reached_destination(&self) -> bool {
        self.reached_endpoint()
    }

    fn put_with(&self, object: Object, ticket: Ticket) {
        // Already uploaded (the common case of a busy node: the same bodies and
        // headers again): settled here, with no trip through the storage
        // thread. Anything else, duplicates the table forgot included, is
        // spooled or deduplicated there.
        if self.spool.uploaded(&object.digest) {
            self.announcer
                .settle_duplicate(&self.counters, &object, ticket);
            return;
        }
        self.queue.push(object, ticket);
    }

    fn access_url(&self) -> Option<&AccessUrl> {
        Some(&self.access_url)
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    fn levels(&self) -> Vec<(&'static str, u64)> {
        let spool = self.spool.levels();
        vec![
            ("queued_bytes", self.queue.queued_bytes()),
            ("spooled", spool.objects),
            ("spool_bytes", spool.bytes),
            ("announcements_waiting", spool.announcements),
            ("announcements_ahead", spool.announcements_ahead),
        ]
    }

    fn shutdown(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let mut threads = self
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Spool what is queued in memory first: the disk is the safe place.
        self.stop_spooling.store(true, Ordering::Release);
        if let Some(storage) = threads.storage.take() {
            let _ = storage.join();
        }
        // Uploads go on until the deadline, unless set-up errors have paused
        // them: the objects are safe in the spool either way.
        while !self.spool.is_empty()
            && !self.control.paused.load(Ordering::Relaxed)
            && Instant::now() < until
        {
            std::thread::sleep(SHUTDOWN_POLL);
        }
        self.halt();
        if let Some(uploader) = threads.uploader.take() {
            let _ = uploader.join();
        }
        tracing::info!(store = %self.id, left = self.spool.len(), "s3 store stopped");
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    const DIGEST_HEX: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    fn digest() -> Digest {
        let d = blake3::hash(b"");
        assert_eq!(d.to_hex().as_str(), DIGEST_HEX);
        d
    }

    #[test]
    fn access_url_with_no_digest_or_two() {
        let none = AccessUrl::new("{{SCHEME}}://{{ENDPOINT}}/x", "http", "h:1", "b");
        assert_eq!(none.render(&digest()), "http://h:1/x");
        let two = AccessUrl::new("/{{DIGEST}}/{{BUCKET}}/{{DIGEST}}", "http", "h", "b");
        assert_eq!(
            two.render(&digest()),
            format!("/{DIGEST_HEX}/b/{DIGEST_HEX}")
        );
    }

    #[test]
    fn access_url_minio_example() {
        let url = AccessUrl::new(
            "https://minio.example.com/{{BUCKET}}/{{DIGEST}}",
            "https",
            "minio.example.com:9000",
            "qpoint",
        );
        assert_eq!(
            url.render(&digest()),
            format!("https://minio.example.com/qpoint/{DIGEST_HEX}")
        );
    }

    #[test]
    fn access_url_aws_example() {
        let url = AccessUrl::new(
            "https://s3.amazonaws.com/{{BUCKET}}/{{DIGEST}}",
            "https",
            "s3.amazonaws.com",
            "my-company-qpoint",
        );
        assert_eq!(
            url.render(&digest()),
            format!("https://s3.amazonaws.com/my-company-qpoint/{DIGEST_HEX}")
        );
    }

    #[test]
    fn access_url_gcs_example() {
        let url = AccessUrl::new(
            "https://storage.cloud.google.com/{{BUCKET}}/{{DIGEST}}",
            "https",
            "storage.googleapis.com",
            "my-company-qpoint",
        );
        assert_eq!(
            url.render(&digest()),
            format!("https://storage.cloud.google.com/my-company-qpoint/{DIGEST_HEX}")
        );
    }

    #[test]
    fn access_url_default_template_uses_scheme_and_endpoint() {
        let template = "{{SCHEME}}://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}";
        let insecure = AccessUrl::new(template, "http", "127.0.0.1:8333", "b");
        assert_eq!(
            insecure.render(&digest()),
            format!("http://127.0.0.1:8333/b/{DIGEST_HEX}")
        );
        let secure = AccessUrl::new(template, "https", "minio.internal:9000", "qpoint-objects");
        assert_eq!(
            secure.render(&digest()),
            format!("https://minio.internal:9000/qpoint-objects/{DIGEST_HEX}")
        );
    }
}
