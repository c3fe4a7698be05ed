//! Nothing lost: an S3 outage and an agent crash, with the feeder binary as the
//! agent (a separate process, so it can be measured and killed).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Weed, block_on, feeder_object};
use tapwire_store::spool::header::header_len;

/// How long S3 stays down in the outage test.
const OUTAGE: Duration = Duration::from_secs(30);
/// Objects put during the outage.
const OUTAGE_OBJECTS: u64 = 500;
/// Size of each: 500 × 256 KiB = 125 MiB, far more than the RSS allowed below,
/// so holding them in memory would show.
const OUTAGE_OBJECT_BYTES: usize = 256 << 10;
/// The feeder's resident set may not exceed this at any sample during the outage.
const OUTAGE_RSS_LIMIT_KIB: u64 = 32 << 10;
/// How often RSS is sampled.
const RSS_SAMPLE: Duration = Duration::from_millis(250);
/// Objects spooled before the crash.
const CRASH_OBJECTS: u64 = 200;
/// Size of each.
const CRASH_OBJECT_BYTES: usize = 8 << 10;

fn feeder(config: &Path, args: &[&str], stderr: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut child = common::guard(
        Command::new(env!("CARGO_BIN_EXE_tapwire-store-feeder"))
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).expect("feeder stderr file")),
    )
    .spawn()
    .expect("run the feeder");
    let stdout = BufReader::new(child.stdout.take().expect("feeder stdout"));
    (child, stdout)
}

fn read_line(out: &mut BufReader<ChildStdout>, stderr: &Path) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read feeder stdout");
    assert!(
        !line.is_empty(),
        "the feeder closed its output early; its stderr:\n{}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
    line.trim_end().to_owned()
}

fn wait_exit(child: &mut Child, timeout: Duration, stderr: &Path) {
    let until = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the feeder") {
            assert!(
                status.success(),
                "feeder failed ({status}); its stderr:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
            return;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!(
                "feeder still running after {timeout:?}; its stderr:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn stats(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("stats line `{line}`: {e}"))
}

fn spool_files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

/// Bytes in the spool's segments.
fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn assert_bucket_holds(weed: &Weed, bucket: &str, seed: u64, count: u64, size: usize) {
    let client = weed.client(bucket);
    let expected: BTreeSet<String> = (0..count)
        .map(|i| {
            blake3::hash(&feeder_object(seed, i, size))
                .to_hex()
                .to_string()
        })
        .collect();
    let keys: BTreeSet<String> = block_on(client.list_keys())
        .unwrap_or_else(|e| panic!("list `{bucket}`: {e}"))
        .into_iter()
        .collect();
    let missing: Vec<&String> = expected.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "{} of {count} objects missing: {missing:?}",
        missing.len()
    );
    assert_eq!(keys.len() as u64, count, "no other keys in `{bucket}`");
    // Spot-check the bytes of every tenth object.
    for i in (0..count).step_by(10) {
        let bytes = feeder_object(seed, i, size);
        let key = blake3::hash(&bytes).to_hex().to_string();
        let got = block_on(client.get_object(&key)).unwrap_or_else(|e| panic!("GET {key}: {e}"));
        assert!(got[..] == bytes[..], "object {i} ({key}) differs");
    }
}

#[test]
fn s3_down_for_30_s_loses_nothing_and_memory_stays_bounded() {
    let Some(mut weed) = Weed::start() else {
        return;
    };
    weed.create_bucket("outage");
    let work = tempfile::tempdir().expect("work dir");
    let spool = work.path().join("spool");
    let config = work.path().join("store.yaml");
    let stderr = work.path().join("feeder.err");
    std::fs::write(
        &config,
        weed.store_yaml("outage-store", "outage", &spool, "fatal"),
    )
    .expect("write store.yaml");

    let count = OUTAGE_OBJECTS.to_string();
    let size = OUTAGE_OBJECT_BYTES.to_string();
    let (mut child, mut out) = feeder(
        &config,
        &[
            "--count",
            &count,
            "--size",
            &size,
            "--seed",
            "3",
            "--interval-ms",
            "30",
        ],
        &stderr,
    );
    assert_eq!(read_line(&mut out, &stderr), "started recovered=0");

    weed.stop();
    let down_at = Instant::now();
    let mut samples: Vec<u64> = Vec::new();
    while down_at.elapsed() < OUTAGE {
        if let Some(kib) = rss_kib(child.id()) {
            samples.push(kib);
        }
        std::thread::sleep(RSS_SAMPLE);
    }
    weed.restart();

    assert_eq!(
        read_line(&mut out, &stderr),
        format!("put {OUTAGE_OBJECTS}")
    );
    let line = read_line(&mut out, &stderr);
    wait_exit(&mut child, Duration::from_secs(120), &stderr);
    let stats = stats(&line);
    assert_eq!(stats["stored"], OUTAGE_OBJECTS, "{line}");
    assert_eq!(stats["dropped"], 0, "{line}");
    assert_eq!(stats["pending"], 0, "{line}");
    assert!(
        stats["errors"].as_u64() > Some(0),
        "the outage was noticed: {line}"
    );

    let peak = samples.iter().copied().max().expect("RSS samples");
    eprintln!("feeder RSS during the outage (KiB), peak {peak}: {samples:?}");
    assert!(
        peak < OUTAGE_RSS_LIMIT_KIB,
        "feeder RSS peaked at {peak} KiB during the outage (limit {OUTAGE_RSS_LIMIT_KIB} KiB, \
         data put {} KiB)",
        OUTAGE_OBJECTS * OUTAGE_OBJECT_BYTES as u64 / 1024
    );
    assert_bucket_holds(&weed, "outage", 3, OUTAGE_OBJECTS, OUTAGE_OBJECT_BYTES);
    assert_eq!(
        spool_files(&spool, ".seg"),
        0,
        "the spool is empty afterwards"
    );
}

#[test]
fn objects_spooled_before_sigkill_are_uploaded_by_the_next_start() {
    let Some(mut weed) = Weed::start() else {
        return;
    };
    weed.create_bucket("crash");
    weed.stop();
    let work = tempfile::tempdir().expect("work dir");
    let spool = work.path().join("spool");
    let config = work.path().join("store.yaml");
    let stderr = work.path().join("feeder.err");
    // S3 is down, so the first run must be allowed to start without it.
    std::fs::write(
        &config,
        weed.store_yaml("crash-store", "crash", &spool, "warn"),
    )
    .expect("write store.yaml");

    let count = CRASH_OBJECTS.to_string();
    let size = CRASH_OBJECT_BYTES.to_string();
    let (mut child, mut out) = feeder(
        &config,
        &[
            "--count",
            &count,
            "--size",
            &size,
            "--seed",
            "4",
            "--wait-secs",
            "600",
        ],
        &stderr,
    );
    assert_eq!(read_line(&mut out, &stderr), "started recovered=0");
    assert_eq!(read_line(&mut out, &stderr), format!("put {CRASH_OBJECTS}"));
    // Every object whole in the spool: its header and bytes.
    let spooled = CRASH_OBJECTS
        * (u64::from(header_len("application/octet-stream")) + CRASH_OBJECT_BYTES as u64);
    let until = Instant::now() + Duration::from_secs(30);
    while segment_bytes(&spool) < spooled {
        assert!(Instant::now() < until, "objects did not reach the spool");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL the feeder");
    let _ = child.wait();
    assert_eq!(segment_bytes(&spool), spooled);

    weed.restart();
    let stderr2 = work.path().join("feeder2.err");
    let (mut child, mut out) = feeder(&config, &["--wait-secs", "60"], &stderr2);
    assert_eq!(
        read_line(&mut out, &stderr2),
        format!("started recovered={CRASH_OBJECTS}")
    );
    assert_eq!(read_line(&mut out, &stderr2), "put 0");
    let line = read_line(&mut out, &stderr2);
    wait_exit(&mut child, Duration::from_secs(60), &stderr2);
    let stats = stats(&line);
    assert_eq!(stats["stored"], CRASH_OBJECTS, "{line}");
    assert_eq!(stats["pending"], 0, "{line}");
    assert_bucket_holds(&weed, "crash", 4, CRASH_OBJECTS, CRASH_OBJECT_BYTES);
    assert_eq!(
        spool_files(&spool, ".seg"),
        0,
        "the spool is empty afterwards"
    );
}
