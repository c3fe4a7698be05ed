//! Starts one S3 object store from a YAML entry and puts generated objects into it:
//! the process the S3 tests kill, starve of its server and measure.
//!
//! ```text
//! tapwire-store-feeder STORE.yaml [--count N] [--size BYTES] [--seed S]
//!                                 [--interval-ms MS] [--wait-secs SECS]
//! ```
//!
//! `STORE.yaml` holds one `services.object_stores[]` entry (`type: s3`), exactly as
//! in `qpoint.yaml`. Object `i` is [`object_bytes`]`(seed, i, size)`. The feeder
//! prints `started recovered=R` once the store runs, `put N` when it has queued its
//! objects, waits up to `--wait-secs` (default 120) for every object (and every
//! recovered one) to be stored, prints the store's counters as one JSON line and
//! exits 0 when nothing is left pending, 1 otherwise, 2 when the store cannot start.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use tapwire_store::config::{ObjectStoreConfig, RawStore};
use tapwire_store::{Object, ObjectStore as _, S3Store};

/// How often the feeder looks at the store while waiting.
const WAIT_POLL: Duration = Duration::from_millis(50);
/// Time `shutdown` gets at exit.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Command-line settings.
struct Args {
    config: String,
    count: u64,
    size: usize,
    seed: u64,
    interval: Duration,
    wait: Duration,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        config: String::new(),
        count: 0,
        size: 1024,
        seed: 0,
        interval: Duration::ZERO,
        wait: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("`{name}` needs a value"));
        match arg.as_str() {
            "--count" => args.count = value("--count")?.parse().context("`--count`")?,
            "--size" => args.size = value("--size")?.parse().context("`--size`")?,
            "--seed" => args.seed = value("--seed")?.parse().context("`--seed`")?,
            "--interval-ms" => {
                args.interval = Duration::from_millis(
                    value("--interval-ms")?.parse().context("`--interval-ms`")?,
                )
            }
            "--wait-secs" => {
                args.wait =
                    Duration::from_secs(value("--wait-secs")?.parse().context("`--wait-secs`")?)
            }
            other if other.starts_with("--") => bail!("unknown option `{other}`"),
            other => args.config = other.to_owned(),
        }
    }
    if args.config.is_empty() {
        bail!(
            "usage: tapwire-store-feeder STORE.yaml [--count N] [--size BYTES] [--seed S] [--interval-ms MS] [--wait-secs SECS]"
        );
    }
    Ok(args)
}

/// Object `index` of run `seed`: a line naming both, then a byte pattern, `size`
/// bytes in all (at least the line). Distinct for distinct (seed, index).
pub fn object_bytes(seed: u64, index: u64, size: usize) -> Vec<u8> {
    let mut bytes = format!("feeder seed={seed} object={index}\n").into_bytes();
    let mut i = 0u64;
    while bytes.len() < size {
        bytes.push((i.wrapping_mul(31).wrapping_add(index) % 251) as u8);
        i += 1;
    }
    bytes
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let args = parse_args()?;
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read `{}`", args.config))?;
    let raw: RawStore = serde_yaml::from_str(&text).context("bad store entry")?;
    let cfg = match ObjectStoreConfig::from_raw(raw) {
        Ok(ObjectStoreConfig::S3(cfg)) => cfg,
        Ok(_) => bail!("the entry is not `type: s3`"),
        Err(e) => bail!("invalid store entry ({:?}): {e}", e.path),
    };
    let store = S3Store::start(&cfg)?;
    let mut out = std::io::stdout();
    writeln!(out, "started recovered={}", store.recovered())?;
    out.flush()?;
    for i in 0..args.count {
        let bytes = object_bytes(args.seed, i, args.size);
        store.put(Object::new("application/octet-stream", Bytes::from(bytes)));
        if !args.interval.is_zero() {
            std::thread::sleep(args.interval);
        }
    }
    writeln!(out, "put {}", args.count)?;
    out.flush()?;
    let until = Instant::now() + args.wait;
    while store.pending() > 0 && Instant::now() < until {
        std::thread::sleep(WAIT_POLL);
    }
    let pending = store.pending();
    let stats = store.stats();
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "accepted": stats.accepted,
            "stored": stats.stored,
            "deduplicated": stats.deduplicated,
            "dropped": stats.dropped,
            "errors": stats.errors,
            "multipart": stats.multipart,
            "bytes": stats.bytes,
            "recovered": store.recovered(),
            "pending": pending,
        })
    )?;
    out.flush()?;
    store.shutdown(SHUTDOWN_DEADLINE);
    Ok(if pending == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
