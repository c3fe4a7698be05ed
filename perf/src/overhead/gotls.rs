//! The Go HTTPS server (Go's `crypto/tls`, HTTP/1.1 to wrk) measured beside
//! nginx, and the per-call cost of tapwire's Go probes.
//!
//! Both use the Go peer of the capture tests (`testkit/go/gotls`), built with
//! the system's `go`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::nginx::free_port;
use super::process::{Guard, start_tapwire};

/// Source of the Go peer.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testkit/go/gotls");
/// Longest wait for the server to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Messages per `gotls calls` run: about a second untraced here.
const CALLS: u32 = 200_000;
/// Runs per measurement of the per-call cost; the median is kept.
const CALL_RUNS: usize = 3;
/// Probe hits per message in `gotls calls`: the client's `Write` (entry), the
/// server's `Read` (entry and the plaintext copy).
pub const PROBES_PER_MESSAGE: u32 = 3;

/// Builds the Go peer into `dir` (Go's build cache under `dir` as well).
pub fn build(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("gotls");
    let out = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(SOURCE)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .context("run go build (is golang-go installed?)")?;
    if !out.status.success() {
        bail!("go build failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(bin)
}

/// The Go HTTPS server, one OS thread running Go code (`GOMAXPROCS=1`), like
/// nginx's single worker.
pub struct GoServer {
    guard: Guard,
    /// HTTPS port on 127.0.0.1.
    pub port: u16,
}

impl GoServer {
    /// Starts `bin server` with the certificate and key nginx uses.
    pub fn start(bin: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = Guard::spawn("go server", &mut cmd, libc::SIGTERM, Duration::from_secs(5))?;
        let until = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            guard.check_running().context("go server exited")?;
            if Instant::now() > until {
                bail!("go server not listening after {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { guard, port })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The URL of its 1 KiB response.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/1k", self.port)
    }
}

/// Nanoseconds per message of one `gotls calls` run.
fn calls_once(bin: &Path) -> Result<f64> {
    let out = Command::new(bin)
        .args(["calls", &CALLS.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("run gotls calls")?;
    if !out.status.success() {
        bail!(
            "gotls calls failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("gotls calls output")
}

fn median_calls(bin: &Path) -> Result<f64> {
    let mut runs = (0..CALL_RUNS)
        .map(|_| calls_once(bin))
        .collect::<Result<Vec<f64>>>()?;
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}

/// What the per-call measurement found.
#[derive(Debug, Clone)]
pub struct ProbeCost {
    /// ns per message untraced.
    pub untraced_ns: f64,
    /// ns per message with tapwire capturing the program.
    pub traced_ns: f64,
    /// Where tapwire put each Go probe (`symbol: placement`, from its log).
    pub placements: Vec<String>,
}

impl ProbeCost {
    /// Added µs per probe hit.
    pub fn per_call_us(&self) -> f64 {
        (self.traced_ns - self.untraced_ns) / f64::from(PROBES_PER_MESSAGE) / 1000.0
    }
}

/// `symbol: placement` of each TLS probe tapwire logged as attached in a Go
/// program (`kind="go"` files are `/proc/PID/exe` or the program's path).
fn go_placements(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("tls probe attached") && l.contains("crypto/tls.(*Conn)"))
        .filter_map(|l| {
            let symbol = l.split("symbol=").nth(1)?.split(' ').next()?;
            let placement = l.split("placement=").nth(1)?;
            Some(format!("{}: {placement}", symbol.trim_matches('"')))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Runs `gotls calls` untraced, then under tapwire selecting the program by
/// executable (one run first so its probes are planned before the measured
/// ones). Fails if tapwire did not probe the program.
pub fn probe_cost(bin: &Path, tapwire: &Path) -> Result<ProbeCost> {
    let untraced_ns = median_calls(bin)?;
    let (mut guard, stderr) = start_tapwire(
        tapwire,
        &["--exe".as_ref(), bin.as_os_str()],
        &[("RUST_LOG", "info,tapwire::capture=debug")],
        Duration::from_secs(20),
        Duration::from_secs(90),
    )?;
    calls_once(bin)?;
    let placements = go_placements(&stderr.snapshot());
    if placements.is_empty() {
        let why: Vec<String> = stderr
            .snapshot()
            .into_iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        bail!("tapwire did not probe the Go program: {}", why.join("; "));
    }
    let traced_ns = median_calls(bin)?;
    guard.stop();
    Ok(ProbeCost {
        untraced_ns,
        traced_ns,
        placements,
    })
}
