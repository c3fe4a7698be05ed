//! Per-CPU ring readers: one thread per CPU, pinned to it, draining that
//! CPU's ring in batches.
//!
//! The probes submit without waking anyone, except the record that brings a
//! ring past its wake-up mark. A reader drains everything there is, then
//! sleeps in `epoll_wait` until that wake-up or its short poll timeout. Per
//! record there is no allocation, lock, syscall or log: the record is decoded
//! in place ([`tapwire_common::decode`]) and handed, borrowed from the ring, to
//! the handler; the ring slot is released when the handler returns. Counters
//! are plain locals published once per batch.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::SyncSender,
    },
    thread::JoinHandle,
    time::Duration,
};

use tapwire_common::{Record, decode};

use super::{images::ProcEvent, loader::CpuRing};

/// How long a reader sleeps when its ring is quiet and no wake-up came. Bounds
/// the latency of a trickle of records that never reaches the wake-up mark.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long a reader sleeps once its ring has been empty for [`IDLE_AFTER`]:
/// an idle agent wakes a few times a second per CPU, not a hundred; the first
/// records after a quiet spell wait at most this long.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Quiet time after which a reader polls at [`IDLE_POLL_INTERVAL`].
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// A reader's counters, published once per batch.
#[derive(Debug, Default)]
pub struct ReaderCounters {
    /// Records handed to the handler.
    pub records: AtomicU64,
    /// Ring bytes consumed.
    pub bytes: AtomicU64,
    /// Entries that did not decode (skipped).
    pub decode_errors: AtomicU64,
    /// Batches drained.
    pub batches: AtomicU64,
}

/// Errors starting a reader.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// `epoll_create1`/`epoll_ctl` failed.
    #[error("setting up epoll for the cpu {cpu} ring")]
    Epoll {
        /// The CPU.
        cpu: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The thread could not be spawned.
    #[error("spawning the cpu {cpu} reader")]
    Spawn {
        /// The CPU.
        cpu: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running reader thread.
pub struct Reader {
    /// The CPU it drains.
    pub cpu: u32,
    /// Its counters.
    pub counters: Arc<ReaderCounters>,
    pub(super) thread: JoinHandle<()>,
}

/// Owned epoll fd.
struct Epoll(i32);

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this fd and close it once.
        unsafe { libc::close(self.0) };
    }
}

fn epoll_for(fd: i32, cpu: u32) -> Result<Epoll, RingError> {
    let err = |source| RingError::Epoll { cpu, source };
    // SAFETY: plain syscall, no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let ep = Epoll(ep);
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(ep.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(ep)
}

/// Pins the calling thread to `cpu`; a failure is logged (the reader still
/// works, only less locally).
fn pin_to(cpu: u32) {
    // SAFETY: `cpu_set_t` is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE for any online CPU.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the given size.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(cpu, %error, "cannot pin ring reader");
    }
}

/// Starts one reader per ring. `make_handler(cpu)` builds each reader's
/// handler, which then runs on that reader's thread only. `images`, if given,
/// receives every exec, exit and executable-mapping record (for probing files
/// first seen then, and for the process table); it never blocks the reader (full → the event is skipped, and
/// the file is reported again by its next mapping or a rescan). `execs`, if
/// given, receives the pid of every exec record (for the `tap.filters`
/// decision, made on its own thread so that probing files never delays it).
pub fn spawn_readers<F, H>(
    rings: Vec<CpuRing>,
    mut make_handler: F,
    stop: Arc<AtomicBool>,
    images: Option<SyncSender<ProcEvent>>,
    execs: Option<SyncSender<u32>>,
) -> Result<Vec<Reader>, RingError>
where
    F: FnMut(u32) -> H,
    H: RecordSink,
{
    let mut readers = Vec::with_capacity(rings.len());
    for CpuRing { cpu, mut ring } in rings {
        let epoll = epoll_for(ring.as_raw_fd(), cpu)?;
        let mut handler = make_handler(cpu);
        handler.watch(ring.fill());
        let counters = Arc::new(ReaderCounters::default());
        let published = Arc::clone(&counters);
        let stop = Arc::clone(&stop);
        let images = images.clone();
        let execs = execs.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ring-{cpu}"))
            .spawn(move || {
                pin_to(cpu);
                let busy_ms = POLL_INTERVAL.as_millis() as i32;
                let idle_ms = IDLE_POLL_INTERVAL.as_millis() as i32;
                let idle_after = (IDLE_AFTER.as_millis() / POLL_INTERVAL.as_millis()) as u32;
                // Polls in a row that found the ring empty.
                let mut empty_polls = 0u32;
                // SAFETY: epoll_event is plain data.
                let mut events: [libc::epoll_event; 1] = unsafe { std::mem::zeroed() };
                let mut beat = crate::status::health::register(format!("ring-{cpu}"));
                loop {
                    beat.beat();
                    // Before the batch: records written before now are in it.
                    let started = crate::pipeline::now_ns();
                    let (mut records, mut bytes, mut errors) = (0u64, 0u64, 0u64);
                    while let Some(item) = ring.next() {
                        bytes += item.len() as u64;
                        match decode(&item) {
                            Ok(record) => {
                                if let Some(tx) = &images {
                                    image_event(&record, tx);
                                }
                                if let (Some(tx), Record::ProcExec(e)) = (&execs, &record) {
                                    // Never blocks; a skipped exec's events are
                                    // left to the agent's own check.
                                    let _ = tx.try_send(e.header.pid);
                                }
                                handler.record(&item, record);
                                records += 1;
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    handler.passed(started);
                    if records + errors > 0 {
                        handler.drained();
                        published.records.fetch_add(records, Ordering::Relaxed);
                        published.bytes.fetch_add(bytes, Ordering::Relaxed);
                        published.decode_errors.fetch_add(errors, Ordering::Relaxed);
                        published.batches.fetch_add(1, Ordering::Relaxed);
                        empty_polls = 0;
                        continue;
                    }
                    // Acquire pairs with the Release store in `Capture::stop`:
                    // the ring was empty after the stop was requested.
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let timeout_ms = if empty_polls < idle_after {
                        busy_ms
                    } else {
                        idle_ms
                    };
                    empty_polls = empty_polls.saturating_add(1);
                    // SAFETY: `events` has room for 1 event; the fd is ours.
                    unsafe { libc::epoll_wait(epoll.0, events.as_mut_ptr(), 1, timeout_ms) };
                }
                drop(epoll);
            })
            .map_err(|source| RingError::Spawn { cpu, source })?;
        readers.push(Reader {
            cpu,
            counters,
            thread,
        });
    }
    Ok(readers)
}

/// What a reader hands its records to, on its own thread.
///
/// Any `FnMut(&[u8], Record)` closure is one (it ignores [`drained`]).
///
/// [`drained`]: RecordSink::drained
pub trait RecordSink: Send + 'static {
    /// One record: its raw bytes and their decoding, borrowed from the ring.
    fn record(&mut self, raw: &[u8], record: Record<'_>);

    /// The ring is empty for now, after at least one record: the moment to
    /// wake whoever consumes what the records produced, once per batch
    /// rather than once per record.
    fn drained(&mut self) {}

    /// The ring was found empty after `at_ns` (`CLOCK_MONOTONIC`, read
    /// before the batch was taken): every record written before then has
    /// been handed to [`RecordSink::record`]. Called at every poll.
    fn passed(&mut self, _at_ns: u64) {}

    /// How full the sink's ring is, readable while a record is being handed
    /// over (a sink that waits for room may stop waiting once the ring is
    /// nearly full). Called once, before the first record.
    fn watch(&mut self, _fill: super::ringbuf::RingFill) {}
}

impl<F> RecordSink for F
where
    F: FnMut(&[u8], Record<'_>) + Send + 'static,
{
    #[inline]
    fn record(&mut self, raw: &[u8], record: Record<'_>) {
        self(raw, record)
    }
}

/// Forwards exec, exit and executable-mapping records to the control thread.
#[inline]
fn image_event(record: &Record<'_>, tx: &SyncSender<ProcEvent>) {
    let event = match record {
        Record::ProcExec(e) => ProcEvent::Exec {
            pid: e.header.pid,
            ts_ns: e.header.ts_ns,
            filename: e.filename,
        },
        Record::ProcExit(e) => ProcEvent::Exit {
            pid: e.header.pid,
            ts_ns: e.header.ts_ns,
        },
        Record::ExecMap(m) => ProcEvent::Map {
            pid: m.header.pid,
            ts_ns: m.header.ts_ns,
            key: tapwire_common::FileKey {
                dev: m.dev,
                ino: m.ino,
            },
            addr: m.addr,
            fd: m.fd,
        },
        _ => return,
    };
    let _ = tx.try_send(event);
}
