//! The soak: the agent capturing mixed HTTP/1.1, HTTP/2 and TLS traffic for a
//! long run, its S3 store (SeaweedFS) stopped and started again every few
//! minutes, and at the end the questions an operator asks: did its memory stay
//! flat, is every object an event named in the bucket, and did any counter of
//! lost data move?
//!
//! Traffic comes from a driver script (curl, plain and HTTPS, HTTP/1.1 and
//! HTTP/2, GETs and POSTs with unique bodies) against nginx; capture is limited
//! to the driver's process tree (`--pid`), so nothing else on the machine is
//! recorded. Events go to stdout (read here), objects to S3.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tapwire_testkit::{Weed, block_on, guard, signal_group};

use crate::overhead::nginx::Nginx;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// How long traffic runs.
    pub duration: Duration,
    /// The agent binary.
    pub tapwire: PathBuf,
    /// How often the S3 server is stopped and started again.
    pub restart_every: Duration,
    /// How long it stays down each time.
    pub outage: Duration,
}

/// Bucket the objects go to.
const BUCKET: &str = "soak";
/// How often the agent's RSS is sampled.
const RSS_EVERY: Duration = Duration::from_secs(5);
/// RSS after this long counts as the start (probes attached, pools warmed).
const WARMUP: Duration = Duration::from_secs(60);
/// Longest wait for the store to upload what it holds once traffic stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Counters of data lost (by name; every series of each). Transactions cut
/// off at stop or by the idle timeout are marked `truncated`, not lost.
pub const LOSS_COUNTERS: [&str; 12] = [
    "tapwire_kernel_drops_total",
    "tapwire_ring_decode_errors_total",
    "tapwire_router_shard_gone_total",
    "tapwire_shard_undecodable_total",
    "tapwire_shard_late_total",
    "tapwire_shard_gap_records_total",
    "tapwire_shard_conn_table_full_total",
    "tapwire_shard_body_shed_bytes_total",
    "tapwire_shard_body_over_limit_bytes_total",
    "tapwire_shard_h2_streams_over_limit_total",
    "tapwire_shard_parse_errors_total",
    "tapwire_store_dropped_total",
];

/// One RSS sample.
#[derive(Debug, Clone, Copy)]
pub struct RssSample {
    /// Since the agent was ready.
    pub at: Duration,
    /// Resident set, KiB.
    pub kib: u64,
}

/// What the soak saw.
#[derive(Debug)]
pub struct SoakResult {
    /// Traffic time.
    pub duration: Duration,
    /// S3 restarts done.
    pub restarts: u32,
    /// Driver rounds completed (each: 10 plain HTTP/1.1 GETs, 10 HTTPS
    /// HTTP/1.1 GETs, 10 HTTPS HTTP/2 GETs, 1 plain and 1 HTTPS POST).
    pub rounds: u64,
    /// `http_transaction` events by protocol and TLS (`http1 tls`, ...).
    pub events: BTreeMap<String, u64>,
    /// Distinct digests events named as kept.
    pub named: usize,
    /// Objects events said were not kept.
    pub not_kept: u64,
    /// Named digests not in the bucket at the end.
    pub missing: Vec<String>,
    /// Keys in the bucket.
    pub bucket_keys: usize,
    /// RSS samples.
    pub rss: Vec<RssSample>,
    /// Every series of [`LOSS_COUNTERS`] (and the store's `drops_*`), with value.
    pub losses: Vec<(String, f64)>,
    /// Store counters worth showing (accepted, stored, errors, recovered...).
    pub store: Vec<(String, f64)>,
    /// The agent's exit status.
    pub exit: String,
    /// Load average at start and end (`/proc/loadavg`).
    pub load: (String, String),
}

impl SoakResult {
    /// RSS after warm-up, peak, and at the end, KiB.
    pub fn rss_summary(&self) -> (u64, u64, u64) {
        let start = self
            .rss
            .iter()
            .find(|s| s.at >= WARMUP)
            .or(self.rss.first())
            .map_or(0, |s| s.kib);
        let peak = self.rss.iter().map(|s| s.kib).max().unwrap_or(0);
        let end = self.rss.last().map_or(0, |s| s.kib);
        (start, peak, end)
    }

    /// Whether RSS stayed flat: the end within 25% (or 16 MiB) of the start.
    pub fn rss_flat(&self) -> bool {
        let (start, _, end) = self.rss_summary();
        end <= start + (start / 4).max(16 * 1024)
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.missing.is_empty()
            && self.losses.iter().all(|(_, v)| *v == 0.0)
            && self.rss_flat()
            && self.named > 0
    }
}

/// Runs the soak.
pub fn run(plan: &SoakPlan) -> Result<SoakResult> {
    let dir = tempfile::Builder::new().prefix("tapwire-soak-").tempdir()?;
    let mut weed = Weed::start().context("the soak needs SeaweedFS (cargo xtask setup)")?;
    weed.create_bucket(BUCKET);
    let nginx = Nginx::start_with_http2(&dir.path().join("nginx"))?;
    let spool = dir.path().join("spool");
    let config = dir.path().join("qpoint.yaml");
    let store: String = weed
        .store_yaml("soak_s3", BUCKET, &spool, "fatal")
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "version: 2\nservices:\n  event_stores:\n    - id: console\n      type: stdout\n  \
             object_stores:\n    -\n{store}"
        ),
    )?;

    // The driver waits for a line on stdin, so the agent is attached first.
    let rounds_file = dir.path().join("rounds");
    let mut driver = guard(
        Command::new("bash")
            .arg("-c")
            .arg(driver_script(&nginx, &rounds_file))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .spawn()
    .context("start the traffic driver")?;
    let status_port = tapwire_testkit::free_port();
    let mut agent = guard(
        Command::new(&plan.tapwire)
            .arg("--config")
            .arg(&config)
            .args(["--pid", &driver.id().to_string()])
            .args(["--httpd-listen", &format!("127.0.0.1:{status_port}")])
            .env_remove("TAPWIRE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .spawn()
    .with_context(|| format!("start {}", plan.tapwire.display()))?;
    let events = Events::collect(agent.stdout.take().context("agent stdout")?);
    let ready = Arc::new(Mutex::new(false));
    let log = collect_stderr(agent.stderr.take().context("agent stderr")?, ready.clone());
    let until = Instant::now() + Duration::from_secs(120);
    while !*ready.lock().expect("ready lock") {
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited ({status}): {}", tail(&log));
        }
        if Instant::now() > until {
            bail!("the agent was not ready within 2 minutes: {}", tail(&log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let load_start = loadavg();
    {
        use std::io::Write as _;
        let stdin = driver.stdin.as_mut().context("driver stdin")?;
        stdin.write_all(b"go\n")?;
    }
    eprintln!(
        "soak: traffic for {:?}, S3 restarted every {:?}",
        plan.duration, plan.restart_every
    );

    let started = Instant::now();
    let mut rss = Vec::new();
    let mut next_restart = started + plan.restart_every;
    let mut restarts = 0;
    while started.elapsed() < plan.duration {
        if let Some(status) = agent.try_wait()? {
            bail!(
                "the agent exited during the soak ({status}): {}",
                tail(&log)
            );
        }
        if let Some(status) = driver.try_wait()? {
            bail!("the traffic driver exited ({status})");
        }
        rss.push(RssSample {
            at: started.elapsed(),
            kib: rss_kib(agent.id()).context("agent RSS")?,
        });
        if Instant::now() >= next_restart {
            eprintln!(
                "soak: {:?}: stopping S3 for {:?}",
                started.elapsed(),
                plan.outage
            );
            weed.stop();
            std::thread::sleep(plan.outage);
            weed.restart();
            restarts += 1;
            next_restart = Instant::now() + plan.restart_every;
        }
        std::thread::sleep(RSS_EVERY.min(plan.duration.saturating_sub(started.elapsed())));
    }
    let duration = started.elapsed();
    signal_group(driver.id(), libc::SIGKILL);
    let _ = driver.wait();
    let rounds = std::fs::read_to_string(&rounds_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);

    // Let the store upload what it holds, then read the counters and stop.
    let drained = Instant::now() + DRAIN_TIMEOUT;
    let metrics = loop {
        let metrics = scrape(status_port);
        if store_settled(&metrics) || Instant::now() > drained {
            break metrics;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    rss.push(RssSample {
        at: started.elapsed(),
        kib: rss_kib(agent.id()).unwrap_or(0),
    });
    signal_group(agent.id(), libc::SIGTERM);
    let exit = match wait_exit(&mut agent, Duration::from_secs(40)) {
        Some(status) => status.to_string(),
        None => {
            signal_group(agent.id(), libc::SIGKILL);
            let _ = agent.wait();
            "killed: no exit within 40 s of SIGTERM".to_owned()
        }
    };
    // Stdout closes with the agent; the reader thread then has every event.
    std::thread::sleep(Duration::from_millis(500));

    let seen = events.0.lock().expect("events lock");
    let keys: HashSet<String> = block_on(weed.client(BUCKET).list_keys())
        .map_err(|e| anyhow::anyhow!("list the bucket: {e}"))?
        .into_iter()
        .collect();
    let mut missing: Vec<String> = seen.named.difference(&keys).cloned().collect();
    missing.sort();
    let losses = metrics
        .iter()
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or_default();
            LOSS_COUNTERS.contains(&name) || name.starts_with("tapwire_store_drops_")
        })
        .cloned()
        .collect();
    let store = metrics
        .iter()
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or_default();
            [
                "tapwire_store_accepted_total",
                "tapwire_store_stored_total",
                "tapwire_store_deduplicated_total",
                "tapwire_store_errors_total",
                "tapwire_store_recovered_total",
            ]
            .contains(&name)
                && series.contains("kind=\"object\"")
        })
        .cloned()
        .collect();
    Ok(SoakResult {
        duration,
        restarts,
        rounds,
        events: seen.by_kind.clone(),
        named: seen.named.len(),
        not_kept: seen.not_kept,
        missing,
        bucket_keys: keys.len(),
        rss,
        losses,
        store,
        exit,
        load: (load_start, loadavg()),
    })
}

/// The traffic driver: rounds of curl requests until killed; each round's
/// requests carry the round number, so request header blocks and POST bodies
/// are new objects every round. Writes the rounds done to `rounds`.
fn driver_script(nginx: &Nginx, rounds: &Path) -> String {
    let (http, https) = (nginx.http_port, nginx.https_port);
    format!(
        r#"read -r _
i=0
while :; do
  i=$((i+1))
  plain=(); tls=()
  for k in 0 1 2 3 4 5 6 7 8 9; do
    f=1k.bin; [ "$k" = 9 ] && f=64k.bin
    plain+=("http://127.0.0.1:{http}/$f?round=$i&k=$k")
    tls+=("https://127.0.0.1:{https}/$f?round=$i&k=$k")
  done
  curl -s --http1.1 -H "x-soak-round: $i" "${{plain[@]}}" > /dev/null
  curl -sk --http1.1 -H "x-soak-round: $i" "${{tls[@]}}" > /dev/null
  curl -sk --http2 -H "x-soak-round: $i" "${{tls[@]}}" > /dev/null
  curl -s -X POST --data-binary "plain body of round $i" "http://127.0.0.1:{http}/post?round=$i" > /dev/null
  curl -sk -X POST --data-binary "tls body of round $i" "https://127.0.0.1:{https}/post?round=$i" > /dev/null
  echo "$i" > '{rounds}'
  sleep 0.5
done
"#,
        rounds = rounds.display()
    )
}

#[derive(Default)]
struct Seen {
    by_kind: BTreeMap<String, u64>,
    named: HashSet<String>,
    not_kept: u64,
}

/// The agent's events, tallied as they come.
struct Events(Arc<Mutex<Seen>>);

impl Events {
    fn collect(stdout: std::process::ChildStdout) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["type"] != "http_transaction" {
                    continue;
                }
                let mut s = sink.lock().expect("events lock");
                let kind = format!(
                    "{}{}",
                    v["protocol"].as_str().unwrap_or("?"),
                    if v["tls"] == true { " tls" } else { " plain" }
                );
                *s.by_kind.entry(kind).or_default() += 1;
                for o in v["objects"].as_array().into_iter().flatten() {
                    match (o["kept"].as_bool(), o["digest"].as_str()) {
                        (Some(true), Some(d)) => {
                            s.named.insert(d.to_owned());
                        }
                        _ => s.not_kept += 1,
                    }
                }
            }
        });
        Events(seen)
    }
}

/// Collects the agent's stderr; sets `ready` at `capture ready`.
fn collect_stderr(
    stderr: std::process::ChildStderr,
    ready: Arc<Mutex<bool>>,
) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("capture ready") {
                *ready.lock().expect("ready lock") = true;
            }
            let mut l = sink.lock().expect("stderr lock");
            l.push(line);
            // Keep the last lines only: a long run logs S3 outages.
            if l.len() > 2000 {
                l.drain(..1000);
            }
        }
    });
    lines
}

fn tail(log: &Arc<Mutex<Vec<String>>>) -> String {
    let l = log.lock().expect("stderr lock");
    l[l.len().saturating_sub(10)..].join("\n")
}

/// The Prometheus text of the status server as (series, value).
fn scrape(port: u16) -> Vec<(String, f64)> {
    let (_, body) = tapwire_testkit::get(port, "/metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Whether the object store has settled everything it accepted.
fn store_settled(metrics: &[(String, f64)]) -> bool {
    let sum = |name: &str| -> f64 {
        metrics
            .iter()
            .filter(|(s, _)| s.starts_with(name) && s.contains("kind=\"object\""))
            .map(|(_, v)| v)
            .sum()
    };
    let accepted = sum("tapwire_store_accepted_total{");
    accepted > 0.0
        && accepted
            <= sum("tapwire_store_stored_total{")
                + sum("tapwire_store_deduplicated_total{")
                + sum("tapwire_store_dropped_total{")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The result as markdown.
pub fn markdown(r: &SoakResult, command: &str, machine: &str, note: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let (start, peak, end) = r.rss_summary();
    let mib = |k: u64| k as f64 / 1024.0;
    let _ = writeln!(
        md,
        "# Soak: {:.0} minutes\n",
        r.duration.as_secs_f64() / 60.0
    );
    let _ = writeln!(md, "`{command}` on {machine}.\n");
    if let Some(note) = note {
        let _ = writeln!(md, "{note}\n");
    }
    let _ = writeln!(
        md,
        "Load average at start {}, at end {}.\n",
        r.load.0, r.load.1
    );
    let _ = writeln!(
        md,
        "**Result: {}.**\n",
        if r.passed() { "passed" } else { "FAILED" }
    );
    let _ = writeln!(md, "| check | value |\n| --- | --- |");
    let _ = writeln!(
        md,
        "| traffic | {} driver rounds (32 requests each: plain HTTP/1.1, HTTPS HTTP/1.1, HTTPS HTTP/2, POSTs) |",
        r.rounds
    );
    for (kind, n) in &r.events {
        let _ = writeln!(md, "| `http_transaction` events, {kind} | {n} |");
    }
    let _ = writeln!(md, "| S3 restarts | {} |", r.restarts);
    let _ = writeln!(md, "| objects named by events (distinct) | {} |", r.named);
    let _ = writeln!(md, "| objects events said were not kept | {} |", r.not_kept);
    let _ = writeln!(md, "| keys in the bucket | {} |", r.bucket_keys);
    let _ = writeln!(
        md,
        "| named objects missing from the bucket | {} |",
        r.missing.len()
    );
    let _ = writeln!(
        md,
        "| RSS after 1 min / peak / end | {:.1} / {:.1} / {:.1} MiB ({}) |",
        mib(start),
        mib(peak),
        mib(end),
        if r.rss_flat() { "flat" } else { "grew" }
    );
    let _ = writeln!(md, "| agent exit on SIGTERM | {} |", r.exit);
    let _ = writeln!(md, "\n## Counters of lost data (all must be 0)\n");
    let _ = writeln!(md, "| series | value |\n| --- | --- |");
    for (series, v) in &r.losses {
        let _ = writeln!(md, "| `{series}` | {v} |");
    }
    let _ = writeln!(md, "\n## Object store\n");
    let _ = writeln!(md, "| series | value |\n| --- | --- |");
    for (series, v) in &r.store {
        let _ = writeln!(md, "| `{series}` | {v} |");
    }
    let _ = writeln!(md, "\n## RSS by minute\n");
    let _ = writeln!(md, "| minute | RSS MiB |\n| --- | --- |");
    let mut minute = None;
    for s in &r.rss {
        let m = s.at.as_secs() / 60;
        if minute != Some(m) {
            minute = Some(m);
            let _ = writeln!(md, "| {m} | {:.1} |", mib(s.kib));
        }
    }
    if let Some(last) = r.rss.last() {
        let _ = writeln!(md, "| end | {:.1} |", mib(last.kib));
    }
    if !r.missing.is_empty() {
        let _ = writeln!(md, "\n## Missing objects (first 20)\n");
        for d in r.missing.iter().take(20) {
            let _ = writeln!(md, "- `{d}`");
        }
    }
    md
}
