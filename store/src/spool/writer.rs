//! The bounded queue in front of the spool, and the storage thread that drains it.
//!
//! `put` only pushes onto a bounded channel ([`PendingQueue::push`]): no lock, no
//! allocation, no syscall, except that a full queue makes the caller wait for the
//! storage thread to take objects (backpressure, [`crate::room`]). The storage
//! thread takes objects off in batches,
//! deduplicates them against the spool, appends the batch to the open segment
//! with one vectored write and one `fdatasync`, and only then settles the
//! objects' tickets (their events may go out) and wakes the uploader. A ticket's notice stays with the spool entry until the uploader has
//! stored it; one for an object already uploaded is told at once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::dir::{self, Admit, AheadWait, Awaited, Spool};
use super::header::write_header;
use crate::announce::Announcer;
use crate::counters::{Counters, Loss};
use crate::ratelog::LogLimit;
use crate::room::{Room, Taken};
use crate::{Notice, Object, Ticket};

/// Objects waiting in memory for the storage thread, at most: a burst of a few
/// seconds of a busy node's payloads (the byte limit below usually binds first).
pub const QUEUE_OBJECTS: usize = 16 * 1024;
/// Objects appended per write and `fdatasync`, at most.
const WRITE_BATCH: usize = 256;
/// Object bytes appended per write and `fdatasync`, about (a batch stops
/// growing once past it): enough that a sync is shared by many objects,
/// little enough that one sync never keeps the thread from taking queued
/// objects for long. Shards that find the queue full wait for it, and past
/// [`crate::room::PUSHBACK_WAIT`] without it taking anything they refuse objects.
const WRITE_BATCH_BYTES: usize = 4 << 20;
/// A batch smaller than this (and than a quarter of [`WRITE_BATCH_BYTES`])
/// waits [`GATHER`] for more objects before it is written. With a distinct
/// object per request at about 10 k requests/s, the thread took a few
/// objects at a time and paid a vectored write, a sync, an uploader wake-up
/// and a rewrite of the same partly filled page per few objects; the shards
/// that queued them paid a wake-up of this thread per batch.
const GATHER_BELOW: usize = 64;
/// How long a small batch waits for more (about; a sleep, so objects queued
/// meanwhile wake nobody). An object is kept, and its event may go out, that
/// much later.
const GATHER: Duration = Duration::from_millis(1);
/// Buffers passed to one `pwritev` (the kernel's `IOV_MAX`).
const IOV_MAX: usize = 1024;
/// How often an idle storage thread looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Idle polls after which the open segment is sealed, so that a spool whose
/// objects are all uploaded leaves no file behind.
const IDLE_POLLS_BEFORE_SEAL: u32 = 20;
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
    /// [`crate::room::PUSHBACK_WAIT`] and only while the kernel's rings are
    /// not pressed ([`crate::room::Pressure`]); past it the object is dropped
    /// and counted.
    /// `ticket` is settled once the object is spooled and synced, or dropped (not
    /// kept).
    pub fn push(&self, object: Object, ticket: Ticket) {
        Counters::add(&self.counters.here().accepted, 1);
        let len = object.bytes.len() as u64;
        let taken = self
            .room
            .take_sheddable(len, || Counters::add(&self.counters.here().waits, 1));
        match taken {
            Taken::Now | Taken::AfterWait => {}
            Taken::Refused { .. } => return self.counters.lose(Loss::QueueFull, 1),
            Taken::Shed => return self.counters.lose(Loss::Shed, 1),
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

/// The segment being appended to.
#[derive(Debug)]
struct OpenSegment {
    n: u64,
    file: File,
    /// Its length: where the next object goes.
    end: u64,
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
    segment: Option<OpenSegment>,
    /// The batch's object headers, one after another (reused).
    headers: Vec<u8>,
    /// The spool directory, fsynced after each segment is created.
    dir: File,
    /// An announcement being written ahead (reused).
    ahead: Vec<u8>,
    /// Announcements were kept on disk in this batch: flush them.
    ahead_kept: bool,
    full_log: LogLimit,
    error_log: LogLimit,
}

/// An admitted object on its way to disk.
struct Admitted {
    seq: u64,
    /// Its header in [`StorageThread::headers`].
    header: std::ops::Range<usize>,
    object: Object,
    ticket: Ticket,
}

/// An object whole and synced in a segment.
struct Durable {
    seq: u64,
    segment: u64,
    /// Where its bytes start in the segment.
    offset: u64,
    ticket: Ticket,
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
        let mut thread = StorageThread {
            rx,
            room,
            spool,
            counters,
            wake_uploader,
            stop,
            announcer,
            segment: None,
            headers: Vec::new(),
            ahead: Vec::new(),
            ahead_kept: false,
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
        let mut idle_polls = 0u32;
        loop {
            match self.rx.recv_timeout(POLL_INTERVAL) {
                Ok(object) => batch.push(object),
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Acquire) {
                        break;
                    }
                    idle_polls += 1;
                    if idle_polls == IDLE_POLLS_BEFORE_SEAL {
                        self.seal();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            idle_polls = 0;
            let mut bytes = batch[0].0.bytes.len();
            self.take_queued(&mut batch, &mut bytes);
            if batch.len() < GATHER_BELOW && bytes < WRITE_BATCH_BYTES / 4 {
                // Group commit: objects that come in the next moment share
                // this batch's write and sync.
                std::thread::sleep(GATHER);
                self.take_queued(&mut batch, &mut bytes);
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
        self.seal();
    }

    /// Adds what is queued now to `batch` (and its length to `bytes`), up to
    /// a batch's limits.
    fn take_queued(&self, batch: &mut Vec<(Object, Ticket)>, bytes: &mut usize) {
        while batch.len() < WRITE_BATCH && *bytes < WRITE_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(object) => {
                    *bytes += object.0.bytes.len();
                    batch.push(object);
                }
                Err(_) => break,
            }
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<(Object, Ticket)>) {
        if batch.is_empty() {
            return;
        }
        let mut admitted: Vec<Admitted> = Vec::with_capacity(batch.len());
        /// An object the spool already has, pending or uploaded.
        struct Duplicate {
            digest: crate::Digest,
            len: u64,
            content_type: Arc<str>,
            ticket: Ticket,
        }
        // Objects already in the spool or uploaded: kept once the batch they may
        // share a segment with is settled.
        let mut duplicates: Vec<Duplicate> = Vec::new();
        self.headers.clear();
        for (object, ticket) in batch.drain(..) {
            let len = object.bytes.len() as u64;
            self.room.give_back(len);
            match self.spool.admit(object.digest, &object.content_type, len) {
                Admit::Duplicate => {
                    Counters::add(&self.counters.here().deduplicated, 1);
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
                Admit::Write { seq } => {
                    let start = self.headers.len();
                    write_header(
                        &mut self.headers,
                        object.digest.as_bytes(),
                        len,
                        &object.content_type,
                    );
                    admitted.push(Admitted {
                        seq,
                        header: start..self.headers.len(),
                        object,
                        ticket,
                    });
                }
            }
        }
        let (done, seal) = self.append(admitted);
        for Durable {
            seq,
            segment,
            offset,
            mut ticket,
        } in done
        {
            // The notice waits on the entry before the uploader can see it.
            if let Some(notice) = ticket.take_notice()
                && let Err(notice) = self.spool.notify(seq, notice, false)
            {
                self.wait_ahead(seq, notice, false, None);
            }
            self.spool.written(seq, segment, offset);
            ticket.kept();
        }
        // Only now that its objects are in the index: sealing a segment none
        // of whose objects waits deletes it.
        if seal {
            self.seal();
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
                    Awaited::Full(notice, seq) => {
                        let object = (d.digest, d.len, Arc::clone(&d.content_type));
                        self.wait_ahead(seq, notice, true, Some(object));
                    }
                    Awaited::Waiting | Awaited::Gone => {}
                }
            }
            if self.spool.holds(&d.digest) {
                d.ticket.kept();
            }
        }
        if std::mem::take(&mut self.ahead_kept) {
            for _ in 0..self.spool.flush_ahead() {
                Announcer::dropped(&self.counters);
            }
        }
        self.wake_uploader.notify_one();
    }

    /// Writes `notice`'s announcement ahead and keeps it on disk until entry
    /// `seq` is uploaded: too many wait in memory already. The entry's digest,
    /// length and content type go into it; `object`'s (the same digest) if
    /// the entry is gone already.
    fn wait_ahead(
        &mut self,
        seq: u64,
        notice: Notice,
        deduplicated: bool,
        object: Option<(crate::Digest, u64, Arc<str>)>,
    ) {
        let Some((digest, len, content_type)) = self.spool.entry_of(seq).or(object) else {
            Announcer::dropped(&self.counters);
            return;
        };
        self.ahead.clear();
        let Some(by) = self.announcer.write_ahead(
            notice,
            &digest,
            len,
            &content_type,
            deduplicated,
            &mut self.ahead,
        ) else {
            Announcer::dropped(&self.counters);
            return;
        };
        match self.spool.wait_ahead(seq, &digest, &self.ahead, &by) {
            AheadWait::Waiting => self.ahead_kept = true,
            AheadWait::Now => self
                .announcer
                .announce_ahead(&self.counters, &*by, &self.ahead),
            AheadWait::Gone => {}
            AheadWait::Full => Announcer::dropped(&self.counters),
        }
    }

    /// Appends `admitted` to the open segment (opening one if needed) with one
    /// vectored write, and syncs it. Returns the objects now durable, and
    /// whether the segment is to be sealed once they are in the index. The
    /// others are refused and counted.
    fn append(&mut self, admitted: Vec<Admitted>) -> (Vec<Durable>, bool) {
        if admitted.is_empty() {
            return (Vec::new(), false);
        }
        let (n, start) = match self.open_segment() {
            Ok(seg) => (seg.n, seg.end),
            Err(error) => {
                for a in admitted {
                    self.fail(a.seq, &error);
                }
                return (Vec::new(), false);
            }
        };
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(admitted.len() * 2);
        // Each object's offset of its bytes, and the end of its record.
        let mut places: Vec<(u64, u64)> = Vec::with_capacity(admitted.len());
        let mut at = start;
        for a in &admitted {
            let header = &self.headers[a.header.clone()];
            bufs.push(header);
            bufs.push(&a.object.bytes);
            let offset = at + header.len() as u64;
            at = offset + a.object.bytes.len() as u64;
            places.push((offset, at));
        }
        let Some(seg) = self.segment.as_mut() else {
            unreachable!("open_segment opened it");
        };
        let (written, result) = write_all_at(&seg.file, &bufs, start);
        drop(bufs);
        // Objects wholly written; after an error, the file is cut back to the
        // last of them, so the segment holds only whole objects.
        let whole = places.iter().take_while(|p| p.1 <= start + written).count();
        let mut end = places[..whole].last().map_or(start, |p| p.1);
        let mut failed: Option<io::Error> = None;
        if let Err(error) = result {
            if let Err(e) = seg.file.set_len(end) {
                tracing::debug!(error = %e, "cannot cut the spool segment back");
            }
            failed = Some(error);
        }
        let synced = if whole == 0 {
            Ok(())
        } else {
            seg.file.sync_data()
        };
        match synced {
            Ok(()) if whole > 0 => Counters::add(&self.counters.here().synced_files, 1),
            Ok(()) => {}
            Err(error) => {
                // Not known to be on disk: none of them is kept.
                end = start;
                failed = Some(error);
            }
        }
        let kept = if end == start { 0 } else { whole };
        seg.end = end.max(seg.end);
        let seal = failed.is_some() || seg.end >= dir::SEGMENT_BYTES;
        let mut done = Vec::with_capacity(kept);
        let mut admitted = admitted.into_iter();
        for (a, place) in admitted.by_ref().zip(&places).take(kept) {
            done.push(Durable {
                seq: a.seq,
                segment: n,
                offset: place.0,
                ticket: a.ticket,
            });
        }
        // Objects past the kept ones exist only when a write or sync failed.
        if let Some(error) = &failed {
            for a in admitted {
                self.fail(a.seq, error);
            }
        }
        (done, seal)
    }

    /// The open segment, created if there is none.
    fn open_segment(&mut self) -> io::Result<&mut OpenSegment> {
        if self.segment.is_none() {
            let (n, path) = self.spool.new_segment();
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(dir::FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            // The segment's name must outlive a crash with the objects in it.
            let file = file.and_then(|f| self.dir.sync_all().map(|()| f));
            match file {
                Ok(file) => {
                    Counters::add(&self.counters.here().synced_dirs, 1);
                    self.segment = Some(OpenSegment { n, file, end: 0 });
                }
                Err(error) => {
                    self.spool.seal(n);
                    return Err(error);
                }
            }
        }
        Ok(self.segment.as_mut().expect("opened above"))
    }

    /// No more objects go into the open segment.
    fn seal(&mut self) {
        if let Some(seg) = self.segment.take() {
            self.spool.seal(seg.n);
        }
    }

    /// Writing `seq` failed: forget the object, count it (a full disk apart
    /// from other errors).
    fn fail(&self, seq: u64, error: &io::Error) {
        let no_space = matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        if let Some(skipped) = self.error_log.allow() {
            tracing::error!(dir = %self.spool.dir().display(), %error, skipped, "spool write failed; refusing the object (its event says so)");
        }
        self.spool.abandon(seq);
        Counters::add(&self.counters.here().errors, 1);
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

/// Writes `bufs` one after another into `file` from `offset`, with as few
/// `pwritev` calls as it takes. Returns the bytes written and the error that
/// stopped it, if one did.
fn write_all_at(file: &File, bufs: &[&[u8]], mut offset: u64) -> (u64, io::Result<()>) {
    let mut written = 0u64;
    // The next buffer to write and how much of it is written.
    let (mut i, mut skip) = (0usize, 0usize);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(bufs.len().min(IOV_MAX));
    loop {
        while i < bufs.len() && bufs[i].len() == skip {
            i += 1;
            skip = 0;
        }
        if i == bufs.len() {
            return (written, Ok(()));
        }
        iov.clear();
        iov.extend(
            std::iter::once(&bufs[i][skip..])
                .chain(bufs[i + 1..].iter().copied())
                .take(IOV_MAX)
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr().cast_mut().cast(),
                    iov_len: b.len(),
                }),
        );
        let Ok(at) = libc::off_t::try_from(offset) else {
            return (written, Err(io::Error::from_raw_os_error(libc::EFBIG)));
        };
        // SAFETY: every iovec points into a slice of `bufs`, alive and
        // unchanged for the call; the kernel only reads them.
        let n =
            unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (written, Err(error));
        }
        if n == 0 {
            return (written, Err(io::ErrorKind::WriteZero.into()));
        }
        let mut n = n as usize;
        written += n as u64;
        offset += n as u64;
        while n > 0 {
            let left = bufs[i].len() - skip;
            if n >= left {
                n -= left;
                i += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Receipt;

    /// Puts `objects` through the storage thread and waits until each is
    /// settled; returns whether each was kept.
    fn spool_all(queue: &PendingQueue, objects: &[Vec<u8>]) -> Vec<bool> {
        let receipt = Receipt::new();
        for (i, bytes) in objects.iter().enumerate() {
            let object = Object::new(
                "application/octet-stream",
                bytes::Bytes::from(bytes.clone()),
            );
            queue.push(object, receipt.ticket(i));
        }
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !receipt.settled() {
            assert!(std::time::Instant::now() < until, "not settled");
            std::thread::sleep(Duration::from_millis(5));
        }
        (0..objects.len()).map(|i| receipt.kept(i)).collect()
    }

    /// A segment that passes its size with a batch is sealed only once that
    /// batch's objects are in the index: sealed before, with every earlier
    /// object already uploaded, it was deleted under objects just counted as
    /// kept.
    #[test]
    fn objects_of_the_batch_that_fills_a_segment_stay_readable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), 1 << 30).expect("open");
        let spool = Arc::new(spool);
        let stop = Arc::new(AtomicBool::new(false));
        let (queue, thread) = StorageThread::spawn(
            "test",
            64 << 20,
            Arc::clone(&spool),
            Arc::default(),
            Arc::new(Notify::new()),
            Arc::clone(&stop),
            Arc::new(Announcer::new("test", None)),
        )
        .expect("spawn");
        let mib = |i: u8| vec![i; 1 << 20];
        // 7 MiB into the open segment, then all of it uploaded.
        let first: Vec<Vec<u8>> = (0..7).map(mib).collect();
        assert!(spool_all(&queue, &first).iter().all(|&k| k));
        for entry in spool.take_batch(16) {
            spool.complete(entry.seq);
        }
        // The next batch takes the segment past its size.
        let second: Vec<Vec<u8>> = (7..9).map(mib).collect();
        assert!(spool_all(&queue, &second).iter().all(|&k| k));
        let entries = spool.take_batch(16);
        assert_eq!(entries.len(), 2, "both kept objects wait for upload");
        for (entry, bytes) in entries.iter().zip(&second) {
            let got = crate::s3::multipart::read_range(&entry.path, entry.offset, entry.len)
                .expect("the object's bytes are still on disk");
            assert!(got[..] == bytes[..]);
        }
        stop.store(true, Ordering::Release);
        drop(queue);
        thread.join().expect("storage thread");
    }

    #[test]
    fn vectored_writes_land_whole_past_iov_max_and_after_empty_buffers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("seg");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        let owned: Vec<Vec<u8>> = (0..3 * IOV_MAX)
            .map(|i| vec![(i % 251) as u8; if i % 7 == 0 { 0 } else { i % 300 }])
            .collect();
        let bufs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let want: Vec<u8> = owned.concat();
        let (written, result) = write_all_at(&file, &bufs, 10);
        result.expect("written");
        assert_eq!(written, want.len() as u64);
        let got = std::fs::read(&path).expect("read back");
        assert_eq!(&got[..10], &[0; 10], "a hole before the offset");
        assert!(got[10..] == want[..], "the buffers in order");
    }
}
