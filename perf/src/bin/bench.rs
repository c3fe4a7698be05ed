//! `bench`: the overhead and capacity benchmarks, results into `perf/results/`.
//! Run through `cargo xtask bench [--quick]`, which installs the tools and builds
//! tapwire first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tapwire_perf::capacity::{self, CapacityPlan};
use tapwire_perf::footprint::{self, FootprintPlan};
use tapwire_perf::late_files::{self, LateFilesPlan};
use tapwire_perf::overhead::{self, Config, Plan, Workload, headers, procfs};
use tapwire_perf::report::{chart, machine::Machine, markdown::Report};
use tapwire_perf::soak::{self, SoakPlan};
use tapwire_perf::tls_calls::{self, TlsCallsPlan};

/// The agent's allocator, so that the capacity run (the agent's pipeline in
/// this process) allocates as the agent does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rounds of a full run (the issue asks for at least 5).
const ROUNDS: u32 = 6;
/// Seconds per wrk run in a full run.
const SECS: u32 = 10;
/// Rounds of a quick run.
const QUICK_ROUNDS: u32 = 1;
/// Seconds per wrk run in a quick run.
const QUICK_SECS: u32 = 2;
/// Seconds per capacity run (full, quick).
const CAPACITY_SECS: (f64, f64) = (3.0, 1.0);
/// Programs started for the late-files window (full, quick).
const LATE_FILES_RUNS: (usize, usize) = (100, 10);
/// Messages per `tls_calls` run (full, quick): about a second untraced here.
const TLS_CALLS_MESSAGES: (u32, u32) = (100_000, 20_000);
/// `tls_calls` runs per configuration (full, quick); the median is kept.
const TLS_CALLS_RUNS: (usize, usize) = (5, 3);
/// Seconds of the idle-agent window (full, quick).
const IDLE_SECS: (u64, u64) = (60, 5);
/// Uploads of the memory run: connections, POSTs per connection, body bytes
/// (full: the size; quick: scaled down).
const UPLOADS: ((usize, usize, usize), (usize, usize, usize)) =
    ((16, 64, 32 << 20), (16, 4, 8 << 20));
/// Response bodies of the capacity run, bytes.
const CAPACITY_BODIES: [usize; 2] = [1024, 64 * 1024];

/// tapwire's overhead beside other tracers, and the data plane's capacity.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Fewer, shorter rounds (under 3 minutes in all).
    #[arg(long)]
    quick: bool,
    /// Rounds (default 6, quick 1).
    #[arg(long)]
    rounds: Option<u32>,
    /// Seconds per wrk run (default 10, quick 2).
    #[arg(long)]
    secs: Option<u32>,
    /// The tapwire binary (default: target/release/tapwire).
    #[arg(long)]
    tapwire: Option<PathBuf>,
    /// SeaweedFS's `weed` (default: $TAPWIRE_WEED or .venv/bin/weed).
    #[arg(long)]
    weed: Option<PathBuf>,
    /// Where results go (default: perf/results).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these configurations: untraced, bpftrace-exported, bpftrace-points,
    /// sslsniff, tapwire, tapwire-events, tapwire-s3, tapwire-unselected
    /// (comma-separated; untraced always runs).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these workloads: https-1k, https-64k, http-1k, http-64k,
    /// go-https-1k, https-distinct-1k, https-distinct-64k (comma-separated;
    /// default all).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Skip the overhead benchmark.
    #[arg(long)]
    no_overhead: bool,
    /// Skip the `perf` profile of tapwire after the rounds.
    #[arg(long)]
    no_profile: bool,
    /// Skip the capacity benchmark.
    #[arg(long)]
    no_capacity: bool,
    /// Skip the late-files window benchmark.
    #[arg(long)]
    no_late_files: bool,
    /// Skip the per-TLS-call cost (selected and unselected process).
    #[arg(long)]
    no_tls_calls: bool,
    /// Skip the idle-agent and memory-under-uploads runs.
    #[arg(long)]
    no_footprint: bool,
    /// Run only the soak, for this many minutes: mixed HTTP/1.1, HTTP/2 and
    /// TLS traffic with the S3 server restarted every 5 minutes; writes
    /// `DATE-soak.md`.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<u64>,
    /// A note written into the soak's result (e.g. what else ran on the machine).
    #[arg(long)]
    note: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("perf/ has a parent")?
        .to_owned();
    let machine = Machine::detect();
    let tck = procfs::ticks_per_sec();
    let command = format!(
        "cargo xtask bench{}",
        std::env::args()
            .skip(1)
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );

    if let Some(weed) = &args.weed {
        // SAFETY: set before any thread that reads the environment starts.
        unsafe { std::env::set_var("TAPWIRE_WEED", weed) };
    }

    if let Some(minutes) = args.soak {
        return soak(&args, &root, &machine, &command, minutes);
    }

    let overhead = if args.no_overhead {
        None
    } else {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the overhead benchmark attaches uprobes: run as root (or pass --no-overhead)");
        }
        let mut only = Vec::new();
        for name in &args.only {
            only.extend(config_named(name)?);
        }
        if !only.is_empty() {
            only.extend([Config::Untraced, Config::UntracedEnd]);
        }
        let workloads = args
            .workloads
            .iter()
            .map(|name| Workload::named(name).with_context(|| format!("unknown workload `{name}`")))
            .collect::<Result<Vec<_>>>()?;
        let plan = Plan {
            rounds: args
                .rounds
                .unwrap_or(if args.quick { QUICK_ROUNDS } else { ROUNDS }),
            secs: args
                .secs
                .unwrap_or(if args.quick { QUICK_SECS } else { SECS }),
            warmup_secs: 1,
            tapwire: args
                .tapwire
                .clone()
                .unwrap_or_else(|| root.join("target/release/tapwire")),
            only,
            workloads,
            profile: !args.no_profile,
        };
        if !plan.tapwire.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p tapwire`",
                plan.tapwire.display()
            );
        }
        let scratch = tempfile::Builder::new()
            .prefix("tapwire-bench-headers-")
            .tempdir()?;
        let merged = headers::merged(scratch.path()).map_err(|e| format!("{e:#}"));
        let bcc = match &merged {
            Ok(p) => Ok(p.as_path()),
            Err(why) => Err(why.as_str()),
        };
        Some(overhead::run(&plan, bcc)?)
    };

    let capacity = if args.no_capacity {
        None
    } else {
        let lanes = (machine.cores / 2).max(1);
        let (full, quick) = CAPACITY_SECS;
        Some(capacity::run(&CapacityPlan {
            readers: lanes,
            shards: lanes,
            secs: if args.quick { quick } else { full },
            bodies: CAPACITY_BODIES.to_vec(),
            quick: args.quick,
        })?)
    };

    let tapwire = args
        .tapwire
        .clone()
        .unwrap_or_else(|| root.join("target/release/tapwire"));
    let tls_calls = (!args.no_tls_calls).then(|| {
        eprintln!("bench: per-TLS-call cost (tls_calls)");
        tls_calls::run(&TlsCallsPlan {
            tapwire: tapwire.clone(),
            messages: pick(args.quick, TLS_CALLS_MESSAGES),
            runs: pick(args.quick, TLS_CALLS_RUNS),
        })
        .map_err(|e| format!("{e:#}"))
    });
    let late_files = (!args.no_late_files).then(|| {
        eprintln!("bench: late-files window");
        late_files::run(&LateFilesPlan {
            tapwire: tapwire.clone(),
            runs: pick(args.quick, LATE_FILES_RUNS),
        })
        .map_err(|e| format!("{e:#}"))
    });
    for (what, err) in [
        (
            "per-TLS-call cost",
            tls_calls.as_ref().and_then(|r| r.as_ref().err()),
        ),
        (
            "late-files window",
            late_files.as_ref().and_then(|r| r.as_ref().err()),
        ),
    ] {
        if let Some(e) = err {
            eprintln!("bench: {what} not measured: {e}");
        }
    }

    let footprint = if args.no_footprint {
        None
    } else {
        Some(footprint::run(&FootprintPlan {
            tapwire: args
                .tapwire
                .clone()
                .unwrap_or_else(|| root.join("target/release/tapwire")),
            idle_secs: if args.quick { IDLE_SECS.1 } else { IDLE_SECS.0 },
            uploads: if args.quick { UPLOADS.1 } else { UPLOADS.0 },
        }))
    };

    let report = Report {
        machine: &machine,
        overhead: overhead.as_ref(),
        capacity: capacity.as_ref(),
        late_files: late_files.as_ref(),
        tls_calls: tls_calls.as_ref(),
        footprint: footprint.as_ref(),
        quick: args.quick,
        command: &command,
        tck,
    };
    let text = report.markdown();
    let out = args.out.unwrap_or_else(|| root.join("perf/results"));
    std::fs::create_dir_all(&out)?;
    let stem = format!("{}-{}", machine.date, machine.host);
    let md = out.join(format!("{stem}.md"));
    let png = out.join(format!("{stem}.png"));
    let mut text = text;
    if let Some(r) = &overhead {
        let title = format!(
            "tapwire vs other tracers: nginx+wrk HTTPS, ratio to untraced ({} {}, {} cores)",
            machine.date, machine.host, machine.cores
        );
        match chart::draw(&png, r, &title, tck) {
            Ok(()) => text.push_str(&format!(
                "![ratio chart]({})\n",
                png.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            )),
            Err(e) => eprintln!("bench: chart not drawn: {e:#}"),
        }
    }
    std::fs::write(&md, &text).with_context(|| format!("write {}", md.display()))?;
    println!("{text}");
    eprintln!("bench: wrote {}", md.display());
    Ok(())
}

/// S3 restarts during the soak: every 5 minutes, down for 10 s.
const SOAK_RESTART_EVERY: Duration = Duration::from_secs(5 * 60);
const SOAK_OUTAGE: Duration = Duration::from_secs(10);

fn soak(args: &Args, root: &Path, machine: &Machine, command: &str, minutes: u64) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the soak attaches probes: run as root");
    }
    let plan = SoakPlan {
        duration: Duration::from_secs(minutes * 60),
        tapwire: args
            .tapwire
            .clone()
            .unwrap_or_else(|| root.join("target/release/tapwire")),
        restart_every: SOAK_RESTART_EVERY,
        outage: SOAK_OUTAGE,
    };
    let result = soak::run(&plan)?;
    let host = format!(
        "{} ({}, {} cores, kernel {})",
        machine.host, machine.cpu, machine.cores, machine.kernel
    );
    let text = soak::markdown(&result, command, &host, args.note.as_deref());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("perf/results"));
    std::fs::create_dir_all(&out)?;
    let md = out.join(format!("{}-soak.md", machine.date));
    std::fs::write(&md, &text).with_context(|| format!("write {}", md.display()))?;
    println!("{text}");
    eprintln!("bench: wrote {}", md.display());
    if !result.passed() {
        bail!("the soak failed (see {})", md.display());
    }
    Ok(())
}

/// The full or the quick setting of a `(full, quick)` pair.
fn pick<T>(quick: bool, (full, short): (T, T)) -> T {
    if quick { short } else { full }
}

fn config_named(name: &str) -> Result<Vec<Config>> {
    Ok(match name {
        "untraced" => vec![],
        "bpftrace-exported" => vec![Config::BpftraceExported],
        "bpftrace-points" => vec![Config::BpftraceTapwirePoints],
        "sslsniff" => vec![Config::Sslsniff],
        "tapwire" => vec![Config::TapwireStdout],
        "tapwire-events" => vec![Config::TapwireEventsOnly],
        "tapwire-s3" => vec![Config::TapwireS3],
        "tapwire-unselected" => vec![Config::TapwireUnselected],
        _ => bail!("unknown configuration `{name}`"),
    })
}
