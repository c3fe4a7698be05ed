//! Kernel capture: the eBPF probes' user-space half.
//!
//! [`Capture::start`] loads the probes ([`loader`]), attaches TLS uprobes to the
//! files found by [`targets`] at the addresses chosen by [`placement`], applies
//! the [`selection`], and starts one [`ring`] reader per CPU. Each reader hands
//! every record, decoded and borrowed from its ring, to a handler the caller
//! built for that CPU:
//!
//! ```no_run
//! use tapwire::capture::{Capture, Options};
//! let capture = Capture::start(Options::default(), |_cpu| {
//!     |_raw: &[u8], record: tapwire_common::Record<'_>| { let _ = record; }
//! })?;
//! # Ok::<(), tapwire::capture::CaptureError>(())
//! ```
//!
//! A control thread probes files first seen later — an executable at exec, a
//! library when a process maps it ([`images`]) — and owns the probes:
//! [`Capture::stop`] (or drop) stops the readers after a last drain and
//! detaches everything.

pub mod btf;
pub mod filters;
pub mod golang;
pub mod images;
pub mod kernel;
pub mod libraries;
pub mod links;
pub mod loader;
pub mod nss;
pub mod placement;
pub mod procs;
pub mod records;
pub mod ring;
pub mod ringbuf;
pub mod selection;
pub mod sendfile;
#[cfg(test)]
mod stack_depth;
pub mod sweep;
pub mod targets;
pub mod teardown;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use libraries::{LibraryKind, ProbedCounts};
pub use loader::{LoaderError, Options};
pub use ring::{ReaderCounters, RecordSink, RingError};
pub use selection::Selection;
pub use tapwire_common::{DropReason, Record};

use images::{LiveWindow, ProcEvent, SharedCounters, Sighting};
use loader::{DropCounters, Probes};
use procs::ProcessTable;
use targets::{FileId, Targets, TlsTarget};

/// Exec and mapping records waiting for the control thread; beyond this they
/// are skipped (a skipped file is reported again by its next mapping, and the
/// rescans below find it).
const IMAGE_QUEUE: usize = 4096;

/// After an exec, a program's libraries appear as the dynamic loader (or a
/// `dlopen`) maps them. Each mapping is reported as it is made; as a safety net
/// for a report skipped on a full queue, the maps are also rescanned after
/// these delays.
const RESCAN_AFTER: [Duration; 4] = [
    Duration::from_millis(20),
    Duration::from_millis(150),
    Duration::from_millis(800),
    Duration::from_secs(3),
];

/// The longest the control thread waits for an exec or mapping when nothing
/// else is due. Stopping does not wait for it: the readers stop first, and
/// their closing the channel wakes it.
const CONTROL_IDLE_WAIT: Duration = Duration::from_secs(1);

/// How often exited processes are released from the process table.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// How often kernel map entries of exited processes are reclaimed
/// ([`sweep`]): often enough that a burst of short-lived processes leaves the
/// maps within seconds, rarely enough that walking them costs nothing.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How often held files are checked for processes still mapping them: a
/// stat of each known user; a scan of every process's maps only when all
/// known users of a file are gone.
const RELEASE_EVERY: Duration = Duration::from_secs(1);
/// Unused held files are released once no exec or mapping has brought a new
/// file for this long (see `Control::release_unused`).
const RELEASE_WHEN_QUIET: Duration = Duration::from_secs(2);
/// ... or once unused this long, however busy.
const RELEASE_UNUSED_AFTER: Duration = Duration::from_secs(60);
/// ... or at once while more than this many wait.
const MAX_UNUSED_HELD: usize = 64;

/// Errors starting capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Loading or attaching the probes failed.
    #[error("loading probes")]
    Loader(#[from] LoaderError),
    /// Starting a ring reader failed.
    #[error("starting ring readers")]
    Ring(#[from] RingError),
    /// The control thread could not be spawned.
    #[error("spawning the capture control thread")]
    Spawn(#[source] std::io::Error),
}

/// Running capture: probes attached, one reader per CPU.
pub struct Capture {
    stop: Arc<AtomicBool>,
    readers: Vec<ring::Reader>,
    control: Option<JoinHandle<Probes>>,
    /// The probes once the control thread has stopped.
    stopped: StoppedProbes,
    filters: Option<JoinHandle<()>>,
    /// The sweep thread and the sender whose drop stops it.
    sweeper: Option<(SyncSender<()>, JoinHandle<()>)>,
    drops: DropCounters,
    fallbacks: Arc<AtomicU64>,
    /// TLS calls are probed with uprobe sessions (BPF links).
    uprobe_sessions: bool,
    probed: Arc<ProbedCounts>,
    images: SharedCounters,
    swept: Arc<sweep::SweepCounters>,
    processes: Arc<ProcessTable>,
}

impl Capture {
    /// Loads and attaches the probes and starts the readers. `make_handler(cpu)`
    /// is called once per CPU; the handler it returns runs on that CPU's
    /// reader thread for every record of that CPU's ring. When this returns,
    /// probes are attached to every TLS file known at start.
    pub fn start<F, H>(opts: Options, make_handler: F) -> Result<Self, CaptureError>
    where
        F: FnMut(u32) -> H,
        H: ring::RecordSink,
    {
        let (mut probes, rings, drops) = loader::load(&opts)?;
        let mut targets = Targets::default();
        // Probes belong to files: attached once per file, they fire in every
        // process that maps it, now or later, from its first instruction. The
        // selection is applied in the kernel (`select.rs`), so a program started
        // later is covered before its first TLS call with or without a selection.
        for lib in &targets.system_libraries() {
            probes.attach_target(lib, None);
        }
        let pids = targets::all_pids();
        for &pid in &pids {
            attach_process(&mut probes, &mut targets, pid);
        }
        let mut filtered = probes.take_filtered()?;
        for (pid, skip) in opts.processes.scan(pids) {
            if filtered.set(pid, skip) {
                opts.processes.count_filtered_program();
            }
        }
        probes.log_probed();
        let probed = Arc::clone(&probes.probed);
        let fallbacks = Arc::new(AtomicU64::new(probes.fallbacks.load(Ordering::Relaxed)));
        let uprobe_sessions = probes.uprobe_sessions();
        let stop = Arc::new(AtomicBool::new(false));
        let images = SharedCounters::default();
        let swept = Arc::new(sweep::SweepCounters::default());
        let sweeper = spawn_sweep_thread(probes.take_sweeper(), Arc::clone(&swept))?;
        let (tx, rx) = sync_channel(IMAGE_QUEUE);
        let (filter_thread, execs) = if opts.processes.has_filters() {
            let (execs, thread) = spawn_filter_thread(filtered, Arc::clone(&opts.processes))?;
            (Some(thread), Some(execs))
        } else {
            (None, None)
        };
        let readers = ring::spawn_readers(rings, make_handler, Arc::clone(&stop), Some(tx), execs)?;
        let control = {
            let stop = Arc::clone(&stop);
            let fallbacks = Arc::clone(&fallbacks);
            let images = Arc::clone(&images);
            let processes = Arc::clone(&opts.processes);
            std::thread::Builder::new()
                .name("capture-control".into())
                .spawn(move || {
                    let mut control = Control {
                        probes,
                        targets,
                        images,
                        processes,
                        held: HashMap::new(),
                        release_scan: None,
                        releasing: VecDeque::new(),
                        last_sighting: Instant::now(),
                    };
                    control.run(rx, &stop, &fallbacks);
                    control.probes
                })
                .map_err(CaptureError::Spawn)?
        };
        tracing::info!(cpus = readers.len(), "capture started");
        Ok(Self {
            stop,
            readers,
            control: Some(control),
            stopped: StoppedProbes(None),
            filters: filter_thread,
            sweeper: Some(sweeper),
            drops,
            fallbacks,
            uprobe_sessions,
            probed,
            images,
            swept,
            processes: Arc::clone(&opts.processes),
        })
    }

    /// Kernel maps keyed by process: entries of exited processes reclaimed,
    /// and entries held, per map.
    pub fn kernel_maps(&self) -> Vec<(String, sweep::MapCount)> {
        self.swept.read()
    }

    /// What `tap.filters` left out so far.
    pub fn filtered(&self) -> Filtered {
        Filtered {
            programs: self.processes.filtered_programs(),
            late_events: self.processes.filtered_late(),
        }
    }

    /// Files first seen at exec or mapping: how many got TLS probes and how
    /// long after the exec or mapping their probes were live.
    pub fn late_files(&self) -> LateFiles {
        let c = self.images.lock().unwrap_or_else(|e| e.into_inner());
        LateFiles {
            maps: c.maps,
            unresolved: c.unresolved,
            held: c.held,
            released: c.released,
            live_window: c.live_window(),
            after_exec: c.live_window_after(Sighting::Exec),
            after_map: c.live_window_after(Sighting::Map),
        }
    }

    /// Kernel-side drop counters summed over CPUs, in [`DropReason::ALL`] order.
    pub fn drops(&self) -> [u64; DropReason::COUNT as usize] {
        self.drops.read()
    }

    /// Records lost because a CPU's ring was full, per CPU (index = CPU id).
    pub fn ring_full_per_cpu(&self) -> Vec<u64> {
        self.drops.per_cpu(DropReason::RingFull)
    }

    /// Connections the probes left out on purpose, in
    /// [`tapwire_common::config::Exclusion::ALL`] order.
    pub fn excluded(&self) -> [u64; tapwire_common::config::Exclusion::COUNT as usize] {
        self.drops.excluded()
    }

    /// Each reader's counters, with its CPU.
    pub fn reader_counters(&self) -> Vec<(u32, Arc<ReaderCounters>)> {
        self.readers
            .iter()
            .map(|r| (r.cpu, Arc::clone(&r.counters)))
            .collect()
    }

    /// Files with TLS probes so far, per library kind.
    pub fn probed(&self) -> Arc<ProbedCounts> {
        Arc::clone(&self.probed)
    }

    /// TLS probe points placed on a single-stepped instruction so far.
    pub fn placement_fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// True if TLS calls are probed with uprobe sessions (one probe hit per
    /// call outside the selection), false if with a uprobe and a uretprobe.
    pub fn uprobe_sessions(&self) -> bool {
        self.uprobe_sessions
    }

    /// Stops probing new files, drains the rings one last time and joins all
    /// threads. The probes stay attached until the returned handle is
    /// dropped: see [`StoppedProbes`].
    pub fn stop(mut self) -> StoppedProbes {
        self.shutdown();
        StoppedProbes(self.stopped.0.take())
    }

    fn shutdown(&mut self) {
        // Release pairs with the readers' Acquire load.
        self.stop.store(true, Ordering::Release);
        for reader in self.readers.drain(..) {
            let _ = reader.thread.join();
        }
        // Their channels closed with the last reader, which wakes both.
        if let Some(control) = self.control.take() {
            // The control thread owns the probes and hands them back.
            self.stopped.0 = control.join().ok();
        }
        if let Some(filters) = self.filters.take() {
            let _ = filters.join();
        }
        if let Some((wake, sweeper)) = self.sweeper.take() {
            drop(wake);
            let _ = sweeper.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The probes of a stopped capture, still attached but no longer read.
/// Dropping this detaches them, which takes the kernel a grace period per
/// uprobe, one at a time (seconds for a host's TLS libraries on a busy
/// machine): the agent drops it after it has written its final counters.
pub struct StoppedProbes(Option<Probes>);

impl Drop for StoppedProbes {
    fn drop(&mut self) {
        if let Some(probes) = self.0.take() {
            drop(probes);
            tracing::info!("probes detached");
        }
    }
}

/// Starts the thread that reclaims kernel map entries of exited processes
/// every [`SWEEP_EVERY`]; it ends when the returned sender is dropped.
fn spawn_sweep_thread(
    mut sweeper: sweep::Sweeper,
    counters: Arc<sweep::SweepCounters>,
) -> Result<(SyncSender<()>, JoinHandle<()>), CaptureError> {
    let (wake, rx) = sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("capture-sweep".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(SWEEP_EVERY) {
                sweeper.sweep(&counters);
            }
        })
        .map_err(CaptureError::Spawn)?;
    Ok((wake, thread))
}

/// Exec records waiting for the filter thread (pids); beyond this they are
/// skipped, and the program's events are left to the agent's own check
/// (`filtered_late`).
const EXEC_QUEUE: usize = 4096;

/// Starts the thread that decides `tap.filters` for each exec'd program and
/// writes the decision into the probes' `FILTERED` map. It does nothing else,
/// so the time from an exec to its decision in the kernel is a path lookup
/// and a map update, whatever the control thread is busy with.
fn spawn_filter_thread(
    mut map: loader::FilteredMap,
    processes: Arc<ProcessTable>,
) -> Result<(SyncSender<u32>, JoinHandle<()>), CaptureError> {
    let (tx, rx) = sync_channel::<u32>(EXEC_QUEUE);
    let thread = std::thread::Builder::new()
        .name("capture-filters".into())
        .spawn(move || {
            // Ends when the readers (the senders) are gone.
            while let Ok(pid) = rx.recv() {
                // The probes cleared the pid's entry at its exec: only a
                // program some entry names needs a write.
                let skip = processes.skip_running(pid);
                if skip != 0 && map.set(pid, skip) {
                    processes.count_filtered_program();
                }
            }
        })
        .map_err(CaptureError::Spawn)?;
    Ok((tx, thread))
}

/// Attaches the TLS probes of every TLS file a process maps now (and its
/// executable), once per file. Returns how many probe points were new.
fn attach_process(probes: &mut Probes, targets: &mut Targets, pid: u32) -> usize {
    targets
        .of_process(pid)
        .iter()
        .map(|f| probes.attach_target(f, None))
        .sum()
}

/// What `tap.filters` left out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filtered {
    /// Programs whose decision reached the probes (at their exec, or at
    /// agent start): skipped in the kernel from then on.
    pub programs: u64,
    /// Events dropped in user space because a filter skips their process
    /// (connections tracked before the decision reached the probes).
    pub late_events: u64,
}

/// Counters of files first seen at exec or mapping.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LateFiles {
    /// Executable mappings of not yet inspected files reported by the kernel.
    pub maps: u64,
    /// Mappings whose file could not be opened (the process was gone).
    pub unresolved: u64,
    /// TLS files first seen through a process and held open now, their
    /// probes attached.
    pub held: u64,
    /// Such files released (probes detached, descriptor closed) once no
    /// process mapped them.
    pub released: u64,
    /// Exec or mapping to probes live, for files that got TLS probes then.
    pub live_window: LiveWindow,
    /// The same for executables first seen at exec.
    pub after_exec: LiveWindow,
    /// The same for libraries first seen when mapped.
    pub after_map: LiveWindow,
}

/// The control thread's state: it owns the probes.
struct Control {
    probes: Probes,
    targets: Targets,
    images: SharedCounters,
    processes: Arc<ProcessTable>,
    /// TLS files first seen through a process, kept open while processes
    /// map them (their targets' paths are `/proc/self/fd/N`).
    held: HashMap<FileId, Held>,
    /// The running release scan's result, when one runs.
    release_scan: Option<Receiver<ReleaseScan>>,
    /// Held files the last scan found unused, detached one per turn of the
    /// control loop (each takes the kernel 0.3-1 s): new files are probed
    /// and `stop` is seen between them.
    releasing: VecDeque<FileId>,
    /// When an exec or a mapping last brought a file to probe.
    last_sighting: Instant,
}

/// A TLS file first seen through a process, held open.
struct Held {
    /// Keeps the target's `/proc/self/fd/N` path valid.
    _file: File,
    /// The kernel's name for it, in `INSPECTED`.
    key: tapwire_common::FileKey,
    /// Processes known to map it.
    users: HashSet<u32>,
    /// Since when no known process maps it.
    unused_since: Option<Instant>,
    /// A scan for processes mapping it is running.
    scanning: bool,
    /// When its probes went live (`CLOCK_MONOTONIC` ns), if a rescan
    /// attached it before its mapping's record was handled: that record
    /// then measures its window against this time.
    /// With the probe points attached then.
    unmeasured: Option<(u64, usize)>,
}

/// The files a release scan looked for and the `(pid, file)` mappings found.
type ReleaseScan = (Vec<FileId>, Vec<(u32, FileId)>);

impl Control {
    fn run(&mut self, rx: Receiver<ProcEvent>, stop: &AtomicBool, fallbacks: &AtomicU64) {
        // (pid, when, next delay index)
        let mut rescans: Vec<(u32, Instant, usize)> = Vec::new();
        let mut last_expiry = Instant::now();
        let mut last_release = Instant::now();
        while !stop.load(Ordering::Acquire) {
            // Wake for the next event, or the next rescan, release check or
            // expiry due: an idle agent's control thread wakes once a second.
            let now = Instant::now();
            let wait = if self.release_due() {
                Duration::ZERO
            } else {
                rescans
                    .iter()
                    .map(|&(_, due, _)| due)
                    .chain([last_release + RELEASE_EVERY, last_expiry + EXPIRE_EVERY])
                    .min()
                    .map_or(CONTROL_IDLE_WAIT, |due| due.saturating_duration_since(now))
                    .min(CONTROL_IDLE_WAIT)
            };
            match rx.recv_timeout(wait) {
                // Records come only from selected processes when selecting.
                Ok(event) => {
                    self.handle(event);
                    if let ProcEvent::Exec { pid, .. } = event {
                        rescans.push((pid, Instant::now() + RESCAN_AFTER[0], 0));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            let mut i = 0;
            while i < rescans.len() {
                let (pid, due, step) = rescans[i];
                if due > now {
                    i += 1;
                    continue;
                }
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    self.rescan(pid);
                }
                if let Some(delay) = RESCAN_AFTER.get(step + 1) {
                    rescans[i] = (pid, now + *delay, step + 1);
                    i += 1;
                } else {
                    rescans.swap_remove(i);
                }
            }
            fallbacks.store(
                self.probes.fallbacks.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            if last_release.elapsed() >= RELEASE_EVERY {
                self.release_unused();
                last_release = Instant::now();
            }
            self.release_next();
            if last_expiry.elapsed() >= EXPIRE_EVERY {
                self.processes.expire();
                last_expiry = Instant::now();
            }
        }
    }

    /// Inspects `file` (opened through a `/proc/PID/…` link that dies with
    /// its process, `pid`'s) through a descriptor of our own: a new TLS target
    /// keeps it open, so its path stays valid for attaching, until no process
    /// maps the file ([`Control::release_unused`]).
    fn inspect_held(&mut self, file: File, pid: u32) -> Option<Arc<TlsTarget>> {
        let own = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let target = self.targets.inspect(&own)?;
        if let Some(held) = self.held.get_mut(&target.id) {
            held.users.insert(pid);
        } else if target.path == own {
            tracing::debug!(path = ?std::fs::read_link(&own).ok(), "tls file first seen");
            self.hold(file, target.id, pid, None);
        }
        Some(target)
    }

    /// Holds `file` (`id`), first seen through `pid`, until no process maps
    /// it.
    fn hold(&mut self, file: File, id: FileId, pid: u32, unmeasured: Option<(u64, usize)>) {
        let key = tapwire_common::FileKey {
            dev: images::kernel_dev(id.dev),
            ino: id.ino,
        };
        self.held.insert(
            id,
            Held {
                _file: file,
                key,
                users: HashSet::from([pid]),
                unused_since: None,
                scanning: false,
                unmeasured,
            },
        );
        self.publish_held();
    }

    /// The safety net after an exec: attaches the TLS files `pid` maps now
    /// that no record brought yet (a record skipped on a full queue, or still
    /// on its way). Such a file was first seen through this process: it is
    /// held and released like the files records bring, and the record of its
    /// mapping, if it comes, measures its window.
    fn rescan(&mut self, pid: u32) {
        for target in self.targets.of_process(pid) {
            let points = self.probes.attach_target(&target, None);
            if points == 0 || self.held.contains_key(&target.id) {
                continue;
            }
            let live = images::monotonic_ns();
            if let Ok(file) = File::open(&target.path) {
                tracing::debug!(path = %target.path.display(), "tls file first seen by a rescan");
                self.hold(file, target.id, pid, Some((live, points)));
                if let Some(held) = self.held.get(&target.id) {
                    self.probes.mark_inspected(held.key);
                }
            }
        }
    }

    /// Releases held files that no process maps any more: their probes are
    /// detached, the descriptor closed, and the next mapping of the file is
    /// reported (and probed) again.
    ///
    /// Known users are checked here (a stat each). When all of a file's are
    /// gone, a process forked from one may still map it: every process's maps
    /// are scanned on a thread of its own ([`images::processes_mapping`]; a
    /// host's worth of maps must not delay the probing of new files), and the
    /// result applied on a later turn. The file is un-marked as inspected
    /// before the scan, so a process mapping it meanwhile is reported.
    fn release_unused(&mut self) {
        if let Some(scan) = &self.release_scan {
            match scan.try_recv() {
                Ok(mappers) => {
                    self.release_scan = None;
                    self.apply_release_scan(&mappers);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.release_scan = None,
            }
        }
        let now = Instant::now();
        let mut unused = 0;
        for held in self.held.values_mut() {
            held.users
                .retain(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if held.users.is_empty() {
                held.unused_since.get_or_insert(now);
                unused += 1;
            } else {
                held.unused_since = None;
            }
        }
        // Detaching is slow (the kernel removes uprobes one at a time, each
        // after a grace period) and holds up attaching the next file: unused
        // files are released once new files have stopped coming for a while,
        // or after a minute, or when too many wait.
        let quiet = now.duration_since(self.last_sighting) >= RELEASE_WHEN_QUIET;
        let crowded = unused > MAX_UNUSED_HELD;
        let idle: Vec<FileId> = self
            .held
            .iter()
            .filter(|(_, h)| !h.scanning)
            .filter(|(_, h)| {
                h.unused_since.is_some_and(|since| {
                    quiet || crowded || now.duration_since(since) >= RELEASE_UNUSED_AFTER
                })
            })
            .map(|(id, _)| *id)
            .collect();
        if idle.is_empty() {
            return;
        }
        for id in &idle {
            if let Some(held) = self.held.get_mut(id) {
                held.scanning = true;
                self.probes.forget_inspected(held.key);
            }
        }
        let (tx, rx) = sync_channel(1);
        let scan = std::thread::Builder::new()
            .name("capture-release".into())
            .spawn(move || {
                let mappers = images::processes_mapping(&idle);
                let _ = tx.send((idle, mappers));
            });
        match scan {
            Ok(_) => self.release_scan = Some(rx),
            Err(error) => {
                tracing::warn!(%error, "cannot scan for processes mapping held tls files");
                for held in self.held.values_mut().filter(|h| h.scanning) {
                    held.scanning = false;
                    self.probes.mark_inspected(held.key);
                }
            }
        }
    }

    /// Queues the scanned files no process maps for release
    /// ([`Control::release_next`]); keeps the others.
    fn apply_release_scan(&mut self, (scanned, mappers): &(Vec<FileId>, Vec<(u32, FileId)>)) {
        for id in scanned {
            let Some(held) = self.held.get_mut(id) else {
                continue;
            };
            held.users
                .extend(mappers.iter().filter(|m| m.1 == *id).map(|m| m.0));
            if held.users.is_empty() {
                // Stays `scanning` (not scanned again) until released.
                self.releasing.push_back(*id);
            } else {
                held.scanning = false;
                self.probes.mark_inspected(held.key);
            }
        }
    }

    /// Whether a queued file may be released now: while new files keep
    /// coming, detaching (which holds up their attaching) waits, unless too
    /// many wait.
    fn release_due(&self) -> bool {
        !self.releasing.is_empty()
            && (self.last_sighting.elapsed() >= RELEASE_WHEN_QUIET
                || self.releasing.len() > MAX_UNUSED_HELD)
    }

    /// Releases the next queued file unless a process was seen to map it
    /// since its scan: its probes are detached, its descriptor closed.
    fn release_next(&mut self) {
        if !self.release_due() {
            return;
        }
        let Some(id) = self.releasing.pop_front() else {
            return;
        };
        let Some(held) = self.held.get_mut(&id) else {
            return;
        };
        held.scanning = false;
        if !held.users.is_empty() {
            self.probes.mark_inspected(held.key);
            return;
        }
        self.held.remove(&id);
        let links = self.probes.detach_file(id);
        self.targets.forget(id);
        tracing::info!(
            dev = id.dev,
            ino = id.ino,
            links,
            "tls file released: no process maps it"
        );
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .released += 1;
        self.publish_held();
    }

    /// Publishes how many files are held.
    fn publish_held(&self) {
        self.images.lock().unwrap_or_else(|e| e.into_inner()).held = self.held.len() as u64;
    }

    /// Probes the files an exec or a mapping brings, and measures how long
    /// after the event their probes were live.
    fn handle(&mut self, event: ProcEvent) {
        let handled_ns = images::monotonic_ns();
        // When the file the event brought was inspected, for the log.
        let inspected_ns;
        let (attached, sighting) = match event {
            ProcEvent::Exec {
                pid,
                ts_ns,
                filename,
            } => {
                self.processes
                    .exec(pid, ts_ns, tapwire_common::decode::cstr(&filename));
                // The executable alone, held open: the process may be gone
                // before its probes are attached. Its libraries come with
                // the records of their mappings, each measured from its own
                // mapping (the rescans catch a record that never comes).
                let exe = File::open(format!("/proc/{pid}/exe"))
                    .ok()
                    .and_then(|exe| self.inspect_held(exe, pid));
                inspected_ns = images::monotonic_ns();
                let exe = exe.map_or(0, |t| self.probes.attach_target(&t, None));
                (exe, Sighting::Exec)
            }
            ProcEvent::Exit { pid, ts_ns } => {
                self.processes.exit(pid, ts_ns);
                return;
            }
            ProcEvent::Map {
                pid, key, addr, fd, ..
            } => {
                let file = images::mapped_file(pid, key, addr, fd);
                let mut counters = self.images.lock().unwrap_or_else(|e| e.into_inner());
                counters.maps += 1;
                let Some(file) = file else {
                    // Not marked inspected: the next mapping reports it again.
                    counters.unresolved += 1;
                    return;
                };
                drop(counters);
                let target = self.inspect_held(file, pid);
                inspected_ns = images::monotonic_ns();
                let attached = target
                    .as_ref()
                    .map_or(0, |t| self.probes.attach_target(t, None));
                self.probes.mark_inspected(key);
                // A rescan attached it first: its window ended then.
                let earlier = target
                    .and_then(|t| self.held.get_mut(&t.id))
                    .and_then(|h| h.unmeasured.take());
                if let Some((live, points)) = earlier {
                    self.record_window(Sighting::Map, live.saturating_sub(event.ts_ns()), points);
                }
                (attached, Sighting::Map)
            }
        };
        if attached > 0 {
            self.last_sighting = Instant::now();
            let live = images::monotonic_ns();
            tracing::debug!(
                queued_us = handled_ns.saturating_sub(event.ts_ns()) / 1000,
                inspect_us = inspected_ns.saturating_sub(handled_ns) / 1000,
                attach_us = live.saturating_sub(inspected_ns) / 1000,
                "tls file window, by step"
            );
            self.record_window(sighting, live.saturating_sub(event.ts_ns()), attached);
        }
    }

    /// Records the window of one newly seen file: `window_ns` from its
    /// sighting to its `points` probe points being live.
    fn record_window(&self, sighting: Sighting, window_ns: u64, points: usize) {
        let window = Duration::from_nanos(window_ns);
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_window(sighting, window);
        tracing::info!(
            after = sighting.name(),
            points,
            window_us = window.as_micros() as u64,
            "tls probes live in a newly seen file"
        );
    }
}
