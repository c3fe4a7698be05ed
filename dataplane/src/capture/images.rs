//! Files first seen when a process execs or maps them: find the file, probe it
//! if it has TLS functions, tell the kernel it was inspected, and measure the
//! time from the kernel seeing the exec or mapping to the probes being live.
//!
//! The records come from the ring readers ([`ProcEvent`], sent without
//! blocking) and are handled on the capture control thread, which owns the
//! probes and keeps the process table ([`super::procs`]).

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tapwire_common::{FILENAME_LEN, FileKey};

use super::targets::FileId;

/// What a reader hands the control thread.
#[derive(Clone, Copy, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "passed by value through a bounded channel (4,096 events, about 1 MiB); \
              boxing would allocate on the reader per exec"
)]
pub enum ProcEvent {
    /// A captured process exec'd; its executable may be new.
    Exec {
        /// The process.
        pid: u32,
        /// Kernel time of the exec (`CLOCK_MONOTONIC` ns).
        ts_ns: u64,
        /// The file name given to exec, NUL padded.
        filename: [u8; FILENAME_LEN],
    },
    /// A captured process exited.
    Exit {
        /// The process.
        pid: u32,
        /// Kernel time of the exit.
        ts_ns: u64,
    },
    /// A captured process mapped a file executable that was not inspected yet.
    Map {
        /// The process.
        pid: u32,
        /// Kernel time of the mapping.
        ts_ns: u64,
        /// The file, as the kernel names it.
        key: FileKey,
        /// Start of the mapping.
        addr: u64,
        /// The fd it was mapped from (often closed by the time we look).
        fd: i32,
    },
}

impl ProcEvent {
    /// Kernel time of the event.
    pub fn ts_ns(&self) -> u64 {
        match *self {
            Self::Exec { ts_ns, .. } | Self::Exit { ts_ns, .. } | Self::Map { ts_ns, .. } => ts_ns,
        }
    }
}

/// Samples kept for the live-window percentiles (the most recent ones).
const WINDOW_SAMPLES: usize = 4096;

/// What made a file first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// A process exec'd it (an executable).
    Exec = 0,
    /// A process mapped it executable (a shared library).
    Map = 1,
}

impl Sighting {
    /// Name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Map => "map",
        }
    }
}

/// The most recent windows of one kind of sighting, µs.
#[derive(Debug, Default)]
struct Samples {
    /// Files measured in all.
    files: u64,
    windows_us: Vec<u64>,
    next: usize,
}

impl Samples {
    fn push(&mut self, us: u64) {
        self.files += 1;
        if self.windows_us.len() < WINDOW_SAMPLES {
            self.windows_us.push(us);
        } else {
            self.windows_us[self.next] = us;
            self.next = (self.next + 1) % WINDOW_SAMPLES;
        }
    }
}

/// Counters of late-seen files, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct ImageCounters {
    /// Executable mappings reported by the kernel.
    pub maps: u64,
    /// Mappings whose file could not be opened (the process was gone).
    pub unresolved: u64,
    /// Files first seen through a process held open now (their probes
    /// attached).
    pub held: u64,
    /// Held files released (probes detached, descriptor closed) when no
    /// process mapped them any more.
    pub released: u64,
    /// Exec or mapping to probes live, per [`Sighting`].
    samples: [Samples; 2],
}

/// Percentiles of the exec/map-to-live window, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LiveWindow {
    /// Files measured.
    pub files: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl LiveWindow {
    /// Nearest-rank percentiles of `files` files' kept samples.
    fn of(files: u64, mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        // Nearest rank: the smallest sample with at least `q` of them at or
        // below it.
        let at = |q: f64| match v.len() {
            0 => 0,
            n => v[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
        };
        Self {
            files,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: v.last().copied().unwrap_or(0),
        }
    }
}

impl ImageCounters {
    /// Records one file's window.
    pub fn record_window(&mut self, sighting: Sighting, window: Duration) {
        self.samples[sighting as usize].push(window.as_micros() as u64);
    }

    /// Percentiles over the kept samples of both sightings.
    pub fn live_window(&self) -> LiveWindow {
        let [exec, map] = &self.samples;
        LiveWindow::of(
            exec.files + map.files,
            [&exec.windows_us[..], &map.windows_us[..]].concat(),
        )
    }

    /// Percentiles over the kept samples of one sighting.
    pub fn live_window_after(&self, sighting: Sighting) -> LiveWindow {
        let s = &self.samples[sighting as usize];
        LiveWindow::of(s.files, s.windows_us.clone())
    }
}

/// Shared handle to the counters.
pub type SharedCounters = Arc<Mutex<ImageCounters>>;

/// `CLOCK_MONOTONIC` now, in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's device number (`MAJOR << 20 | MINOR`) as `st_dev` encodes it.
pub fn user_dev(kernel_dev: u64) -> u64 {
    libc::makedev((kernel_dev >> 20) as u32, (kernel_dev & 0xf_ffff) as u32)
}

/// `st_dev` as the kernel encodes a device number (`MAJOR << 20 | MINOR`).
pub fn kernel_dev(user_dev: u64) -> u64 {
    u64::from(libc::major(user_dev)) << 20 | u64::from(libc::minor(user_dev))
}

/// The processes (other than this one) that map any of `files` now, from
/// every process's `/proc/PID/maps`: `(pid, file)` pairs.
pub fn processes_mapping(files: &[FileId]) -> Vec<(u32, FileId)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for pid in super::targets::all_pids() {
        if pid == me {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for line in maps.lines() {
            // address perms offset dev inode path; dev is `major:minor` in hex.
            let mut f = line.split_whitespace().skip(3);
            let (Some(dev), Some(ino)) = (f.next(), f.next()) else {
                continue;
            };
            let Some((major, minor)) = dev.split_once(':') else {
                continue;
            };
            let (Ok(major), Ok(minor), Ok(ino)) = (
                u32::from_str_radix(major, 16),
                u32::from_str_radix(minor, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            let id = FileId {
                dev: libc::makedev(major, minor),
                ino,
            };
            if ino != 0 && files.contains(&id) && !out.contains(&(pid, id)) {
                out.push((pid, id));
            }
        }
    }
    out
}

/// The file a process mapped at `addr` from `fd`, opened: through the fd if
/// it is still open on that file (cheapest), else through the mapping
/// (`/proc/PID/map_files`, which lives as long as the mapping, works after
/// the fd is closed, for deleted files and across mount namespaces). The
/// identity is checked on the opened file, not on the path before opening:
/// the dynamic loader closes its fd right after mapping, and the number may
/// be gone or name another file by the time it is opened.
pub fn mapped_file(pid: u32, key: FileKey, addr: u64, fd: i32) -> Option<File> {
    let open_same = |p: &Path| {
        let file = File::open(p).ok()?;
        let meta = file.metadata().ok()?;
        (meta.ino() == key.ino && meta.dev() == user_dev(key.dev)).then_some(file)
    };
    if let Some(file) = open_same(Path::new(&format!("/proc/{pid}/fd/{fd}"))) {
        return Some(file);
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let range = maps.lines().find_map(|line| {
        let range = line.split_whitespace().next()?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        );
        (start <= addr && addr < end).then_some(range)
    })?;
    open_same(Path::new(&format!("/proc/{pid}/map_files/{range}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_samples() {
        let mut c = ImageCounters::default();
        assert_eq!(c.live_window(), LiveWindow::default());
        for us in 1..=100 {
            c.record_window(Sighting::Map, Duration::from_micros(us));
        }
        let w = c.live_window();
        assert_eq!((w.files, w.p50_us, w.p99_us, w.max_us), (100, 50, 99, 100));
        let mut two = ImageCounters::default();
        two.record_window(Sighting::Exec, Duration::from_micros(10));
        two.record_window(Sighting::Map, Duration::from_micros(500));
        let w = two.live_window();
        assert_eq!((w.files, w.p50_us, w.p99_us), (2, 10, 500));
        let exec = two.live_window_after(Sighting::Exec);
        assert_eq!((exec.files, exec.p50_us, exec.max_us), (1, 10, 10));
        let map = two.live_window_after(Sighting::Map);
        assert_eq!((map.files, map.p50_us, map.max_us), (1, 500, 500));
    }

    #[test]
    fn kernel_device_numbers_convert() {
        // 8:1 (sda1) and 259:65536 (a large minor).
        assert_eq!(user_dev(8 << 20 | 1), libc::makedev(8, 1));
        assert_eq!(user_dev(259 << 20 | 65536), libc::makedev(259, 65536));
    }

    #[test]
    fn finds_the_processes_mapping_a_file() {
        // A child that maps its own executable; this process does not count.
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let m = std::fs::metadata("/bin/sleep").unwrap();
        let id = FileId {
            dev: m.dev(),
            ino: m.ino(),
        };
        let none = FileId {
            dev: m.dev(),
            ino: 0,
        };
        let start = std::time::Instant::now();
        let found = loop {
            let found = processes_mapping(&[id, none]);
            if found.contains(&(child.id(), id)) || start.elapsed() > Duration::from_secs(5) {
                break found;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&(child.id(), id)), "{found:?}");
        assert!(
            found
                .iter()
                .all(|&(pid, f)| pid != std::process::id() && f == id)
        );
        assert_eq!(kernel_dev(user_dev(8 << 20 | 1)), 8 << 20 | 1);
    }

    #[test]
    fn finds_a_mapped_library_after_its_fd_is_closed() {
        // This test binary maps libc executable; find it by address.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.contains("r-xp") && l.contains("libc.so"))
            .expect("libc mapped executable");
        let addr = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
        let path = line.split_whitespace().nth(5).unwrap();
        let m = std::fs::metadata(path).unwrap();
        let dev = u64::from(libc::major(m.dev())) << 20 | u64::from(libc::minor(m.dev()));
        let key = FileKey { dev, ino: m.ino() };
        let found = mapped_file(std::process::id(), key, addr, -1).expect("resolved");
        assert_eq!(found.metadata().unwrap().ino(), m.ino());
        // An fd number that names another file now (the loader closed its
        // fd and the number was reused) resolves through the mapping.
        let other_file = std::fs::File::open("/proc/self/maps").unwrap();
        use std::os::fd::AsRawFd as _;
        let found = mapped_file(std::process::id(), key, addr, other_file.as_raw_fd())
            .expect("resolved through the mapping");
        assert_eq!(found.metadata().unwrap().ino(), m.ino());
        let other = FileKey {
            dev,
            ino: m.ino() + 1,
        };
        assert!(mapped_file(std::process::id(), other, addr, -1).is_none());
    }
}
