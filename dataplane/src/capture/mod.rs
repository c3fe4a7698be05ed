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
//! A control thread attaches TLS probes to programs started later (exec
//! records) and owns the probes: [`Capture::stop`] (or drop) stops the readers
//! after a last drain and detaches everything.

pub mod btf;
pub mod loader;
pub mod placement;
pub mod records;
pub mod ring;
pub mod selection;
pub mod targets;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use loader::{LoaderError, Options};
pub use ring::{ReaderCounters, RingError};
pub use selection::Selection;
pub use tapwire_common::{DropReason, Record};

use loader::{DropCounters, Probes};
use targets::Targets;

/// Pids of exec records waiting for the control thread; beyond this, execs are
/// skipped (and their programs picked up by the next rescan of a selected pid).
const EXEC_QUEUE: usize = 4096;

/// After an exec, a program's libraries appear as the dynamic loader (or a
/// `dlopen`) maps them: its maps are rescanned after these delays.
const RESCAN_AFTER: [Duration; 4] = [
    Duration::from_millis(20),
    Duration::from_millis(150),
    Duration::from_millis(800),
    Duration::from_secs(3),
];

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
        let (mut probes, rings, drops, resolved) = loader::load(&opts)?;
        let mut targets = Targets::default();
        let libraries = targets.system_libraries();
        if probes.per_process() {
            let mut pids: Vec<u32> = resolved.pids.keys().copied().collect();
            pids.extend(&resolved.cgroup_pids);
            // The agent's own traffic is never captured: no probes in it.
            pids.retain(|&pid| pid != std::process::id());
            for pid in pids {
                attach_process(&mut probes, &mut targets, pid, true);
            }
        } else {
            for lib in &libraries {
                probes.attach_target(lib, None);
            }
            for pid in targets::all_pids() {
                attach_process(&mut probes, &mut targets, pid, false);
            }
        }
        let fallbacks = Arc::new(AtomicU64::new(probes.fallbacks.load(Ordering::Relaxed)));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(EXEC_QUEUE);
        let readers = ring::spawn_readers(rings, make_handler, Arc::clone(&stop), Some(tx))?;
        let control = {
            let stop = Arc::clone(&stop);
            let fallbacks = Arc::clone(&fallbacks);
            std::thread::Builder::new()
                .name("capture-control".into())
                .spawn(move || control_loop(probes, targets, rx, &stop, &fallbacks))
                .map_err(CaptureError::Spawn)?
        };
        tracing::info!(cpus = readers.len(), "capture started");
        Ok(Self {
            stop,
            readers,
            control: Some(control),
            drops,
            fallbacks,
        })
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

/// Attaches TLS probes for one process: every TLS file it maps now (and its
/// executable). Per process (`per_process`) also the system's TLS libraries,
/// so a library the program loads later is covered from its first call.
fn attach_process(probes: &mut Probes, targets: &mut Targets, pid: u32, per_process: bool) {
    if per_process {
        // The system libraries first: already inspected, so attaching them is
        // quick, and most programs get their TLS from there. A program just
        // exec'd races its first TLS call against this.
        let libraries = targets.system_libraries();
        for lib in &libraries {
            probes.attach_target(lib, Some(pid));
        }
        for f in targets.of_process(pid) {
            if !libraries.iter().any(|l| l.id == f.id) {
                probes.attach_target(&f, Some(pid));
            }
        }
    } else {
        for f in targets.of_process(pid) {
            probes.attach_target(&f, None);
        }
    }
}

fn control_loop(
    mut probes: Probes,
    mut targets: Targets,
    rx: Receiver<u32>,
    stop: &AtomicBool,
    fallbacks: &AtomicU64,
) {
    let per_process = probes.per_process();
    // (pid, when, next delay index)
    let mut rescans: Vec<(u32, Instant, usize)> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match rx.recv_timeout(Duration::from_millis(10)) {
            // Exec records come only from selected processes when selecting.
            Ok(pid) => {
                attach_process(&mut probes, &mut targets, pid, per_process);
                rescans.push((pid, Instant::now() + RESCAN_AFTER[0], 0));
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
                attach_process(&mut probes, &mut targets, pid, per_process);
            }
            if let Some(delay) = RESCAN_AFTER.get(step + 1) {
                rescans[i] = (pid, now + *delay, step + 1);
                i += 1;
            } else {
                rescans.swap_remove(i);
            }
        }
        fallbacks.store(probes.fallbacks.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    drop(probes);
    tracing::info!("probes detached");
}
