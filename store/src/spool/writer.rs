//! The bounded queue in front of the spool, and the storage thread that drains it.
//!
//! `put` only pushes onto a bounded channel ([`PendingQueue::push`]): no lock, no
//! allocation, no syscall. The storage thread takes objects off in batches,
//! deduplicates them against the spool, writes the batch through io_uring, renames
//! each file into place and wakes the uploader.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
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

/// Objects waiting in memory for the storage thread, at most: a burst of a few
/// seconds of a busy node's payloads (the byte limit below usually binds first).
pub const QUEUE_OBJECTS: usize = 16 * 1024;
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

    /// The index of the oldest object in `batch` from which the rest, newest
    /// included, fit in the spool's limit together.
    fn oldest_that_fit(&self, batch: &[Object]) -> usize {
        let mut total = 0u64;
        for (i, object) in batch.iter().enumerate().rev() {
            total += self
                .spool
                .file_len(&object.content_type, object.bytes.len() as u64);
            if total > self.spool.max_bytes() {
                return i + 1;
            }
        }
        0
    }

    fn write_batch(&mut self, batch: &mut Vec<Object>) {
        if batch.is_empty() {
            return;
        }
        /// An admitted object on its way to disk.
        struct Admitted {
            seq: u64,
            tmp: PathBuf,
            path: PathBuf,
            header: Vec<u8>,
            object: Object,
        }
        // Decide each object's fate. Objects of this batch cannot evict each other
        // (none is on disk yet), so when the batch alone is over the spool's limit
        // its oldest objects go first, as older spooled objects would.
        let keep_from = self.oldest_that_fit(batch);
        let mut admitted: Vec<Admitted> = Vec::with_capacity(batch.len());
        for (i, object) in batch.drain(..).enumerate() {
            let len = object.bytes.len() as u64;
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            if i < keep_from {
                tracing::warn!(digest = %object.digest, len, "spool full; dropping the oldest object");
                Counters::add(&self.counters.dropped, 1);
                continue;
            }
            match self.spool.admit(object.digest, &object.content_type, len) {
                Admit::Duplicate => Counters::add(&self.counters.deduplicated, 1),
                Admit::NoRoom => {
                    tracing::warn!(digest = %object.digest, len, "spool full; dropping object");
                    Counters::add(&self.counters.dropped, 1);
                }
                Admit::Write { seq, tmp, path } => admitted.push(Admitted {
                    seq,
                    tmp,
                    path,
                    header: dir::header(&object.content_type),
                    object,
                }),
            }
        }
        let evicted = self.spool.evicted();
        Counters::add(&self.counters.dropped, evicted - self.evicted_seen);
        self.evicted_seen = evicted;
        if admitted.is_empty() {
            return;
        }

        // Create, write, close and rename: one io_uring submission each for the
        // whole batch.
        let tmps: Vec<&Path> = admitted.iter().map(|a| a.tmp.as_path()).collect();
        let created = self.writer.create_all(&tmps, dir::FILE_MODE);
        let mut open: Vec<(&Admitted, File)> = Vec::with_capacity(admitted.len());
        for (a, file) in admitted.iter().zip(created) {
            match file {
                Ok(file) => open.push((a, file)),
                Err(error) => self.fail(a.seq, &a.tmp, &error),
            }
        }
        let jobs: Vec<WriteJob<'_>> = open
            .iter()
            .map(|(a, file)| WriteJob {
                file,
                parts: [&a.header, &a.object.bytes],
            })
            .collect();
        let written = self.writer.write_all(&jobs);
        drop(jobs);
        let mut to_rename: Vec<(File, &Path, &Path)> = Vec::with_capacity(open.len());
        let mut renaming: Vec<&Admitted> = Vec::with_capacity(open.len());
        for ((a, file), result) in open.into_iter().zip(written) {
            match result {
                Ok(()) => {
                    to_rename.push((file, &a.tmp, &a.path));
                    renaming.push(a);
                }
                Err(error) => {
                    drop(file);
                    self.fail(a.seq, &a.tmp, &error);
                }
            }
        }
        let renamed = self.writer.close_and_rename_all(to_rename);
        for (a, result) in renaming.into_iter().zip(renamed) {
            match result {
                Ok(()) => self.spool.written(a.seq),
                Err(error) => self.fail(a.seq, &a.tmp, &error),
            }
        }
        self.wake_uploader.notify_one();
    }

    /// Writing `seq` to `tmp` failed: remove the file, forget the object, count it.
    fn fail(&self, seq: u64, tmp: &Path, error: &std::io::Error) {
        tracing::error!(path = %tmp.display(), %error, "spool write failed; dropping object");
        let _ = fs::remove_file(tmp);
        self.spool.abandon(seq);
        Counters::add(&self.counters.dropped, 1);
        Counters::add(&self.counters.errors, 1);
    }
}
