//! The bounded queue in front of the spool, and the storage thread that drains it.
//!
//! `put` only pushes onto a bounded channel ([`PendingQueue::push`]): no lock, no
//! allocation, no syscall, except that a full queue makes the caller wait for the
//! storage thread to take objects (backpressure, [`crate::room`]). The storage
//! thread takes objects off in batches,
//! deduplicates them against the spool, writes and fsyncs the batch through
//! io_uring, renames each file into place, fsyncs the directory once, and only
//! then settles the objects' tickets (their events may go out) and wakes the
//! uploader. A ticket's notice stays with the spool entry until the uploader has
//! stored it; one for an object already uploaded is told at once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::dir::{self, Admit, Awaited, Spool};
use super::uring::{BatchWriter, RING_ENTRIES, WriteJob};
use crate::announce::Announcer;
use crate::counters::{Counters, Loss};
use crate::ratelog::LogLimit;
use crate::room::{Room, Taken};
use crate::{Object, Ticket};

/// Objects waiting in memory for the storage thread, at most: a burst of a few
/// seconds of a busy node's payloads (the byte limit below usually binds first).
pub const QUEUE_OBJECTS: usize = 16 * 1024;
/// Bytes waiting in memory for the storage thread, at most, by default
/// ([`crate::stores::StartContext`] sets it): what an outage of the disk (not of
/// S3: S3 outages wait on disk) can pin in RAM.
pub const QUEUE_MAX_BYTES: u64 = crate::stores::DEFAULT_QUEUE_BYTES;
/// Objects written per io_uring submission.
const WRITE_BATCH: usize = RING_ENTRIES as usize;
/// How often an idle storage thread looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// At most one log line per this interval for each kind of refusal.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The producer side: a bounded channel plus a byte budget.
#[derive(Debug)]
pub struct PendingQueue {
    tx: SyncSender<(Object, Ticket)>,
    room: Arc<Room>,
    counters: Arc<Counters>,
}

impl PendingQueue {
    /// Queues `object` for the spool. While the queue is full (by count or by
    /// bytes) the caller waits for the storage thread, at most
    /// [`crate::room::PUSHBACK_WAIT`]; past it the object is dropped and counted.
    /// `ticket` is settled once the object is spooled and synced, or dropped (not
    /// kept).
    pub fn push(&self, object: Object, ticket: Ticket) {
        Counters::add(&self.counters.accepted, 1);
        let len = object.bytes.len() as u64;
        let taken = self
            .room
            .take(len, || Counters::add(&self.counters.waits, 1));
        if let Taken::Refused { .. } = taken {
            self.counters.lose(Loss::QueueFull, 1);
            return;
        }
        if self.tx.try_send((object, ticket)).is_err() {
            self.room.give_back(len);
            self.counters.lose(Loss::QueueFull, 1);
        }
    }

    /// Bytes waiting in memory now.
    pub fn queued_bytes(&self) -> u64 {
        self.room.bytes()
    }
}

/// The storage thread's state.
#[derive(Debug)]
pub struct StorageThread {
    rx: Receiver<(Object, Ticket)>,
    room: Arc<Room>,
    spool: Arc<Spool>,
    counters: Arc<Counters>,
    wake_uploader: Arc<Notify>,
    stop: Arc<AtomicBool>,
    announcer: Arc<Announcer>,
    writer: BatchWriter,
    /// The spool directory, fsynced after each batch of renames.
    dir: File,
    full_log: LogLimit,
    error_log: LogLimit,
}

impl StorageThread {
    /// Creates the queue (at most `max_bytes` of payload) and starts the
    /// thread. Setting `stop` makes the thread spool whatever is queued and
    /// exit.
    pub fn spawn(
        store_id: &str,
        max_bytes: u64,
        spool: Arc<Spool>,
        counters: Arc<Counters>,
        wake_uploader: Arc<Notify>,
        stop: Arc<AtomicBool>,
        announcer: Arc<Announcer>,
    ) -> std::io::Result<(PendingQueue, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(QUEUE_OBJECTS);
        let room = Arc::new(Room::new(QUEUE_OBJECTS, max_bytes));
        let queue = PendingQueue {
            tx,
            room: Arc::clone(&room),
            counters: Arc::clone(&counters),
        };
        let dir = File::open(spool.dir())?;
        let writer = BatchWriter::new();
        tracing::debug!(
            store = store_id,
            uring = writer.is_uring(),
            "spool writer ready"
        );
        let mut thread = StorageThread {
            rx,
            room,
            spool,
            counters,
            wake_uploader,
            stop,
            announcer,
            writer,
            dir,
            full_log: LogLimit::new(LOG_INTERVAL),
            error_log: LogLimit::new(LOG_INTERVAL),
        };
        let handle = std::thread::Builder::new()
            .name(format!("spool-{store_id}"))
            .spawn(move || {
                crate::room::store_thread();
                thread.run();
            })?;
        Ok((queue, handle))
    }

    fn run(&mut self) {
        let mut batch: Vec<(Object, Ticket)> = Vec::with_capacity(WRITE_BATCH);
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

    fn write_batch(&mut self, batch: &mut Vec<(Object, Ticket)>) {
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
            ticket: Ticket,
        }
        let mut admitted: Vec<Admitted> = Vec::with_capacity(batch.len());
        /// An object the spool already has, pending or uploaded.
        struct Duplicate {
            digest: crate::Digest,
            len: u64,
            content_type: String,
            ticket: Ticket,
        }
        // Objects already in the spool or uploaded: kept once the batch they may
        // share a file with is settled.
        let mut duplicates: Vec<Duplicate> = Vec::new();
        for (object, ticket) in batch.drain(..) {
            let len = object.bytes.len() as u64;
            self.room.give_back(len);
            match self.spool.admit(object.digest, &object.content_type, len) {
                Admit::Duplicate => {
                    Counters::add(&self.counters.deduplicated, 1);
                    duplicates.push(Duplicate {
                        digest: object.digest,
                        len,
                        content_type: object.content_type,
                        ticket,
                    });
                }
                Admit::NoRoom => {
                    self.counters.lose(Loss::SpoolFull, 1);
                    if let Some(skipped) = self.full_log.allow() {
                        tracing::warn!(
                            digest = %object.digest,
                            len,
                            spool_bytes = self.spool.bytes(),
                            max_bytes = self.spool.max_bytes(),
                            skipped,
                            "spool full; refusing new objects (their events say so)"
                        );
                    }
                }
                Admit::Write { seq, tmp, path } => admitted.push(Admitted {
                    seq,
                    tmp,
                    path,
                    header: super::header::header(&object.content_type),
                    object,
                    ticket,
                }),
            }
        }

        // Create, write, fsync, close and rename: one io_uring submission each for
        // the whole batch; then one fsync of the directory for the renames.
        let tmps: Vec<&Path> = admitted.iter().map(|a| a.tmp.as_path()).collect();
        let created = self.writer.create_all(&tmps, dir::FILE_MODE);
        drop(tmps);
        let mut open: Vec<(Admitted, File)> = Vec::with_capacity(admitted.len());
        for (a, file) in admitted.into_iter().zip(created) {
            match file {
                Ok(file) => open.push((a, file)),
                Err(error) => self.fail(a.seq, &a.tmp, &error, false),
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
        let mut whole: Vec<(Admitted, File)> = Vec::with_capacity(open.len());
        for ((a, file), result) in open.into_iter().zip(written) {
            match result {
                Ok(()) => whole.push((a, file)),
                Err(error) => {
                    drop(file);
                    self.fail(a.seq, &a.tmp, &error, true);
                }
            }
        }
        let files: Vec<&File> = whole.iter().map(|(_, f)| f).collect();
        let synced = self.writer.sync_all(&files);
        drop(files);
        let mut synced_objects: Vec<Admitted> = Vec::with_capacity(whole.len());
        let mut synced_files: Vec<File> = Vec::with_capacity(whole.len());
        for ((a, file), result) in whole.into_iter().zip(synced) {
            match result {
                Ok(()) => {
                    Counters::add(&self.counters.synced_files, 1);
                    synced_objects.push(a);
                    synced_files.push(file);
                }
                Err(error) => {
                    drop(file);
                    self.fail(a.seq, &a.tmp, &error, true);
                }
            }
        }
        let to_rename: Vec<(File, &Path, &Path)> = synced_files
            .into_iter()
            .zip(&synced_objects)
            .map(|(file, a)| (file, a.tmp.as_path(), a.path.as_path()))
            .collect();
        let renamed = self.writer.close_and_rename_all(to_rename);
        let mut done: Vec<(u64, Ticket)> = Vec::with_capacity(synced_objects.len());
        for (a, result) in synced_objects.into_iter().zip(renamed) {
            match result {
                Ok(()) => done.push((a.seq, a.ticket)),
                Err(error) => self.fail(a.seq, &a.tmp, &error, true),
            }
        }
        if !done.is_empty() {
            match self.dir.sync_all() {
                Ok(()) => Counters::add(&self.counters.synced_dirs, 1),
                // The files are whole and renamed; only a power cut could now
                // lose the names. Counted as an error, not as lost.
                Err(error) => {
                    Counters::add(&self.counters.errors, 1);
                    tracing::error!(%error, "cannot fsync the spool directory");
                }
            }
        }
        for (seq, mut ticket) in done {
            // The notice waits on the entry before the uploader can see it.
            if let Some(notice) = ticket.take_notice()
                && !self.spool.notify(seq, notice, false)
            {
                Announcer::dropped(&self.counters);
            }
            self.spool.written(seq);
            ticket.kept();
        }
        for mut d in duplicates {
            if let Some(notice) = d.ticket.take_notice() {
                match self.spool.notify_digest(&d.digest, notice) {
                    Awaited::Uploaded(notice) => self.announcer.stored(
                        &self.counters,
                        notice,
                        &d.digest,
                        d.len,
                        &d.content_type,
                        true,
                    ),
                    Awaited::Full => Announcer::dropped(&self.counters),
                    Awaited::Waiting | Awaited::Gone => {}
                }
            }
            if self.spool.holds(&d.digest) {
                d.ticket.kept();
            }
        }
        self.wake_uploader.notify_one();
    }

    /// Writing `seq` to `tmp` failed: remove the file, forget the object, count it
    /// (a full disk apart from other errors). `created`: the file exists.
    fn fail(&self, seq: u64, tmp: &Path, error: &std::io::Error, created: bool) {
        let no_space = matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        if let Some(skipped) = self.error_log.allow() {
            tracing::error!(path = %tmp.display(), %error, skipped, "spool write failed; refusing the object (its event says so)");
        }
        // Only a file this batch created is ours to remove: `O_EXCL` failing means
        // the name was already taken.
        if created || error.kind() != std::io::ErrorKind::AlreadyExists {
            let _ = fs::remove_file(tmp);
        }
        self.spool.abandon(seq);
        Counters::add(&self.counters.errors, 1);
        self.counters.lose(
            if no_space {
                Loss::NoSpace
            } else {
                Loss::WriteError
            },
            1,
        );
    }
}
