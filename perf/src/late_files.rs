//! The window from a program bringing a TLS file tapwire has not seen to that
//! file's probes being live.
//!
//! tapwire runs selecting a fresh cgroup; `runs` times, a program in that
//! cgroup brings a new file (a new inode each time, as a new container
//! image's files would be), alternating two kinds:
//! - a library: python imports `ssl` with `LD_LIBRARY_PATH` pointing at a new
//!   copy of libssl, probed when the probes report the mapping;
//! - an executable: a new copy of the Go TLS peer (Go's `crypto/tls` linked
//!   in) runs `calls`, probed when the probes report the exec.
//!
//! tapwire measures each window (kernel timestamp of the exec or mapping to
//! probes attached) and logs the percentiles in its `stopped` counters, which
//! are read back here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::overhead::gotls;
use crate::overhead::process::{start_tapwire, stop_tapwire};

/// The system libssl copied for each library run.
const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
/// How long tapwire may take to start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
pub struct LateFilesPlan {
    /// The tapwire binary.
    pub tapwire: PathBuf,
    /// Programs started, each with its own new file.
    pub runs: usize,
}

/// Percentiles of one kind of window, µs, as tapwire reported them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Files measured (one per run when all went well).
    pub files: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Window {
    fn of(v: &serde_json::Value) -> Self {
        let get = |k: &str| v[k].as_u64().unwrap_or(0);
        Self {
            files: get("files"),
            p50_us: get("p50_us"),
            p99_us: get("p99_us"),
            max_us: get("max_us"),
        }
    }
}

/// tapwire's figures for the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct LateFilesResult {
    /// Library runs (python with a new libssl).
    pub library_runs: usize,
    /// Executable runs (a new copy of a Go program), 0 without `go`.
    pub exec_runs: usize,
    /// Libraries: mapping to probes live.
    pub after_map: Window,
    /// Executables: exec to probes live.
    pub after_exec: Window,
}

/// A cgroup removed (its processes killed) on drop.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid system.
fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, path, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(path))
        })
        .context("no cgroup2 hierarchy mounted")
}

/// Runs `program` with `args` (and an environment variable) in `cgroup`, to
/// completion.
fn run_in(cgroup: &Path, program: &Path, args: &[&str], env: Option<(&str, &Path)>) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").to_string_lossy().as_ref())?;
    let mut cmd = Command::new(program);
    if let Some((name, value)) = env {
        cmd.env(name, value);
    }
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe calls (open, write,
    // close) on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let status = cmd
        .status()
        .with_context(|| format!("run {}", program.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", program.display());
    }
    Ok(())
}

/// Starts tapwire, runs the programs, stops tapwire and reads its figures.
pub fn run(plan: &LateFilesPlan) -> Result<LateFilesResult> {
    let cg = Cgroup(cgroup2_root()?.join(format!("tapwire-bench-late-{}", std::process::id())));
    std::fs::create_dir(&cg.0).with_context(|| format!("create {}", cg.0.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("tapwire-bench-late-")
        .tempdir()?;
    let go = match gotls::build(dir.path()) {
        Ok(bin) => Some(bin),
        Err(e) => {
            eprintln!("bench: late files: no Go program, libraries only: {e:#}");
            None
        }
    };
    let (mut guard, lines) = start_tapwire(
        &plan.tapwire,
        &["--cgroup".as_ref(), cg.0.as_os_str()],
        &[],
        Duration::from_secs(20),
        READY_TIMEOUT,
    )?;
    let mut result = LateFilesResult::default();
    for i in 0..plan.runs {
        let run = dir.path().join(i.to_string());
        std::fs::create_dir(&run)?;
        match &go {
            Some(go) if i % 2 == 1 => {
                let copy = run.join("gotls");
                std::fs::copy(go, &copy)?;
                run_in(&cg.0, &copy, &["calls", "10"], None)?;
                result.exec_runs += 1;
            }
            _ => {
                std::fs::copy(LIBSSL, run.join("libssl.so.3"))?;
                run_in(
                    &cg.0,
                    Path::new("/usr/bin/python3"),
                    &["-c", "import ssl"],
                    Some(("LD_LIBRARY_PATH", &run)),
                )?;
                result.library_runs += 1;
            }
        }
    }
    // Let the last file's probes go live before stopping.
    std::thread::sleep(Duration::from_millis(500));
    let counters = stop_tapwire(&mut guard, &lines)?;
    let late = &counters["late_files"];
    result.after_map = Window::of(&late["after_map"]);
    result.after_exec = Window::of(&late["after_exec"]);
    Ok(result)
}
