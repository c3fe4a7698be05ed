//! What one OpenSSL call costs under tapwire: in a process tapwire selects,
//! and in one it does not (probes belong to files, so an unselected process
//! still hits them and leaves early, in the kernel).
//!
//! `tls_calls.c` (built with the system's `cc` against the system libssl)
//! makes one TLS connection over loopback to itself and times, in thread CPU
//! time, `N` messages of a 64-byte `SSL_write` read by an `SSL_read`: two TLS
//! calls per message. It runs untraced, then under one tapwire selecting one
//! copy of the program by executable (`--exe`) while a second copy (another
//! inode, so not selected) runs beside it, the two interleaved.

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
#[derive(Debug, Clone, Copy)]
pub struct TlsCallsResult {
    /// No tracer.
    pub untraced_ns: f64,
    /// The process is selected: probes capture its calls.
    pub selected_ns: f64,
    /// The process is not selected: probes exit early.
    pub unselected_ns: f64,
    /// Records tapwire read from its rings while the programs ran.
    pub ring_records: u64,
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

/// One run: ns per message.
fn run_once(bin: &Path, cert: &Path, key: &Path, messages: u32) -> Result<f64> {
    let out = Command::new(bin)
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
    let once = |bin: &Path| run_once(bin, &cert, &key, plan.messages);
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
    let (mut sel, mut unsel) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sel.push(once(&selected)?);
        unsel.push(once(&unselected)?);
    }
    let counters = stop_tapwire(&mut guard, &lines)?;
    let ring_records = counters["ring_records"].as_u64().unwrap_or(0);
    if ring_records == 0 {
        bail!("tapwire captured nothing of the selected program: {counters}");
    }
    Ok(TlsCallsResult {
        untraced_ns: median(untraced),
        selected_ns: median(sel),
        unselected_ns: median(unsel),
        ring_records,
    })
}
