//! The bounded queue in front of the spool, and the storage thread that drains it.
//!
//! `put` only pushes onto a bounded channel ([`PendingQueue::push`]): no lock, no
//! allocation, no syscall. The storage thread takes objects off in batches,
//! deduplicates them against the spool, writes the batch through io_uring, renames
//! each file into place and wakes the uploader.

use std::fs::{self, File, OpenOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::dir::{self, Admit, Spool};
use super::uring::{BatchWriter, RING_ENTRIES, WriteJob};
use crate::Object;
use crate::counters::Counters;

/// Objects waiting in memory for the storage thread, at most.
pub const QUEUE_OBJECTS: usize = 4096;
/// Bytes waiting in memory for the storage thread, at most: what an outage of the
/// disk (not of S3: S3 outages wait on disk) can pin in RAM.
pub const QUEUE_MAX_BYTES: u64 = 64 << 20;
/// Objects written per io_uring submission.
const WRITE_BATCH: usize = RING_ENTRIES as usize;
/// How often an idle storage thread looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The producer side: a bounded channel plus a byte budget.
#[derive(Debug)]
pub struct PendingQueue {
    tx: SyncSender<Object>,
    bytes: Arc<AtomicU64>,
    counters: Arc<Counters>,
}

impl PendingQueue {
    /// Queues `object` for the spool, or drops and counts it when the queue is full
    /// (by count or by bytes). Never blocks.
    pub fn push(&self, object: Object) {
        Counters::add(&self.counters.accepted, 1);
        let len = object.bytes.len() as u64;
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > QUEUE_MAX_BYTES {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            Counters::add(&self.counters.dropped, 1);
            return;
        }
        match self.tx.try_send(object) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                Counters::add(&self.counters.dropped, 1);
            }
        }
    }

    /// Bytes waiting in memory now.
    pub fn queued_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The storage thread's state.
#[derive(Debug)]
pub struct StorageThread {
    rx: Receiver<Object>,
    bytes: Arc<AtomicU64>,
    spool: Arc<Spool>,
    counters: Arc<Counters>,
    wake_uploader: Arc<Notify>,
    stop: Arc<AtomicBool>,
    writer: BatchWriter,
    evicted_seen: u64,
}

impl StorageThread {
    /// Creates the queue and starts the thread. Setting `stop` makes the thread
    /// spool whatever is queued and exit.
    pub fn spawn(
        store_id: &str,
        spool: Arc<Spool>,
        counters: Arc<Counters>,
        wake_uploader: Arc<Notify>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<(PendingQueue, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(QUEUE_OBJECTS);
        let bytes = Arc::new(AtomicU64::new(0));
        let queue = PendingQueue {
            tx,
            bytes: Arc::clone(&bytes),
            counters: Arc::clone(&counters),
        };
        let writer = BatchWriter::new();
        tracing::debug!(
            store = store_id,
            uring = writer.is_uring(),
            "spool writer ready"
        );
        let mut thread = StorageThread {
            rx,
            bytes,
            spool,
            counters,
            wake_uploader,
            stop,
            writer,
            evicted_seen: 0,
        };
        let handle = std::thread::Builder::new()
            .name(format!("spool-{store_id}"))
            .spawn(move || thread.run())?;
        Ok((queue, handle))
    }

    fn run(&mut self) {
        let mut batch: Vec<Object> = Vec::with_capacity(WRITE_BATCH);
        loop {
            match self.rx.recv_timeout(POLL_INTERVAL) {
                Ok(object) => batch.push(object),
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Acquire) {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < WRITE_BATCH {
                match self.rx.try_recv() {
                    Ok(object) => batch.push(object),
                    Err(_) => break,
                }
            }
            self.write_batch(&mut batch);
        }
        // Stopping: spool what is still queued.
        while let Ok(object) = self.rx.try_recv() {
            batch.push(object);
            if batch.len() == WRITE_BATCH {
                self.write_batch(&mut batch);
            }
        }
        self.write_batch(&mut batch);
    }

    fn write_batch(&mut self, batch: &mut Vec<Object>) {
        if batch.is_empty() {
            return;
        }
        // Decide each object's fate and open the temporary files.
        struct Pending {
            seq: u64,
            tmp: std::path::PathBuf,
            path: std::path::PathBuf,
            file: File,
            header: Vec<u8>,
            object: Object,
        }
        let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
        for object in batch.drain(..) {
            let len = object.bytes.len() as u64;
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            match self.spool.admit(object.digest, &object.content_type, len) {
                Admit::Duplicate => Counters::add(&self.counters.deduplicated, 1),
                Admit::NoRoom => {
                    tracing::warn!(digest = %object.digest, len, "spool full; dropping object");
                    Counters::add(&self.counters.dropped, 1);
                }
                Admit::Write { seq, tmp, path } => {
                    match OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&tmp)
                    {
                        Ok(file) => pending.push(Pending {
                            seq,
                            tmp,
                            path,
                            file,
                            header: dir::header(&object.content_type),
                            object,
                        }),
                        Err(error) => {
                            tracing::error!(path = %tmp.display(), %error, "cannot create spool file; dropping object");
                            self.spool.abandon(seq);
                            Counters::add(&self.counters.dropped, 1);
                            Counters::add(&self.counters.errors, 1);
                        }
                    }
                }
            }
        }
        let evicted = self.spool.evicted();
        Counters::add(&self.counters.dropped, evicted - self.evicted_seen);
        self.evicted_seen = evicted;
        if pending.is_empty() {
            return;
        }
        let jobs: Vec<WriteJob<'_>> = pending
            .iter()
            .map(|p| WriteJob {
                file: &p.file,
                parts: [&p.header, &p.object.bytes],
            })
            .collect();
        let results = self.writer.write_all(&jobs);
        drop(jobs);
        for (p, result) in pending.into_iter().zip(results) {
            drop(p.file);
            let result = result.and_then(|()| fs::rename(&p.tmp, &p.path));
            match result {
                Ok(()) => self.spool.written(p.seq),
                Err(error) => {
                    tracing::error!(path = %p.tmp.display(), %error, "spool write failed; dropping object");
                    let _ = fs::remove_file(&p.tmp);
                    self.spool.abandon(p.seq);
                    Counters::add(&self.counters.dropped, 1);
                    Counters::add(&self.counters.errors, 1);
                }
            }
        }
        self.wake_uploader.notify_one();
    }
}
