//! What one OpenSSL call costs under tapwire: in a process tapwire selects,
//! and in one it does not (probes belong to files, so an unselected process
//! still hits them and leaves early, in the kernel).
//!
//! `tls_calls.c` (built with the system's `cc` against the system libssl)
//! makes one TLS connection over loopback to itself and times, in thread CPU
//! time, `N` messages of a 64-byte `SSL_write` read by an `SSL_read`: two TLS
//! calls per message. It runs untraced, then under one tapwire selecting one
//! copy of the program by executable (`--exe`) while a second copy (another
//! inode, so not selected) runs beside it, the two interleaved. A third copy,
//! not selected either, loads a private copy of libssl that no selected
//! process maps, so tapwire never probes it: it pays the syscall tracepoints
//! alone, and the difference to the second copy is what the TLS probe costs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::overhead::process::{start_tapwire, stop_tapwire};

/// The program's source.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls_calls.c");
/// TLS calls per message (an `SSL_write` and an `SSL_read`).
pub const CALLS_PER_MESSAGE: u32 = 2;
/// How long tapwire may take to start.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What to run.
pub struct TlsCallsPlan {
    /// The tapwire binary.
    pub tapwire: PathBuf,
    /// Messages per run.
    pub messages: u32,
    /// Runs per configuration; the median is kept.
    pub runs: usize,
}

/// ns per message (two TLS calls), median of the runs.
#[derive(Debug, Clone)]
pub struct TlsCallsResult {
    /// No tracer.
    pub untraced_ns: f64,
    /// The process is selected: probes capture its calls.
    pub selected_ns: f64,
    /// The process is not selected: probes exit early.
    pub unselected_ns: f64,
    /// Not selected, with a libssl no probe is attached to: the syscall
    /// tracepoints alone.
    pub unprobed_ns: f64,
    /// Records tapwire read from its rings while the programs ran.
    pub ring_records: u64,
    /// ns per message the probes' own programs ran in one unselected run
    /// (the kernel's run-time statistics), by program; empty when the
    /// statistics could not be read.
    pub unselected_programs: Vec<(String, f64)>,
}

impl TlsCallsResult {
    /// Added µs per TLS call over untraced for `ns` per message.
    pub fn added_us(&self, ns: f64) -> f64 {
        (ns - self.untraced_ns) / f64::from(CALLS_PER_MESSAGE) / 1000.0
    }
}

/// Builds the program into `dir`, with a certificate for its server side.
fn build(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let bin = dir.join("tls_calls");
    let out = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(SOURCE)
        .args(["-lssl", "-lcrypto"])
        .output()
        .context("run cc (are gcc and libssl-dev installed?)")?;
    if !out.status.success() {
        bail!("cc failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("run openssl req")?;
    if !out.status.success() {
        bail!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((bin, cert, key))
}

/// The libssl `bin` loads (from `ldd`).
fn linked_libssl(bin: &Path) -> Result<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().context("run ldd")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            name.starts_with("libssl.so").then(|| PathBuf::from(path))
        })
        .with_context(|| format!("no libssl in `ldd {}`", bin.display()))
}

/// One run: ns per message. `lib_dir`: a directory searched first for
/// libraries.
fn run_once(
    bin: &Path,
    lib_dir: Option<&Path>,
    cert: &Path,
    key: &Path,
    messages: u32,
) -> Result<f64> {
    let mut cmd = Command::new(bin);
    if let Some(dir) = lib_dir {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let out = cmd
        .arg(cert)
        .arg(key)
        .arg(messages.to_string())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("tls_calls output")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Builds the program and measures the three configurations.
pub fn run(plan: &TlsCallsPlan) -> Result<TlsCallsResult> {
    let dir = tempfile::Builder::new()
        .prefix("tapwire-bench-tls-calls-")
        .tempdir()?;
    let (selected, cert, key) = build(dir.path())?;
    let unselected = dir.path().join("tls_calls_unselected");
    std::fs::copy(&selected, &unselected)?;
    let unprobed = dir.path().join("tls_calls_unprobed");
    std::fs::copy(&selected, &unprobed)?;
    let libssl = linked_libssl(&selected)?;
    let lib_dir = dir.path().join("lib");
    std::fs::create_dir(&lib_dir)?;
    let private_libssl = lib_dir.join(libssl.file_name().context("libssl file name")?);
    std::fs::copy(&libssl, &private_libssl)?;
    let once = |bin: &Path| run_once(bin, None, &cert, &key, plan.messages);
    let once_unprobed = || run_once(&unprobed, Some(&lib_dir), &cert, &key, plan.messages);
    let runs = plan.runs.max(1);

    let untraced = (0..runs)
        .map(|_| once(&selected))
        .collect::<Result<Vec<_>>>()?;

    let (mut guard, lines) = start_tapwire(
        &plan.tapwire,
        &["--exe".as_ref(), selected.as_os_str()],
        &[],
        Duration::from_secs(20),
        READY_TIMEOUT,
    )?;
    // One run of each first: the selected program's first run brings its
    // exec record and the agent's first look at it.
    once(&selected)?;
    once(&unselected)?;
    once_unprobed()?;
    let (mut sel, mut unsel, mut unprobed_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        sel.push(once(&selected)?);
        unsel.push(once(&unselected)?);
        unprobed_ns.push(once_unprobed()?);
    }
    // Where an unselected call's time goes: one more run with the kernel
    // timing every program (`kernel.bpf_stats_enabled`, restored after).
    let unselected_programs =
        program_times(guard.pid(), plan.messages, || once(&unselected).map(drop)).unwrap_or_else(
            |e| {
                eprintln!("bench: tls_calls: no per-program times: {e:#}");
                Vec::new()
            },
        );
    let counters = stop_tapwire(&mut guard, &lines)?;
    // The private copy must have stayed unprobed, or the split means nothing.
    let private = private_libssl.display().to_string();
    if let Some(l) = lines
        .snapshot()
        .iter()
        .find(|l| l.contains("tls file probed") && l.contains(&private))
    {
        bail!("tapwire probed the private libssl copy: {l}");
    }
    let ring_records = counters["ring_records"].as_u64().unwrap_or(0);
    if ring_records == 0 {
        bail!("tapwire captured nothing of the selected program: {counters}");
    }
    Ok(TlsCallsResult {
        untraced_ns: median(untraced),
        selected_ns: median(sel),
        unselected_ns: median(unsel),
        unprobed_ns: median(unprobed_ns),
        ring_records,
        unselected_programs,
    })
}

/// The sysctl that makes the kernel time every BPF program run.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// ns per message each BPF program of process `pid` ran while `run` made
/// `messages` messages, from the kernel's run-time statistics (turned on for
/// the run only), programs that ran, largest first.
fn program_times(
    pid: u32,
    messages: u32,
    run: impl FnOnce() -> Result<()>,
) -> Result<Vec<(String, f64)>> {
    let was = std::fs::read_to_string(BPF_STATS).context("read bpf_stats_enabled")?;
    std::fs::write(BPF_STATS, "1").context("enable bpf_stats")?;
    let before = program_stats(pid);
    let ran = run();
    let after = program_stats(pid);
    let _ = std::fs::write(BPF_STATS, was.trim());
    ran?;
    let mut out: Vec<(String, f64)> = after
        .into_iter()
        .filter_map(|(id, (cnt, ns))| {
            let (cnt0, ns0) = before.get(&id).copied().unwrap_or((0, 0));
            (cnt > cnt0).then(|| {
                let name = program_name(id).unwrap_or_else(|| format!("prog {id}"));
                (name, (ns - ns0) as f64 / f64::from(messages))
            })
        })
        .collect();
    // Programs the calls do not reach (execs, other processes' syscalls).
    out.retain(|p| p.1 >= 1.0);
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(out)
}

/// `(run_cnt, run_time_ns)` of every BPF program `pid` holds, by program id
/// (`/proc/PID/fdinfo`).
pub(crate) fn program_stats(pid: u32) -> std::collections::HashMap<u32, (u64, u64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(cnt), Some(ns)) =
            (field("prog_id:"), field("run_cnt:"), field("run_time_ns:"))
        {
            out.insert(id as u32, (cnt, ns));
        }
    }
    out
}

/// The name of BPF program `id` (`BPF_PROG_GET_FD_BY_ID`, then
/// `BPF_OBJ_GET_INFO_BY_FD`).
pub(crate) fn program_name(id: u32) -> Option<String> {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `struct bpf_prog_info` up to and past `name` (at byte 64, 16 bytes).
    const INFO_LEN: usize = 256;
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: `attr` is a zeroed `union bpf_attr` of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_ptr(), 128) };
    if fd < 0 {
        return None;
    }
    let mut info = [0u8; INFO_LEN];
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(INFO_LEN as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: `attr` names `info`, a writable buffer of the length given.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_ptr(), 128) };
    // SAFETY: `fd` is ours, returned above.
    unsafe { libc::close(fd as i32) };
    if rc < 0 {
        return None;
    }
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}
