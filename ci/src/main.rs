//! `cargo xtask`: the two commands a new user runs, and the developer loops.
//!
//! - `cargo xtask run [-- ARGS]`: set up what is missing, build, start the agent.
//! - `cargo xtask test`: set up test dependencies, run fmt, clippy, the deploy
//!   linters, the release tarball check, every test and the fuzz smoke run.
//! - `cargo xtask fuzz --seconds N`: run every fuzz target for N seconds.
//! - `cargo xtask bench [--quick] [-- BENCH ARGS]`: the overhead and capacity
//!   benchmarks.
//!   `cargo xtask bench --soak MINUTES`: the soak alone.
//! - `cargo xtask dist`: the release tarball and its SHA-256 in `target/dist/`.

mod dist;
mod lint;
mod setup;
mod sh;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "tapwire's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing, build the agent (release) and run it. Arguments after
    /// `--` go to `tapwire` (e.g. `-- --config qpoint.yaml`, `-- --pid 1234`).
    Run {
        /// Arguments for `tapwire`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install test dependencies, then run fmt, clippy, all tests and fuzz smoke.
    Test {
        /// Seconds per fuzz target in the smoke run (0 skips fuzzing).
        #[arg(long, default_value_t = 30)]
        fuzz_seconds: u64,
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Run every fuzz target in `fuzz/` for a while.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Overhead and capacity benchmarks; results into `perf/results/` (needs root).
    Bench {
        /// Fewer, shorter rounds (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Run only the soak, for this many minutes (not part of `test`).
        #[arg(long, value_name = "MINUTES")]
        soak: Option<u64>,
        /// A note for the soak's result file.
        #[arg(long, requires = "soak")]
        note: Option<String>,
        /// Passed on to the bench binary after `--` (e.g. `-- --workloads
        /// go-https-1k --only tapwire`; see `bench --help`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the release tarball (binary, example configs, systemd unit, help
    /// text) and its SHA-256 into `target/dist/`, then check that the packed
    /// binary starts from an empty directory.
    Dist,
    /// Lint the Dockerfile (hadolint), the Kubernetes manifest, the Helm chart
    /// and the example configs (yamllint); tools from `.venv`.
    Lint,
    /// Only install what is missing (`--test` adds the test dependencies).
    Setup {
        /// Also install test dependencies.
        #[arg(long)]
        test: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).context("cd to the workspace root")?;
    match cli.task {
        Task::Setup { test } => setup::ensure(&root, test),
        Task::Run { args } => run(&root, &args),
        Task::Test {
            fuzz_seconds,
            no_lint,
        } => test(&root, fuzz_seconds, no_lint),
        Task::Fuzz { seconds } => fuzz(&root, seconds),
        Task::Bench {
            quick,
            soak,
            note,
            args,
        } => bench(&root, quick, soak, note, &args),
        Task::Lint => {
            setup::ensure(&root, true)?;
            lint::deploy(&root)
        }
        Task::Dist => {
            setup::ensure(&root, false)?;
            let tarball = dist::build(&root)?;
            dist::check(&tarball)
        }
    }
}

fn workspace_root() -> PathBuf {
    let ci = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ci.parent()
        .expect("ci/ sits in the workspace root")
        .to_path_buf()
}

fn run(root: &std::path::Path, args: &[String]) -> Result<()> {
    setup::ensure(root, false)?;
    sh::cargo(&["build", "--release", "--package", "tapwire"])?;
    let bin = root.join("target/release/tapwire");
    eprintln!("xtask: starting {} {}", bin.display(), args.join(" "));
    let mut cmd = if setup::is_root() {
        std::process::Command::new(&bin)
    } else {
        eprintln!("xtask: tapwire loads eBPF programs and needs root; using sudo");
        let mut c = std::process::Command::new("sudo");
        c.arg("--preserve-env").arg(&bin);
        c
    };
    use std::os::unix::process::CommandExt;
    let err = cmd.args(args).exec();
    Err(err).context("start tapwire")
}

fn bench(
    root: &std::path::Path,
    quick: bool,
    soak: Option<u64>,
    note: Option<String>,
    extra: &[String],
) -> Result<()> {
    setup::ensure_bench(root)?;
    sh::cargo(&["build", "--release", "--package", "tapwire"])?;
    let mut args = vec![
        "run",
        "--release",
        "--package",
        "tapwire-perf",
        "--bin",
        "bench",
        "--",
    ];
    if quick {
        args.push("--quick");
    }
    let minutes = soak.map(|m| m.to_string());
    if let Some(m) = &minutes {
        args.extend(["--soak", m]);
    }
    if let Some(n) = &note {
        args.extend(["--note", n]);
    }
    args.extend(extra.iter().map(String::as_str));
    sh::cargo(&args)
}

fn test(root: &std::path::Path, fuzz_seconds: u64, no_lint: bool) -> Result<()> {
    setup::ensure(root, true)?;
    if !no_lint {
        sh::cargo(&["fmt", "--all", "--check"])?;
        sh::cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
        lint::deploy(root)?;
    }
    let tarball = dist::build(root)?;
    dist::check(&tarball)?;
    sh::cargo(&["test", "--no-fail-fast"])?;
    // The test that needs the fault switch, in a build that has it.
    sh::cargo(&[
        "test",
        "--package",
        "tapwire",
        "--features",
        "fault-injection",
        "--test",
        "status_fault",
    ])?;
    if fuzz_seconds > 0 {
        fuzz(root, fuzz_seconds)?;
    }
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// libFuzzer's `-max_len` for every target: above the largest limit a parser
/// enforces (HTTP/2's 256 KiB header block, HTTP/1's 64 KiB head, the 16 KiB
/// record payload), so the fuzzer can reach the "too large" paths; libFuzzer's
/// default (4 KiB, or the largest corpus file) would stop short of them.
const FUZZ_MAX_LEN: usize = 512 * 1024;

fn fuzz(root: &std::path::Path, seconds: u64) -> Result<()> {
    let targets_dir = root.join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = match std::fs::read_dir(&targets_dir) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".rs")
                    .map(str::to_owned)
            })
            .collect(),
        Err(_) => {
            eprintln!("xtask: no fuzz targets in {}", targets_dir.display());
            return Ok(());
        }
    };
    targets.sort();
    setup::ensure_cargo_fuzz()?;
    let fuzz_dir = root.join("fuzz");
    sh::run_in(&fuzz_dir, "cargo", &["+nightly", "fuzz", "build", "-O"])?;
    for target in &targets {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let max_time = format!("-max_total_time={seconds}");
        let max_len = format!("-max_len={FUZZ_MAX_LEN}");
        sh::run_in(
            &fuzz_dir,
            "cargo",
            &[
                "+nightly",
                "fuzz",
                "run",
                "-O",
                target,
                "--",
                &max_time,
                &max_len,
                "-print_final_stats=1",
            ],
        )
        .with_context(|| {
            format!("fuzz target `{target}` found a crash (see fuzz/artifacts/{target}/)")
        })?;
    }
    Ok(())
}
