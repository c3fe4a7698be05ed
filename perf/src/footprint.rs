//! tapwire's footprint outside the request path: an idle agent's CPU and
//! memory, and its peak memory under uploads far larger than its memory
//! budget.
//!
//! - Idle: tapwire with its default config, selecting a process that makes no
//!   traffic, for `idle_secs`: CPU as a share of one core, resident memory.
//! - Memory: `conns` plaintext loopback connections each pipelining `posts`
//!   POSTs of `body` bytes to a server that reads every byte and never
//!   answers (the scenario of `dataplane/tests/dataplane_memory.rs` at full
//!   size); tapwire's peak resident memory, and what it shed, counted.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::overhead::process::{Guard, Lines, start_tapwire, stop_tapwire};
use crate::overhead::procfs;

/// How long tapwire may take to attach its probes.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace tapwire gets to stop and log its counters.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Settling time after start before the idle window (start-up work done).
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// Longest the memory run's uploads may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// What to run.
#[derive(Debug, Clone)]
pub struct FootprintPlan {
    /// The tapwire binary.
    pub tapwire: PathBuf,
    /// Seconds of the idle window.
    pub idle_secs: u64,
    /// Memory run: connections, POSTs per connection, body bytes per POST.
    pub uploads: (usize, usize, usize),
}

/// An idle agent.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Length of the window, s.
    pub secs: f64,
    /// CPU over the window, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory at the end, KiB.
    pub rss_kib: u64,
    /// Threads.
    pub threads: u64,
}

/// The agent under uploads it cannot keep.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Connections, POSTs per connection, body bytes per POST.
    pub uploads: (usize, usize, usize),
    /// Seconds the client took to write every byte.
    pub secs: f64,
    /// Resident memory before the load, KiB.
    pub idle_rss_kib: u64,
    /// Peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// Counters of what was not kept: (name, value), non-zero ones.
    pub not_kept: Vec<(String, u64)>,
}

/// Both runs' results (each may have failed, with why).
#[derive(Debug)]
pub struct FootprintResults {
    /// The idle run.
    pub idle: Result<Idle, String>,
    /// The memory run.
    pub memory: Result<Memory, String>,
}

/// Runs both.
pub fn run(plan: &FootprintPlan) -> FootprintResults {
    eprintln!("bench: idle agent, {} s", plan.idle_secs);
    let idle = idle(plan).map_err(|e| format!("{e:#}"));
    let (c, p, b) = plan.uploads;
    eprintln!(
        "bench: memory under uploads, {c} connections × {p} POSTs × {} MiB",
        b >> 20
    );
    let memory = memory(plan).map_err(|e| format!("{e:#}"));
    FootprintResults { idle, memory }
}

/// A running tapwire (default config) selecting `pid`.
struct Agent {
    guard: Guard,
    stderr: Lines,
}

impl Agent {
    fn start(plan: &FootprintPlan, pid: u32) -> Result<Agent> {
        let pid = pid.to_string();
        let (guard, stderr) = start_tapwire(
            &plan.tapwire,
            &["--pid".as_ref(), pid.as_ref()],
            &[],
            STOP_GRACE,
            READY_TIMEOUT,
        )?;
        Ok(Agent { guard, stderr })
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Stops it; its `stopped` counters.
    fn stop(mut self) -> Result<serde_json::Value> {
        stop_tapwire(&mut self.guard, &self.stderr)
    }
}

/// `key` (e.g. `VmRSS:`) of `/proc/PID/status`, in its unit (kB, or a count).
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn idle(plan: &FootprintPlan) -> Result<Idle> {
    // A selected process that makes no traffic.
    let mut quiet = Guard::spawn(
        "sleep",
        Command::new("sleep").arg("100000"),
        libc::SIGTERM,
        Duration::from_secs(1),
    )?;
    let agent = Agent::start(plan, quiet.pid())?;
    std::thread::sleep(IDLE_SETTLE);
    let (t0, at) = (procfs::cpu_ticks(agent.pid()).unwrap_or(0), Instant::now());
    std::thread::sleep(Duration::from_secs(plan.idle_secs));
    let ticks = procfs::cpu_ticks(agent.pid())
        .unwrap_or(0)
        .saturating_sub(t0);
    let secs = at.elapsed().as_secs_f64();
    let rss_kib = status_field(agent.pid(), "VmRSS:").context("tapwire's VmRSS")?;
    let threads = status_field(agent.pid(), "Threads:").unwrap_or(0);
    agent.stop()?;
    quiet.stop();
    Ok(Idle {
        secs,
        cpu_percent: ticks as f64 / procfs::ticks_per_sec() / secs * 100.0,
        rss_kib,
        threads,
    })
}

/// The uploads' client and server, shared with the data-plane test.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dataplane/tests/common/pipelined_posts.py")
}

fn memory(plan: &FootprintPlan) -> Result<Memory> {
    let (conns, posts, body) = plan.uploads;
    let port = crate::overhead::nginx::free_port()?;
    let mut server_cmd = Command::new("python3");
    server_cmd
        .arg(script())
        .args(["server", &port.to_string()])
        .stdout(Stdio::piped());
    let mut server = Guard::spawn(
        "upload server",
        &mut server_cmd,
        libc::SIGKILL,
        Duration::ZERO,
    )?;
    let mut ready = String::new();
    BufReader::new(
        server
            .child_mut()
            .and_then(|c| c.stdout.take())
            .context("server stdout")?,
    )
    .read_line(&mut ready)?;
    if ready.trim() != "listening" {
        bail!("upload server did not start");
    }
    let mut client_cmd = Command::new("python3");
    client_cmd
        .arg(script())
        .args(["client", &port.to_string()])
        .args([conns, posts, body].map(|n| n.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut client = Guard::spawn(
        "upload client",
        &mut client_cmd,
        libc::SIGKILL,
        Duration::ZERO,
    )?;
    let agent = Agent::start(plan, client.pid())?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_kib = status_field(agent.pid(), "VmRSS:").context("tapwire's VmRSS")?;
    let child = client.child_mut().context("client")?;
    let mut go = child.stdin.take().context("client stdin")?;
    let out = child.stdout.take().context("client stdout")?;
    std::io::Write::write_all(&mut go, b"go\n")?;
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let sent = rx
        .recv_timeout(UPLOAD_TIMEOUT)
        .context("the uploads did not finish in time")?;
    let secs = started.elapsed().as_secs_f64();
    if sent.trim() != "sent" {
        bail!("upload client failed: {sent}");
    }
    // Let the agent drain what its rings still hold.
    std::thread::sleep(Duration::from_secs(2));
    let peak_rss_kib = procfs::vm_hwm_kib(agent.pid()).context("tapwire's VmHWM")?;
    let counters = agent.stop()?;
    drop(go);
    client.stop();
    server.stop();
    let mut not_kept = Vec::new();
    for (group, keys) in [
        (
            "kernel_drops",
            &["ring_full", "lost_bytes", "overload_shed_bytes"][..],
        ),
        (
            "shards",
            &[
                "body_shed_bytes",
                "body_over_limit_bytes",
                "overload_body_bytes",
                "gap_records",
            ][..],
        ),
    ] {
        for key in keys {
            let n = counters[group][key].as_u64().unwrap_or(0);
            if n > 0 {
                not_kept.push((format!("{group}.{key}"), n));
            }
        }
    }
    Ok(Memory {
        uploads: plan.uploads,
        secs,
        idle_rss_kib,
        peak_rss_kib,
        not_kept,
    })
}
