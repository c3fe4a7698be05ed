//! The rounds: every configuration in turn, each under every workload, with CPU
//! time sampled around each wrk run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::gotls::{self, GoServer, ProbeCost};
use super::nginx::Nginx;
use super::procfs;
use super::tracer::{Config, Env, Totals, Tracer};
use super::wrk::{Launcher, WrkResult};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rounds (each runs every configuration).
    pub rounds: u32,
    /// Seconds per wrk run.
    pub secs: u32,
    /// Seconds of the unrecorded warm-up run per workload.
    pub warmup_secs: u32,
    /// The tapwire binary.
    pub tapwire: PathBuf,
    /// Only these configurations (all when empty).
    pub only: Vec<Config>,
    /// Only these workloads (all when empty).
    pub workloads: Vec<Workload>,
    /// After the rounds, profile tapwire with `perf` under the HTTPS 1 KiB load.
    pub profile: bool,
}

/// One load pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// HTTPS, 1 KiB responses.
    Https1K,
    /// HTTPS, 64 KiB responses.
    Https64K,
    /// Plain HTTP, 1 KiB responses (syscall path).
    Http1K,
    /// Plain HTTP, 64 KiB responses (syscall path).
    Http64K,
    /// HTTPS, 1 KiB responses, from the Go server (Go's `crypto/tls`).
    GoHttps1K,
    /// HTTPS, 1 KiB responses, each body distinct (nginx writes its request
    /// id into it), so no two objects share a digest.
    HttpsDistinct1K,
    /// HTTPS, 64 KiB responses, each body distinct.
    HttpsDistinct64K,
}

impl Workload {
    /// Every workload, in run order.
    pub const ALL: [Workload; 7] = [
        Workload::Https1K,
        Workload::Https64K,
        Workload::Http1K,
        Workload::Http64K,
        Workload::GoHttps1K,
        Workload::HttpsDistinct1K,
        Workload::HttpsDistinct64K,
    ];

    /// Name on the command line (`--workloads`).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Https1K => "https-1k",
            Workload::Https64K => "https-64k",
            Workload::Http1K => "http-1k",
            Workload::Http64K => "http-64k",
            Workload::GoHttps1K => "go-https-1k",
            Workload::HttpsDistinct1K => "https-distinct-1k",
            Workload::HttpsDistinct64K => "https-distinct-64k",
        }
    }

    /// The workload named `name` on the command line.
    pub fn named(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Column label.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Https1K => "HTTPS 1 KiB",
            Workload::Https64K => "HTTPS 64 KiB",
            Workload::Http1K => "HTTP 1 KiB",
            Workload::Http64K => "HTTP 64 KiB",
            Workload::GoHttps1K => "Go HTTPS 1 KiB",
            Workload::HttpsDistinct1K => "HTTPS 1 KiB, distinct bodies",
            Workload::HttpsDistinct64K => "HTTPS 64 KiB, distinct bodies",
        }
    }

    /// Whether every response body differs from every other.
    pub fn distinct(self) -> bool {
        matches!(self, Workload::HttpsDistinct1K | Workload::HttpsDistinct64K)
    }

    /// Whether it is TLS.
    pub fn tls(self) -> bool {
        matches!(
            self,
            Workload::Https1K
                | Workload::Https64K
                | Workload::GoHttps1K
                | Workload::HttpsDistinct1K
                | Workload::HttpsDistinct64K
        )
    }

    /// Its URL, `None` when its server is not running.
    fn url(self, servers: &Servers) -> Option<String> {
        let nginx = &servers.nginx;
        let file = match self {
            Workload::Https1K | Workload::Http1K => super::nginx::FILES[0].0,
            Workload::Https64K | Workload::Http64K => super::nginx::FILES[1].0,
            Workload::HttpsDistinct1K => super::nginx::DISTINCT_FILES[0],
            Workload::HttpsDistinct64K => super::nginx::DISTINCT_FILES[1],
            Workload::GoHttps1K => return servers.go.as_ref().map(GoServer::url),
        };
        Some(if self.tls() {
            format!("https://127.0.0.1:{}/{file}", nginx.https_port)
        } else {
            format!("http://127.0.0.1:{}/{file}", nginx.http_port)
        })
    }

    /// Pids whose CPU is the server's.
    fn server_pids(self, servers: &Servers) -> Vec<u32> {
        match (self, &servers.go) {
            (Workload::GoHttps1K, Some(go)) => vec![go.pid()],
            _ => servers.nginx.pids(),
        }
    }
}

/// The traced servers: nginx, and the Go server when Go is installed.
struct Servers {
    nginx: Nginx,
    go: Option<GoServer>,
}

/// One wrk run under one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Round number.
    pub round: u32,
    /// Configuration.
    pub config: Config,
    /// Workload.
    pub workload: Workload,
    /// What wrk saw.
    pub wrk: WrkResult,
    /// The server's CPU during the run (nginx master + worker, or the Go
    /// server), ticks.
    pub server_ticks: u64,
    /// The tracer's CPU during the run, ticks.
    pub tracer_ticks: u64,
    /// The whole machine's busy CPU during the run, ticks.
    pub machine_ticks: u64,
}

/// One tracer instance (a configuration in one round).
#[derive(Debug, Clone)]
pub struct TracerRun {
    /// Round number.
    pub round: u32,
    /// Configuration.
    pub config: Config,
    /// Requests wrk completed while it ran.
    pub requests: u64,
    /// Its totals.
    pub totals: Totals,
}

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// Every wrk run.
    pub samples: Vec<Sample>,
    /// Every tracer instance.
    pub tracers: Vec<TracerRun>,
    /// Configurations that could not run, with why.
    pub unavailable: BTreeMap<Config, String>,
    /// tapwire's TLS attach points, as it logged them.
    pub tapwire_points: Vec<(PathBuf, u64)>,
    /// Whether tapwire said it was capturing.
    pub tapwire_capturing: bool,
    /// `perf report` of tapwire under load (or why there is none), per
    /// configuration and workload profiled: the default config and the S3
    /// store at HTTPS 1 KiB, and the S3 store with distinct bodies.
    pub profiles: Vec<(Config, Workload, String)>,
    /// Why the Go server workload did not run.
    pub go_unavailable: Option<String>,
    /// The Go server's pid (its probes are on `/proc/PID/exe`).
    pub go_server_pid: Option<u32>,
    /// Cost of tapwire's Go probes, or why it was not measured.
    pub go_probe_cost: Option<Result<ProbeCost, String>>,
    /// Seconds per wrk run.
    pub secs: u32,
    /// Rounds run.
    pub rounds: u32,
}

/// Runs the plan.
pub fn run(plan: &Plan, bcc_headers: Result<&Path, &str>) -> Result<Results> {
    let tmp = tempfile::Builder::new()
        .prefix("tapwire-bench-")
        .tempdir()
        .context("create a scratch directory")?;
    let dir = tmp.path();
    let nginx = Nginx::start(&dir.join("nginx")).context("start nginx")?;
    let mut launcher = Launcher::start()?;
    let wrk_out = dir.join("wrk.out");
    let wanted = |c: Config| plan.only.is_empty() || plan.only.contains(&c);
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| plan.workloads.is_empty() || plan.workloads.contains(w))
        .collect();
    let mut results = Results {
        secs: plan.secs,
        rounds: plan.rounds,
        ..Results::default()
    };
    let go_bin = gotls::build(dir);
    let go = go_bin
        .as_ref()
        .map_err(|e| format!("{e:#}"))
        .and_then(|bin| {
            let (cert, key) = (dir.join("nginx/cert.pem"), dir.join("nginx/key.pem"));
            GoServer::start(bin, &cert, &key).map_err(|e| format!("{e:#}"))
        });
    let servers = Servers {
        nginx,
        go: match go {
            Ok(go) => Some(go),
            Err(why) => {
                eprintln!("bench: no Go server: {why}");
                results.go_unavailable = Some(why);
                None
            }
        },
    };
    let nginx = &servers.nginx;
    let mut pids = vec![nginx.master(), launcher.pid()];
    results.go_server_pid = servers.go.as_ref().map(GoServer::pid);
    pids.extend(results.go_server_pid);
    eprintln!(
        "bench: nginx on :{} (https) :{} (http), worker {}, {}",
        nginx.https_port,
        nginx.http_port,
        nginx.worker,
        nginx.libssl.display()
    );
    for &workload in &workloads {
        if let Some(url) = workload.url(&servers) {
            launcher.run(&url, plan.warmup_secs, &wrk_out)?;
        }
    }

    let seaweed = if wanted(Config::TapwireS3) {
        match tapwire_testkit::weed_binary() {
            Ok(_) => tapwire_testkit::Weed::start(),
            Err(why) => {
                results
                    .unavailable
                    .insert(Config::TapwireS3, format!("no S3 server: {why}"));
                None
            }
        }
    } else {
        None
    };

    let s3_endpoint = seaweed.as_ref().map(|s| s.endpoint()).unwrap_or_default();
    let base_env = Env {
        dir,
        tapwire: &plan.tapwire,
        libssl: &nginx.libssl,
        pids: &pids,
        tapwire_points: None,
        bcc_headers,
        s3: None,
    };
    // tapwire's attach points, for the floor configuration and the report:
    // one short start whenever a tapwire configuration runs.
    if wanted(Config::BpftraceTapwirePoints)
        || Config::ALL.into_iter().any(|c| c.is_tapwire() && wanted(c))
    {
        match Tracer::start(Config::TapwireStdout, &base_env) {
            Ok(Some(t)) => {
                // Probes on processes come from the control thread; let it finish.
                std::thread::sleep(Duration::from_secs(1));
                results.tapwire_points = t.attach_points();
                results.tapwire_capturing = t.capturing();
                t.stop();
            }
            Ok(None) => {}
            Err(e) => eprintln!("bench: tapwire did not start: {e:#}"),
        }
    }
    let points = results.tapwire_points.clone();

    for round in 0..plan.rounds {
        for config in Config::ALL.into_iter().filter(|&c| wanted(c)) {
            if results.unavailable.contains_key(&config) {
                continue;
            }
            let bucket = format!("bench-{round}");
            let spool = dir.join(format!("spool-{round}"));
            let mut env = Env {
                tapwire_points: Some(&points),
                ..base_env
            };
            if config == Config::TapwireS3
                && let Some(s3) = &seaweed
            {
                s3.create_bucket(&bucket);
                std::fs::create_dir_all(&spool)?;
                env.s3 = Some((s3_endpoint.as_str(), &bucket, &spool));
            }
            eprintln!(
                "bench: round {}/{}: {}",
                round + 1,
                plan.rounds,
                config.label()
            );
            let tracer = match Tracer::start(config, &env) {
                Ok(t) => t,
                Err(e) => {
                    let why = format!("{e:#}");
                    eprintln!("bench:   {why}");
                    results.unavailable.insert(config, why);
                    continue;
                }
            };
            let mut requests = 0;
            for &workload in &workloads {
                if !config.covers(workload) || workload.url(&servers).is_none() {
                    continue;
                }
                let sample = measure(
                    &mut launcher,
                    &servers,
                    tracer.as_ref(),
                    (round, config, workload),
                    plan.secs,
                    &wrk_out,
                )?;
                // The tracer's peak so far: which workload of the round set it.
                let peak = tracer
                    .as_ref()
                    .and_then(|t| procfs::vm_hwm_kib(t.pid()))
                    .map_or_else(String::new, |k| {
                        format!("  peak RSS {:.1} MiB", k as f64 / 1024.0)
                    });
                eprintln!(
                    "bench:   {:<13} {:>9.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs{peak}",
                    workload.label(),
                    sample.wrk.rps,
                    sample.wrk.p50_us,
                    sample.wrk.p99_us
                );
                requests += sample.wrk.requests;
                results.samples.push(sample);
            }
            if let Some(tracer) = tracer {
                let mut totals = tracer.stop();
                if config == Config::TapwireS3
                    && let Some(s3) = &seaweed
                {
                    // Keys in the bucket, for the note (digests dedupe same bodies).
                    if let Ok(keys) = tapwire_testkit::block_on(s3.client(&bucket).list_keys()) {
                        let keys = keys.len();
                        totals.warnings.push(format!("bucket holds {keys} keys"));
                    }
                }
                results.tracers.push(TracerRun {
                    round,
                    config,
                    requests,
                    totals,
                });
            }
        }
    }
    if wanted(Config::TapwireStdout) {
        results.go_probe_cost = Some(match &go_bin {
            Ok(bin) => {
                eprintln!("bench: Go probe cost (gotls calls)");
                gotls::probe_cost(bin, &plan.tapwire).map_err(|e| format!("{e:#}"))
            }
            Err(e) => Err(format!("{e:#}")),
        });
    }
    // The S3 store is profiled under distinct bodies too when that workload
    // runs: there every object is uploaded, which deduplication hides.
    let mut profiled = vec![
        (Config::TapwireStdout, Workload::Https1K),
        (Config::TapwireS3, Workload::Https1K),
    ];
    if workloads.contains(&Workload::HttpsDistinct1K) {
        profiled.push((Config::TapwireS3, Workload::HttpsDistinct1K));
    }
    for (n, (config, workload)) in profiled.into_iter().enumerate() {
        if !plan.profile || !wanted(config) {
            continue;
        }
        let Some(url) = workload.url(&servers) else {
            continue;
        };
        let bucket = format!("bench-profile-{n}");
        let spool = dir.join(format!("spool-profile-{n}"));
        let mut env = Env {
            tapwire_points: Some(&points),
            ..base_env
        };
        if config == Config::TapwireS3
            && let Some(s3) = &seaweed
        {
            s3.create_bucket(&bucket);
            std::fs::create_dir_all(&spool)?;
            env.s3 = Some((s3_endpoint.as_str(), &bucket, &spool));
        }
        let report = match profile(
            &mut launcher,
            &url,
            workload,
            config,
            &env,
            plan.secs,
            &wrk_out,
        ) {
            Ok(report) => report,
            Err(e) => format!("no profile: {e:#}"),
        };
        results.profiles.push((config, workload, report));
    }
    Ok(results)
}

/// Samples of `perf record` per second.
const PROFILE_HZ: u32 = 499;
/// Lines of `perf report` kept.
const PROFILE_LINES: usize = 40;

/// tapwire (in `config`) under `workload` (at `url`) with `perf record` on
/// it; returns the top of `perf report` by symbol.
fn profile(
    launcher: &mut Launcher,
    url: &str,
    workload: Workload,
    config: Config,
    env: &Env<'_>,
    secs: u32,
    out: &Path,
) -> Result<String> {
    use std::process::{Command, Stdio};
    let stats_on = super::bpf_stats::StatsOn::new();
    let tracer = Tracer::start(config, env)?.context("tapwire did not start")?;
    let data = env.dir.join("perf.data");
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-q", "-g", "-F", &PROFILE_HZ.to_string(), "-p"])
        .arg(tracer.pid().to_string())
        .arg("-o")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut perf = super::process::Guard::spawn(
        "perf record",
        &mut cmd,
        libc::SIGINT,
        Duration::from_secs(30),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    perf.check_running()?;
    eprintln!(
        "bench: profiling {} under {}",
        config.label(),
        workload.label()
    );
    let before = super::bpf_stats::read(tracer.pid());
    let wrk = launcher.run(url, secs, out)?;
    let after = super::bpf_stats::read(tracer.pid());
    perf.stop();
    tracer.stop();
    let probes = match stats_on {
        Ok(on) => {
            drop(on);
            let ran = after
                .into_iter()
                .map(|(name, a)| {
                    let b = before.get(&name).copied().unwrap_or_default();
                    let ran = super::bpf_stats::ProgStats {
                        runs: a.runs.saturating_sub(b.runs),
                        run_ns: a.run_ns.saturating_sub(b.run_ns),
                    };
                    (name, ran)
                })
                .collect();
            super::bpf_stats::table(&ran, wrk.requests)
        }
        Err(e) => format!("no BPF statistics: {e}"),
    };
    let report = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-q", "-g", "none"])
        .args(["--sort", "comm,dso,symbol", "--percent-limit", "1", "-i"])
        .arg(&data)
        .output()
        .context("run perf report")?;
    let text = String::from_utf8_lossy(&report.stdout);
    // perf pads each line to the terminal width and appends empty columns (`-`).
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end().trim_end_matches([' ', '-']))
        .take(PROFILE_LINES)
        .collect();
    if lines.is_empty() {
        anyhow::bail!(
            "perf report is empty: {}",
            String::from_utf8_lossy(&report.stderr)
        );
    }
    Ok(format!(
        "{}\n\nProbe programs during the same run ({} requests), from the kernel's BPF \
         statistics: time spent inside nginx and wrk, not counted in tapwire's CPU\n\n{probes}",
        lines.join("\n"),
        wrk.requests
    ))
}

/// One wrk run with the CPU each party used during it.
fn measure(
    launcher: &mut Launcher,
    servers: &Servers,
    tracer: Option<&Tracer>,
    (round, config, workload): (u32, Config, Workload),
    secs: u32,
    out: &Path,
) -> Result<Sample> {
    let server_pids = workload.server_pids(servers);
    let url = workload.url(servers).context("the workload's server")?;
    let tracer_ticks = || tracer.map_or(0, Tracer::cpu_ticks);
    let (n0, t0, m0) = (
        procfs::sum_ticks(&server_pids),
        tracer_ticks(),
        procfs::machine_busy_ticks(),
    );
    let wrk = launcher.run(&url, secs, out)?;
    let (n1, t1, m1) = (
        procfs::sum_ticks(&server_pids),
        tracer_ticks(),
        procfs::machine_busy_ticks(),
    );
    Ok(Sample {
        round,
        config,
        workload,
        wrk,
        server_ticks: n1.saturating_sub(n0),
        tracer_ticks: t1.saturating_sub(t0),
        machine_ticks: m1.saturating_sub(m0),
    })
}
