//! The window from a program loading a TLS library tapwire has not seen to
//! that file's probes being live.
//!
//! tapwire runs selecting a fresh cgroup; `runs` times, a python in that
//! cgroup imports `ssl` with `LD_LIBRARY_PATH` pointing at a new copy of
//! libssl (a new inode each time, as a new container image's libssl would
//! be). Each copy is reported by the probes when mapped, inspected and
//! probed; tapwire measures each window (kernel timestamp of the mapping to
//! probes attached) and logs the percentiles in its `stopped` counters, which
//! are read back here.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// The system libssl copied for each run.
const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
/// How long tapwire may take to start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
pub struct LateFilesPlan {
    /// The tapwire binary.
    pub tapwire: PathBuf,
    /// Programs started, each with its own new libssl.
    pub runs: usize,
}

/// tapwire's figures for the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct LateFilesResult {
    /// Programs started.
    pub runs: usize,
    /// Files probed when first seen (one per run when all went well).
    pub files: u64,
    /// Mapping to probes live, median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
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

/// Runs `program` with `args` in `cgroup`, to completion.
fn run_in(cgroup: &Path, program: &str, args: &[&str], env: (&str, &Path)) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").to_string_lossy().as_ref())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(env.0, env.1)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
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
    let status = cmd.status().with_context(|| format!("run {program}"))?;
    if !status.success() {
        bail!("{program} failed: {status}");
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
    let mut tapwire = Command::new(&plan.tapwire)
        .arg("--cgroup")
        .arg(&cg.0)
        .env("NO_COLOR", "1")
        .env_remove("TAPWIRE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start tapwire")?;
    let stderr = tapwire.stderr.take().context("tapwire stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    loop {
        let line = rx
            .recv_timeout(READY_TIMEOUT.saturating_sub(start.elapsed()))
            .context("tapwire did not report `capture ready`")?;
        if line.contains("capture ready") {
            break;
        }
    }
    let result = (|| -> Result<()> {
        for i in 0..plan.runs {
            let lib = dir.path().join(i.to_string());
            std::fs::create_dir(&lib)?;
            std::fs::copy(LIBSSL, lib.join("libssl.so.3"))?;
            run_in(
                &cg.0,
                "/usr/bin/python3",
                &["-c", "import ssl"],
                ("LD_LIBRARY_PATH", &lib),
            )?;
        }
        Ok(())
    })();
    // Let the last file's probes go live before stopping.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(tapwire.id() as i32, libc::SIGINT) };
    let mut counters = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        if let Some(json) = line.split_once("counters=").map(|(_, j)| j) {
            counters = serde_json::from_str::<serde_json::Value>(json).ok();
        }
    }
    let _ = tapwire.wait();
    result?;
    let counters = counters.context("no `stopped` counters from tapwire")?;
    let w = &counters["late_files"]["live_window"];
    let get = |k: &str| w[k].as_u64().unwrap_or(0);
    Ok(LateFilesResult {
        runs: plan.runs,
        files: get("files"),
        p50_us: get("p50_us"),
        p99_us: get("p99_us"),
        max_us: get("max_us"),
    })
}
