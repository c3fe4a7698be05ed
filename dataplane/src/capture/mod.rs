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
pub mod golang;
pub mod images;
pub mod kernel;
pub mod libraries;
pub mod loader;
pub mod placement;
pub mod procs;
pub mod records;
pub mod ring;
pub mod selection;
pub mod sendfile;
pub mod sweep;
pub mod targets;
pub mod teardown;

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use libraries::{LibraryKind, ProbedCounts};
pub use loader::{LoaderError, Options};
pub use ring::{ReaderCounters, RingError};
pub use selection::Selection;
pub use tapwire_common::{DropReason, Record};

use images::{LiveWindow, ProcEvent, SharedCounters};
use loader::{DropCounters, Probes};
use procs::ProcessTable;
use targets::{Targets, TlsTarget};

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

/// How often exited processes are released from the process table.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// How often kernel map entries of exited processes are reclaimed
/// ([`sweep`]): often enough that a burst of short-lived processes leaves the
/// maps within seconds, rarely enough that walking them costs nothing.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

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
    control: Option<JoinHandle<()>>,
    drops: DropCounters,
    fallbacks: Arc<AtomicU64>,
    probed: Arc<ProbedCounts>,
    images: SharedCounters,
    swept: Arc<sweep::SweepCounters>,
}

impl Capture {
    /// Loads and attaches the probes and starts the readers. `make_handler(cpu)`
    /// is called once per CPU; the handler it returns runs on that CPU's
    /// reader thread for every record of that CPU's ring. When this returns,
    /// probes are attached to every TLS file known at start.
    pub fn start<F, H>(opts: Options, make_handler: F) -> Result<Self, CaptureError>
    where
        F: FnMut(u32) -> H,
        H: FnMut(&[u8], Record<'_>) + Send + 'static,
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
        opts.processes.scan(pids);
        probes.log_probed();
        let probed = Arc::clone(&probes.probed);
        let fallbacks = Arc::new(AtomicU64::new(probes.fallbacks.load(Ordering::Relaxed)));
        let stop = Arc::new(AtomicBool::new(false));
        let images = SharedCounters::default();
        let swept = Arc::new(sweep::SweepCounters::default());
        let (tx, rx) = sync_channel(IMAGE_QUEUE);
        let readers = ring::spawn_readers(rings, make_handler, Arc::clone(&stop), Some(tx))?;
        let control = {
            let stop = Arc::clone(&stop);
            let fallbacks = Arc::clone(&fallbacks);
            let images = Arc::clone(&images);
            let processes = Arc::clone(&opts.processes);
            let swept = Arc::clone(&swept);
            std::thread::Builder::new()
                .name("capture-control".into())
                .spawn(move || {
                    let mut control = Control {
                        probes,
                        targets,
                        images,
                        processes,
                        swept,
                        held: Vec::new(),
                    };
                    control.run(rx, &stop, &fallbacks);
                    drop(control);
                    tracing::info!("probes detached");
                })
                .map_err(CaptureError::Spawn)?
        };
        tracing::info!(cpus = readers.len(), "capture started");
        Ok(Self {
            stop,
            readers,
            control: Some(control),
            drops,
            fallbacks,
            probed,
            images,
            swept,
        })
    }

    /// Kernel maps keyed by process: entries of exited processes reclaimed,
    /// and entries held, per map.
    pub fn kernel_maps(&self) -> Vec<(String, sweep::MapCount)> {
        self.swept.read()
    }

    /// Files first seen at exec or mapping: how many got TLS probes and how
    /// long after the exec or mapping their probes were live.
    pub fn late_files(&self) -> LateFiles {
        let c = self.images.lock().unwrap_or_else(|e| e.into_inner());
        LateFiles {
            maps: c.maps,
            unresolved: c.unresolved,
            live_window: c.live_window(),
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

    /// Detaches the probes, drains the rings one last time and joins all
    /// threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Release pairs with the readers' Acquire load.
        self.stop.store(true, Ordering::Release);
        if let Some(control) = self.control.take() {
            // The control thread owns the probes: joining it detaches them.
            let _ = control.join();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.thread.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
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

/// Counters of files first seen at exec or mapping.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LateFiles {
    /// Executable mappings of not yet inspected files reported by the kernel.
    pub maps: u64,
    /// Mappings whose file could not be opened (the process was gone).
    pub unresolved: u64,
    /// Exec or mapping to probes live, for files that got TLS probes then.
    pub live_window: LiveWindow,
}

/// The control thread's state: it owns the probes.
struct Control {
    probes: Probes,
    targets: Targets,
    images: SharedCounters,
    processes: Arc<ProcessTable>,
    /// Kernel map entries reclaimed.
    swept: Arc<sweep::SweepCounters>,
    /// Files of TLS targets first seen through a process, kept open (their
    /// targets' paths are `/proc/self/fd/N`).
    held: Vec<File>,
}

impl Control {
    fn run(&mut self, rx: Receiver<ProcEvent>, stop: &AtomicBool, fallbacks: &AtomicU64) {
        // (pid, when, next delay index)
        let mut rescans: Vec<(u32, Instant, usize)> = Vec::new();
        let mut last_expiry = Instant::now();
        let mut last_sweep = Instant::now();
        while !stop.load(Ordering::Acquire) {
            match rx.recv_timeout(Duration::from_millis(10)) {
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
                    attach_process(&mut self.probes, &mut self.targets, pid);
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
            if last_expiry.elapsed() >= EXPIRE_EVERY {
                self.processes.expire();
                last_expiry = Instant::now();
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                self.probes.sweep(&self.swept);
                last_sweep = Instant::now();
            }
        }
    }

    /// Inspects the file at `path` (a `/proc/PID/…` link that dies with its
    /// process) through a descriptor of our own: a new TLS target keeps it
    /// open, so its path stays valid for attaching.
    fn inspect_held(&mut self, path: &Path) -> Option<Arc<TlsTarget>> {
        let file = File::open(path).ok()?;
        let own = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let target = self.targets.inspect(&own)?;
        if target.path == own {
            tracing::debug!(path = ?std::fs::read_link(&own).ok(), "tls file first seen");
            self.held.push(file);
        }
        Some(target)
    }

    /// Probes the files an exec or a mapping brings, and measures how long
    /// after the event their probes were live.
    fn handle(&mut self, event: ProcEvent) {
        let (attached, what) = match event {
            ProcEvent::Exec {
                pid,
                ts_ns,
                filename,
            } => {
                self.processes
                    .exec(pid, ts_ns, tapwire_common::decode::cstr(&filename));
                // The executable first, held open: the process may be gone
                // before its probes are attached.
                let exe = self
                    .inspect_held(Path::new(&format!("/proc/{pid}/exe")))
                    .map_or(0, |t| self.probes.attach_target(&t, None));
                (
                    exe + attach_process(&mut self.probes, &mut self.targets, pid),
                    "exec",
                )
            }
            ProcEvent::Exit { pid, ts_ns } => {
                self.processes.exit(pid, ts_ns);
                return;
            }
            ProcEvent::Map {
                pid, key, addr, fd, ..
            } => {
                let path = images::mapped_file(pid, key, addr, fd);
                let mut counters = self.images.lock().unwrap_or_else(|e| e.into_inner());
                counters.maps += 1;
                let Some(path) = path else {
                    counters.unresolved += 1;
                    return;
                };
                drop(counters);
                let attached = self
                    .inspect_held(&path)
                    .map_or(0, |t| self.probes.attach_target(&t, None));
                self.probes.mark_inspected(key);
                (attached, "map")
            }
        };
        if attached > 0 {
            let window = Duration::from_nanos(images::monotonic_ns().saturating_sub(event.ts_ns()));
            self.images
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_window(window);
            tracing::info!(
                after = what,
                points = attached,
                window_us = window.as_micros() as u64,
                "tls probes live in a newly seen file"
            );
        }
    }
}
