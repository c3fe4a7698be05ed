//! Loads the eBPF object, creates the per-CPU rings, writes the config and the
//! selection, attaches tracepoints and TLS uprobes. Everything attached is
//! owned by [`Probes`]; dropping it detaches all probes and unloads the
//! programs (aya detaches a program's links when the program is dropped; the
//! BPF links of [`super::links`] are closed with the map that holds them).

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use tapwire_common::{
    DropReason,
    config::{Config, Exclusion, FLAG_SELECTION, FLAG_SELECTION_CGROUPS, capture},
};

use super::{
    btf::{BtfError, KernelBtf},
    libraries::{LibraryKind, ProbedCounts},
    links::LinkPrograms,
    placement::{Placement, PointKind},
    selection::{Resolved, Selection, SelectionError},
    targets::{FileId, TlsTarget},
};

/// The eBPF object built by `build.rs`.
pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tapwire-ebpf"));

/// Default ring size per CPU. One probe hit can emit up to
/// `MAX_PAYLOAD * MAX_CHUNKS` = 8 MiB (a large `SSL_write` split in records)
/// while the reader pinned to that CPU cannot run, so a ring must hold that
/// much plus what was already queued.
pub const RING_BYTES_PER_CPU: u32 = 16 * 1024 * 1024;

/// Default wake-up mark: a record that brings a ring past 1/8 full wakes its
/// reader; below it the reader finds records on its poll timer.
pub const WAKE_DIVISOR: u32 = 8;

/// Default high-water mark of graceful overload, percent of a ring: past it
/// a call's records copy only its first `OVERLOAD_PREFIX` bytes (4 KiB). Half
/// the ring leaves the other half for the calls already being copied whole
/// (a call that begins below the mark is copied whole unless the mark is
/// passed during it) and for the records of other connections.
pub const OVERLOAD_PERCENT: u32 = 50;

/// Syscall tracepoints: `(program, [tracepoints])`.
const SYSCALL_PROGRAMS: &[(&str, &[&str])] = &[
    ("sys_enter_read", &["sys_enter_read"]),
    ("sys_enter_recvfrom", &["sys_enter_recvfrom"]),
    ("sys_enter_write", &["sys_enter_write", "sys_enter_sendto"]),
    ("sys_enter_readv", &["sys_enter_readv"]),
    ("sys_enter_writev", &["sys_enter_writev"]),
    ("sys_enter_recvmsg", &["sys_enter_recvmsg"]),
    ("sys_enter_sendmsg", &["sys_enter_sendmsg"]),
    ("sys_enter_connect", &["sys_enter_connect"]),
    (
        "sys_enter_accept",
        &["sys_enter_accept", "sys_enter_accept4"],
    ),
    ("sys_enter_close", &["sys_enter_close"]),
    ("sys_enter_dup2", &["sys_enter_dup2", "sys_enter_dup3"]),
    ("sys_enter_close_range", &["sys_enter_close_range"]),
    ("sys_enter_mmap", &["sys_enter_mmap"]),
    ("sys_exit_mmap", &["sys_exit_mmap"]),
    ("sys_enter_sendfile", &["sys_enter_sendfile64"]),
    ("sys_exit_sendfile", &["sys_exit_sendfile64"]),
    ("sys_enter_splice", &["sys_enter_splice"]),
    ("sys_exit_splice", &["sys_exit_splice"]),
    ("sys_enter_openat", &["sys_enter_openat"]),
    ("sys_exit_openat", &["sys_exit_openat"]),
    (
        "sys_exit_socket",
        &[
            "sys_exit_read",
            "sys_exit_recvfrom",
            "sys_exit_write",
            "sys_exit_sendto",
            "sys_exit_readv",
            "sys_exit_writev",
            "sys_exit_recvmsg",
            "sys_exit_sendmsg",
            "sys_exit_connect",
            "sys_exit_accept",
            "sys_exit_accept4",
        ],
    ),
];

/// Scheduler tracepoints: `(program, tracepoint)`.
const SCHED_PROGRAMS: &[(&str, &str)] = &[
    ("sched_fork", "sched_process_fork"),
    ("sched_exec", "sched_process_exec"),
    ("sched_exit", "sched_process_exit"),
];

/// Loader settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which processes to capture.
    pub selection: Selection,
    /// Bytes per CPU ring (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// See [`WAKE_DIVISOR`].
    pub wake_divisor: u32,
    /// See [`OVERLOAD_PERCENT`].
    pub overload_percent: u32,
    /// Which connections the probes capture: `tapwire_common::config::capture`
    /// bits (direction, loopback).
    pub capture: u32,
    /// Where process attributes are kept, for whoever writes events.
    pub processes: std::sync::Arc<super::procs::ProcessTable>,
    /// Probe TLS calls with uprobe sessions where the kernel has them
    /// (6.13+); off, or on an older kernel, a uprobe and a uretprobe.
    pub uprobe_sessions: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            selection: Selection::default(),
            ring_bytes: RING_BYTES_PER_CPU,
            wake_divisor: WAKE_DIVISOR,
            overload_percent: OVERLOAD_PERCENT,
            capture: capture::ALL_DIRECTIONS,
            processes: std::sync::Arc::default(),
            uprobe_sessions: true,
        }
    }
}

/// Errors loading or attaching the probes.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Kernel BTF could not be read.
    #[error("reading kernel btf")]
    Btf(#[from] BtfError),
    /// The kernel lacks features the probes need.
    #[error(transparent)]
    Kernel(#[from] super::kernel::MissingFeatures),
    /// The embedded object is empty (built with `AYA_BUILD_SKIP`).
    #[error("the binary was built without its ebpf object")]
    NoObject,
    /// The object failed to load (verifier or map creation).
    #[error("loading the ebpf object")]
    Load(#[from] aya::EbpfError),
    /// A map is missing from the object.
    #[error("ebpf map `{0}` missing")]
    MissingMap(&'static str),
    /// A program is missing from the object.
    #[error("ebpf program `{0}` missing")]
    MissingProgram(&'static str),
    /// A map operation failed.
    #[error("ebpf map `{name}`")]
    Map {
        /// Map name.
        name: &'static str,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// Loading or attaching a program failed.
    #[error("ebpf program `{name}`")]
    Program {
        /// Program name.
        name: &'static str,
        /// The cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The selection could not be resolved.
    #[error("resolving the capture selection")]
    Selection(#[from] SelectionError),
    /// tracefs is not mounted and could not be mounted.
    #[error("mounting tracefs at `/sys/kernel/tracing`")]
    Tracefs(#[source] std::io::Error),
    /// The online CPU list could not be read.
    #[error("reading online cpus")]
    Cpus(#[source] std::io::Error),
    /// Mapping a ring for reading failed.
    #[error("mapping a ring buffer")]
    RingMap(#[source] std::io::Error),
}

/// One CPU's ring, created by user space and stored in the probes' `RINGS`.
pub struct CpuRing {
    /// The CPU whose probes write into this ring.
    pub cpu: u32,
    /// The ring.
    pub ring: super::ringbuf::Ring,
}

/// Reads the kernel-side counters: drops, and connections left out on purpose.
pub struct DropCounters {
    map: PerCpuArray<MapData, u64>,
    excluded: PerCpuArray<MapData, u64>,
}

/// Sum over CPUs of each of the first `N` slots of `map`.
fn sum_per_cpu<const N: usize>(map: &PerCpuArray<MapData, u64>) -> [u64; N] {
    let mut out = [0u64; N];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(values) = map.get(&(i as u32), 0) {
            *slot = values.iter().sum();
        }
    }
    out
}

impl DropCounters {
    /// Sum over CPUs of each reason's counter, in `DropReason::ALL` order.
    pub fn read(&self) -> [u64; DropReason::COUNT as usize] {
        sum_per_cpu(&self.map)
    }

    /// Connections left out per reason, in `Exclusion::ALL` order.
    pub fn excluded(&self) -> [u64; Exclusion::COUNT as usize] {
        sum_per_cpu(&self.excluded)
    }

    /// One reason's counter per CPU (index = CPU id).
    pub fn per_cpu(&self, reason: DropReason) -> Vec<u64> {
        self.map
            .get(&(reason as u32), 0)
            .map(|values| values.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The probes' `FILTERED` map: the `config::skip` bits `tap.filters` gives a
/// process, inherited by its children in the kernel.
pub struct FilteredMap(BpfHashMap<MapData, u32, u32>);

impl FilteredMap {
    /// Writes `pid`'s bits (0 removes it); false if the map refused them
    /// (full: the process's events are then left to the agent's own check).
    pub fn set(&mut self, pid: u32, skip: u32) -> bool {
        if skip == 0 {
            let _ = self.0.remove(&pid);
            true
        } else {
            self.0.insert(pid, skip, 0).is_ok()
        }
    }
}

/// One attachment of TLS probes.
enum TlsLink {
    /// A program at one point, through aya (a perf event).
    Point(&'static str, UProbeLinkId),
    /// A program at some points of a file, as a BPF link; closing detaches.
    Bpf(std::os::fd::OwnedFd),
}

/// Loaded and attached probes. Dropping detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    /// TLS probes are attached as BPF links of these programs, when loaded
    /// (call points as uprobe sessions); else as perf events through aya.
    link_programs: Option<LinkPrograms>,
    /// Closes released BPF links on a thread of its own (closing one waits
    /// out RCU grace periods).
    detacher: Option<std::sync::mpsc::SyncSender<Vec<std::os::fd::OwnedFd>>>,
    attached: HashSet<(FileId, u64, Option<u32>)>,
    /// The links of every attached point, per file, for [`Probes::detach_file`].
    links: HashMap<FileId, Vec<TlsLink>>,
    /// Probe points placed on a single-stepped instruction.
    pub fallbacks: AtomicU64,
    /// Files with attached probes, per library kind.
    pub probed: Arc<ProbedCounts>,
    /// The same files, with paths, in the order first probed.
    probed_files: Vec<(FileId, LibraryKind, PathBuf)>,
}

/// Mounts tracefs if `/sys/kernel/tracing` is empty: aya finds tracepoint ids
/// there.
fn ensure_tracefs() -> Result<(), LoaderError> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    // SAFETY: all pointers are NUL-terminated string literals.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoaderError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!(path = "/sys/kernel/tracing", "mounted tracefs");
    Ok(())
}

/// Creates a ring buffer map of `bytes` bytes.
fn create_ring(cpu: u32, bytes: u32) -> Result<RingBuf<MapData>, LoaderError> {
    let map_err = |source| LoaderError::Map {
        name: "ring",
        source,
    };
    let obj = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
        0,
        0,
        bytes,
        0,
    );
    let data = MapData::create(obj, &format!("tw_ring_{cpu}"), None).map_err(map_err)?;
    RingBuf::try_from(Map::RingBuf(data)).map_err(map_err)
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, LoaderError> {
    ebpf.map_mut(name).ok_or(LoaderError::MissingMap(name))
}

/// Loads the probes and creates the rings. Tracepoints are attached; TLS
/// uprobes are attached with [`Probes::attach_target`].
pub fn load(opts: &Options) -> Result<(Probes, Vec<CpuRing>, DropCounters), LoaderError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoaderError::NoObject);
    }
    if let Err(e) = raise_memlock() {
        tracing::warn!(error = %e, "cannot raise RLIMIT_MEMLOCK; continuing (memcg accounting)");
    }
    super::kernel::check()?;
    ensure_tracefs()?;
    let offsets = KernelBtf::load(Path::new("/sys/kernel/btf/vmlinux"))?.kernel_offsets()?;
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
    let selecting = !opts.selection.is_empty();
    let config = Config {
        flags: match (selecting, opts.selection.cgroups.is_empty()) {
            (false, _) => 0,
            (true, true) => FLAG_SELECTION,
            (true, false) => FLAG_SELECTION | FLAG_SELECTION_CGROUPS,
        },
        wake_divisor: opts.wake_divisor.max(1),
        offsets,
        // The kernel's tgid of this process: the agent runs in the host's pid
        // namespace (as `--pid` requires).
        agent_tgid: std::process::id(),
        capture: opts.capture,
        overload_percent: opts.overload_percent,
    };
    let mut cfg_map: Array<_, Config> =
        Array::try_from(map_mut(&mut ebpf, "CONFIG")?).map_err(|source| LoaderError::Map {
            name: "CONFIG",
            source,
        })?;
    cfg_map
        .set(0, config, 0)
        .map_err(|source| LoaderError::Map {
            name: "CONFIG",
            source,
        })?;

    let cpus = aya::util::online_cpus().map_err(|(_, e)| LoaderError::Cpus(e))?;
    let mut rings = Vec::with_capacity(cpus.len());
    {
        let mut outer: ArrayOfMaps<_, RingBuf<MapData>> =
            ArrayOfMaps::try_from(map_mut(&mut ebpf, "RINGS")?).map_err(|source| {
                LoaderError::Map {
                    name: "RINGS",
                    source,
                }
            })?;
        for &cpu in &cpus {
            let ring = create_ring(cpu, opts.ring_bytes)?;
            outer
                .set(cpu, &ring, 0)
                .map_err(|source| LoaderError::Map {
                    name: "RINGS",
                    source,
                })?;
            // Read through a mapping of its own (data pages mapped once);
            // aya's, which maps them twice, goes.
            let ring = super::ringbuf::Ring::new(
                std::os::fd::AsFd::as_fd(&ring),
                opts.ring_bytes as usize,
            )
            .map_err(LoaderError::RingMap)?;
            rings.push(CpuRing { cpu, ring });
        }
    }

    // Connections the agent opened before the probes ran (a store's start-up
    // check, kept alive in its pool): their peers are left out too.
    seed_agent_ports(&mut ebpf)?;

    // Selection maps before the tracepoints start acting on them.
    let resolved = opts.selection.resolve()?;
    if selecting {
        seed_selection(&mut ebpf, &resolved)?;
    }

    for &(prog, tps) in SYSCALL_PROGRAMS {
        let p: &mut TracePoint = program(&mut ebpf, prog)?;
        p.load()
            .map_err(|source| LoaderError::Program { name: prog, source })?;
        for tp in tps {
            p.attach("syscalls", tp)
                .map_err(|source| LoaderError::Program { name: prog, source })?;
        }
    }
    for &(prog, tp) in SCHED_PROGRAMS {
        let p: &mut TracePoint = program(&mut ebpf, prog)?;
        p.load()
            .map_err(|source| LoaderError::Program { name: prog, source })?;
        p.attach("sched", tp)
            .map_err(|source| LoaderError::Program { name: prog, source })?;
    }
    if selecting {
        // Children forked between the first scan and the fork tracepoint.
        seed_selection(&mut ebpf, &opts.selection.resolve()?)?;
    }
    for &prog in PointKind::PROGRAMS {
        let p: &mut UProbe = program(&mut ebpf, prog)?;
        p.load()
            .map_err(|source| LoaderError::Program { name: prog, source })?;
    }
    // Before any map is taken out of `ebpf`: the link programs share them.
    let link_programs = if opts.uprobe_sessions {
        let btf_id = program::<UProbe>(&mut ebpf, "ssl_enter")?
            .info()
            .ok()
            .and_then(|info| info.btf_id())
            .unwrap_or(0);
        match LinkPrograms::load(EBPF_OBJECT, &ebpf, btf_id) {
            Ok(p) => {
                tracing::info!("tls probes attached as bpf links; tls calls as uprobe sessions");
                Some(p)
            }
            Err(error) => {
                tracing::info!(
                    error = %error,
                    "tls probes attached as perf events; tls calls probed with a uprobe and a uretprobe (no uprobe sessions)"
                );
                None
            }
        }
    } else {
        tracing::info!(
            "tls probes attached as perf events; tls calls probed with a uprobe and a uretprobe (--uprobe-sessions off)"
        );
        None
    };
    let detacher = link_programs.as_ref().map(|_| spawn_detacher());

    let mut per_cpu = |name: &'static str| {
        PerCpuArray::try_from(ebpf.take_map(name).ok_or(LoaderError::MissingMap(name))?)
            .map_err(|source| LoaderError::Map { name, source })
    };
    let counters = DropCounters {
        map: per_cpu("DROPS")?,
        excluded: per_cpu("EXCLUDED")?,
    };
    let probes = Probes {
        ebpf,
        link_programs,
        detacher,
        attached: HashSet::new(),
        links: HashMap::new(),
        fallbacks: AtomicU64::new(0),
        probed: Arc::default(),
        probed_files: Vec::new(),
    };
    Ok((probes, rings, counters))
}

/// True if the probes were for one process (`pid`) that has exited: a
/// failed attach is then expected, not worth a warning.
fn process_gone(pid: Option<u32>) -> bool {
    pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// Files whose links wait for the detach thread; past this, the control
/// thread closes them itself.
const DETACH_QUEUE: usize = 64;

/// Starts the thread that closes released BPF links. It ends when the
/// sender is dropped (with the probes).
fn spawn_detacher() -> std::sync::mpsc::SyncSender<Vec<std::os::fd::OwnedFd>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<std::os::fd::OwnedFd>>(DETACH_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("tls-detach".into())
        .spawn(move || {
            for links in rx {
                drop(links);
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(error = %error, "no detach thread; released links close on the control thread");
    }
    tx
}

/// The debug line of one attached probe point (the bench reads the points).
fn log_attached(
    target: &TlsTarget,
    point: &super::placement::ProbePoint,
    pid: Option<u32>,
    link: &str,
) {
    tracing::debug!(
        path = %target.path.display(),
        symbol = point.symbol,
        offset = point.file_offset,
        pid,
        placement = ?point.placement,
        link,
        "tls probe attached"
    );
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoaderError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or(LoaderError::MissingProgram(name))?;
    p.try_into()
        .map_err(|source| LoaderError::Program { name, source })
}

/// Local ports of this process's open TCP sockets: its fds' socket inodes
/// looked up in `/proc/self/net/tcp{,6}`.
fn own_tcp_ports() -> HashSet<u16> {
    let inodes: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut ports = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, inode.parse::<u64>())
                && inodes.contains(&inode)
            {
                ports.insert(port);
            }
        }
    }
    ports
}

fn seed_agent_ports(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    let err = |source| LoaderError::Map {
        name: "AGENT_PORTS",
        source,
    };
    let mut map: BpfHashMap<_, u32, u8> =
        BpfHashMap::try_from(map_mut(ebpf, "AGENT_PORTS")?).map_err(err)?;
    for port in own_tcp_ports() {
        map.insert(u32::from(port), 0, 0).map_err(err)?;
    }
    Ok(())
}

fn seed_selection(ebpf: &mut Ebpf, r: &Resolved) -> Result<(), LoaderError> {
    let err = |name| move |source| LoaderError::Map { name, source };
    let mut exes: BpfHashMap<_, u64, u8> =
        BpfHashMap::try_from(map_mut(ebpf, "SELECTED_EXES")?).map_err(err("SELECTED_EXES"))?;
    for &ino in &r.exe_inodes {
        exes.insert(ino, 1, 0).map_err(err("SELECTED_EXES"))?;
    }
    let mut cgroups: BpfHashMap<_, u64, u8> =
        BpfHashMap::try_from(map_mut(ebpf, "SELECTED_CGROUPS")?)
            .map_err(err("SELECTED_CGROUPS"))?;
    for &id in &r.cgroup_ids {
        cgroups.insert(id, 1, 0).map_err(err("SELECTED_CGROUPS"))?;
    }
    let mut pids: BpfHashMap<_, u32, u32> =
        BpfHashMap::try_from(map_mut(ebpf, "SELECTED")?).map_err(err("SELECTED"))?;
    for (&pid, &bits) in &r.pids {
        let old = pids.get(&pid, 0).unwrap_or(0);
        pids.insert(pid, old | bits, 0).map_err(err("SELECTED"))?;
    }
    Ok(())
}

impl Probes {
    /// Attaches the TLS probes of `target`: for every process (`pid` `None`,
    /// once per file) or for one process. Already attached points are skipped.
    /// Returns how many probe points were attached.
    pub fn attach_target(&mut self, target: &TlsTarget, pid: Option<u32>) -> usize {
        let mut n = 0;
        let mut new_points = Vec::new();
        for point in target.points.iter() {
            if !self.attached.insert((target.id, point.file_offset, pid)) {
                continue;
            }
            if let Placement::Fallback { insn } = &point.placement {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    path = %target.path.display(),
                    symbol = point.symbol,
                    insn = %insn,
                    "tls probe on a single-stepped instruction (slow path)"
                );
            }
            new_points.push(point);
        }
        let linked = !new_points.is_empty() && self.attach_links(target, &new_points, pid);
        if linked {
            n = new_points.len();
        } else {
            for point in new_points {
                if self.attach_point(target, point, pid) {
                    n += 1;
                } else {
                    // Not attached: a later sighting of the file tries again.
                    self.attached.remove(&(target.id, point.file_offset, pid));
                }
            }
        }
        if n > 0 && !self.probed_files.iter().any(|f| f.0 == target.id) {
            self.probed.add(target.kind, target.points.len() as u64);
            self.probed_files
                .push((target.id, target.kind, target.path.clone()));
            tracing::info!(
                kind = target.kind.name(),
                path = %target.path.display(),
                points = target.points.len(),
                "tls file probed"
            );
        }
        n
    }

    /// Attaches `points` of `target` as BPF links, one per program: call
    /// points as uprobe sessions, the others as `uprobe_multi` links. All or
    /// nothing: returns false (with no link left) when links are not in use
    /// or one failed, and the points are then attached as perf events.
    fn attach_links(
        &mut self,
        target: &TlsTarget,
        points: &[&super::placement::ProbePoint],
        pid: Option<u32>,
    ) -> bool {
        let Some(programs) = &self.link_programs else {
            return false;
        };
        // (program, offsets, cookies), in the order the points name them.
        let mut groups: Vec<(&'static str, Vec<u64>, Vec<u64>)> = Vec::new();
        for point in points {
            let names: &[&'static str] = if point.kind == PointKind::Call {
                &[super::links::SESSION]
            } else {
                point.kind.programs()
            };
            for &name in names {
                let at = match groups.iter().position(|g| g.0 == name) {
                    Some(at) => at,
                    None => {
                        groups.push((name, Vec::new(), Vec::new()));
                        groups.len() - 1
                    }
                };
                groups[at].1.push(point.file_offset);
                groups[at].2.push(point.cookie);
            }
        }
        let mut made = Vec::with_capacity(groups.len());
        for (name, offsets, cookies) in &groups {
            match programs.attach(name, &target.path, offsets, cookies, pid) {
                Ok(link) => made.push(link),
                Err(error) => {
                    if !process_gone(pid) {
                        tracing::warn!(
                            path = %target.path.display(),
                            program = name,
                            pid,
                            error = %error,
                            "attaching tls probes as a bpf link failed; trying perf events"
                        );
                    }
                    return false;
                }
            }
        }
        for point in points {
            log_attached(target, point, pid, "bpf link");
        }
        self.links
            .entry(target.id)
            .or_default()
            .extend(made.into_iter().map(TlsLink::Bpf));
        true
    }

    /// Attaches the programs of one point through aya (a perf event each).
    /// Returns whether all attached.
    fn attach_point(
        &mut self,
        target: &TlsTarget,
        point: &super::placement::ProbePoint,
        pid: Option<u32>,
    ) -> bool {
        let scope = match pid.and_then(NonZeroU32::new) {
            Some(p) => UProbeScope::OneProcess(p),
            None => UProbeScope::AllProcesses,
        };
        let mut ok = true;
        for &prog in point.kind.programs() {
            let result = program::<UProbe>(&mut self.ebpf, prog).and_then(|p| {
                let at = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(point.file_offset),
                    cookie: Some(point.cookie),
                };
                p.attach(at, &target.path, scope)
                    .map_err(|source| LoaderError::Program { name: prog, source })
            });
            match result {
                Ok(link) => self
                    .links
                    .entry(target.id)
                    .or_default()
                    .push(TlsLink::Point(prog, link)),
                Err(error) => {
                    ok = false;
                    if process_gone(pid) {
                        // The process exited before we got to it.
                        break;
                    }
                    tracing::warn!(
                        path = %target.path.display(),
                        symbol = point.symbol,
                        pid,
                        error = %error_chain(&error),
                        "attaching tls probe failed"
                    );
                }
            }
        }
        if ok {
            log_attached(target, point, pid, "perf event");
        }
        ok
    }

    /// True if TLS probes are BPF links and TLS calls uprobe sessions.
    pub fn uprobe_sessions(&self) -> bool {
        self.link_programs.is_some()
    }

    /// Takes the maps that [`super::sweep`] reclaims entries of exited
    /// processes from, for the thread that sweeps them.
    pub fn take_sweeper(&mut self) -> super::sweep::Sweeper {
        super::sweep::Sweeper::take(&mut self.ebpf)
    }

    /// Detaches every probe of the file `id` (no process maps it any more) and
    /// forgets it: a later sighting attaches again. Returns the links detached.
    pub fn detach_file(&mut self, id: FileId) -> usize {
        let links = self.links.remove(&id).unwrap_or_default();
        let n = links.len();
        let mut closing = Vec::new();
        for link in links {
            match link {
                TlsLink::Point(prog, link) => {
                    if let Ok(p) = program::<UProbe>(&mut self.ebpf, prog)
                        && let Err(error) = p.detach(link)
                    {
                        tracing::warn!(error = %error_chain(&error), "detaching tls probe failed");
                    }
                }
                TlsLink::Bpf(fd) => closing.push(fd),
            }
        }
        if !closing.is_empty() {
            // Closed where waiting does not hold up a new file's probes; if
            // the thread is gone, here.
            match &self.detacher {
                Some(tx) => {
                    if let Err(
                        std::sync::mpsc::TrySendError::Full(back)
                        | std::sync::mpsc::TrySendError::Disconnected(back),
                    ) = tx.try_send(closing)
                    {
                        drop(back);
                    }
                }
                None => drop(closing),
            }
        }
        self.attached.retain(|a| a.0 != id);
        self.probed_files.retain(|f| f.0 != id);
        n
    }

    /// Tells the probes to report the next mapping of `key` again.
    pub fn forget_inspected(&mut self, key: tapwire_common::FileKey) {
        if let Some(map) = self.ebpf.map_mut("INSPECTED")
            && let Ok(mut files) = BpfHashMap::<_, tapwire_common::FileKey, u8>::try_from(map)
        {
            let _ = files.remove(&key);
        }
    }

    /// Logs the files probed so far, one line per library kind.
    pub fn log_probed(&self) {
        for kind in LibraryKind::ALL {
            let paths: Vec<String> = self
                .probed_files
                .iter()
                .filter(|f| f.1 == kind)
                .map(|f| f.2.display().to_string())
                .collect();
            tracing::info!(
                kind = kind.name(),
                files = paths.len(),
                paths = %paths.join(" "),
                "tls files probed at start"
            );
        }
    }

    /// Tells the probes that user space has inspected `key`: mapping it again
    /// emits no record. A failed insert only means a later mapping is reported
    /// again.
    pub fn mark_inspected(&mut self, key: tapwire_common::FileKey) {
        if let Some(map) = self.ebpf.map_mut("INSPECTED")
            && let Ok(mut files) = BpfHashMap::<_, tapwire_common::FileKey, u8>::try_from(map)
        {
            let _ = files.insert(key, 1, 0);
        }
    }

    /// Takes the probes' `FILTERED` map out, for the thread that writes the
    /// `tap.filters` decisions.
    pub fn take_filtered(&mut self) -> Result<FilteredMap, LoaderError> {
        let name = "FILTERED";
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(LoaderError::MissingMap(name))?;
        BpfHashMap::try_from(map)
            .map(FilteredMap)
            .map_err(|source| LoaderError::Map { name, source })
    }

    /// Adds `pid` to the kernel's selected set (bits OR-ed in).
    pub fn select_pid(&mut self, pid: u32, bits: u32) {
        if let Some(map) = self.ebpf.map_mut("SELECTED")
            && let Ok(mut pids) = BpfHashMap::<_, u32, u32>::try_from(map)
        {
            let old = pids.get(&pid, 0).unwrap_or(0);
            let _ = pids.insert(pid, old | bits, 0);
        }
    }

    /// Whether `pid` is in the kernel's selected set.
    pub fn is_selected(&mut self, pid: u32) -> bool {
        self.ebpf
            .map_mut("SELECTED")
            .and_then(|m| BpfHashMap::<_, u32, u32>::try_from(m).ok())
            .is_some_and(|pids| pids.get(&pid, 0).is_ok())
    }
}

/// An error and its sources, `: `-joined, for log fields.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Raises RLIMIT_MEMLOCK (needed before kernel 5.11's memcg accounting).
fn raise_memlock() -> std::io::Result<()> {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlim` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
