//! Config reload on a capturing agent with a real S3 store (SeaweedFS): SIGHUP
//! with a changed bucket sends objects captured before to the old bucket and
//! after to the new one, none lost (an object seen before is stored again in
//! the new bucket); a broken file keeps the old config capturing, logs
//! `FILE:LINE:COL` and counts a failed reload; `tapwire reload-config` reports
//! the same through the status server.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Agent;
use common::{Client, get, http_server, start_agent};
use serde_json::Value;

fn config(weed: &common::Weed, bucket: &str, spool: &Path) -> String {
    let store = weed.store_yaml("s3_store", bucket, spool, "fatal");
    let indented: String = store.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "version: 2\nservices:\n  event_stores:\n    - id: console\n      type: stdout\n  \
         object_stores:\n    -\n{indented}"
    )
}

/// Digests of the objects named by transaction events for `paths`.
fn digests(agent: &Agent, paths: std::ops::Range<usize>) -> BTreeSet<String> {
    let wanted: Vec<String> = paths.map(|i| format!("/item/{i}")).collect();
    let start = Instant::now();
    loop {
        let lines = agent.lines();
        let txns: Vec<&Value> = lines
            .iter()
            .filter(|v| {
                v["type"] == "http_transaction" && wanted.iter().any(|p| v["path"] == p.as_str())
            })
            .collect();
        if txns.len() == wanted.len() {
            return txns
                .iter()
                .flat_map(|t| t["objects"].as_array().unwrap())
                .map(|o| o["digest"].as_str().unwrap().to_owned())
                .collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {} transactions seen",
            txns.len(),
            wanted.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every digest in `want` is a key of `bucket`; returns its keys.
fn wait_in_bucket(weed: &common::Weed, bucket: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
    let start = Instant::now();
    loop {
        let keys: BTreeSet<String> = common::block_on(weed.client(bucket).list_keys())
            .unwrap()
            .into_iter()
            .collect();
        if want.is_subset(&keys) {
            return keys;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "missing in `{bucket}`: {:?}",
            want.difference(&keys).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sighup(agent: &Agent) {
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
}

fn wait_stderr(agent: &Agent, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Some(line) = agent.stderr.lock().unwrap().iter().find(|l| pred(l)) {
            return line.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {what} in the agent's stderr"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_moves_new_objects_to_the_new_bucket_and_a_broken_file_changes_nothing() {
    if !common::can_run(
        "sighup_moves_new_objects_to_the_new_bucket_and_a_broken_file_changes_nothing",
    ) {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket("before");
    weed.create_bucket("after");
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let path = dir.path().join("qpoint.yaml");
    std::fs::write(&path, config(&weed, "before", &spool)).unwrap();

    let server_port = common::free_port();
    let _server = http_server(server_port);
    let mut client = Client::start(server_port);
    let status_port = common::free_port();
    let agent = start_agent(Some(&path), client.pid(), status_port);

    client.requests(5);
    let before = digests(&agent, 0..5);
    std::fs::write(&path, config(&weed, "after", &spool)).unwrap();
    sighup(&agent);
    wait_stderr(&agent, "reload outcome", |l| l.contains("config reloaded"));
    client.requests(5);
    let after = digests(&agent, 5..10);

    let old_keys = wait_in_bucket(&weed, "before", &before);
    let new_keys = wait_in_bucket(&weed, "after", &after);
    // The response body `ok\n` was uploaded before the reload and again after it.
    let ok = blake3::hash(b"ok\n").to_hex().to_string();
    assert!(before.contains(&ok) && after.contains(&ok));
    assert!(
        old_keys.is_disjoint(&after.difference(&before).cloned().collect()),
        "objects captured after the reload went to the old bucket"
    );
    assert!(
        new_keys.is_disjoint(&before.difference(&after).cloned().collect()),
        "objects captured before the reload went to the new bucket"
    );
    let lines = agent.lines();
    let url_of = |path: &str| {
        lines
            .iter()
            .find(|v| v["type"] == "http_transaction" && v["path"] == path)
            .and_then(|t| t["objects"][0]["url"].as_str().map(str::to_owned))
            .unwrap()
    };
    assert!(
        url_of("/item/0").contains("/before/"),
        "{}",
        url_of("/item/0")
    );
    assert!(
        url_of("/item/9").contains("/after/"),
        "{}",
        url_of("/item/9")
    );

    // A broken file: the old config keeps running, the error is located.
    let good = std::fs::read_to_string(&path).unwrap();
    let broken = good.replace("      type: s3\n", "      type: s3\n      colour: red\n");
    assert_ne!(broken, good);
    std::fs::write(&path, &broken).unwrap();
    sighup(&agent);
    let refused = wait_stderr(&agent, "refused reload", |l| l.contains("reload refused"));
    let located = format!("{}:", path.display());
    let at = refused
        .find(&located)
        .unwrap_or_else(|| panic!("no location in {refused}"));
    let rest = &refused[at + located.len()..];
    let mut numbers = rest.split(':').take(2).map(|n| n.parse::<u32>());
    assert!(
        matches!((numbers.next(), numbers.next()), (Some(Ok(_)), Some(Ok(_)))),
        "no LINE:COL after the file in {refused}"
    );
    assert!(refused.contains("unknown field `colour`"), "{refused}");
    client.requests(3);
    let still = digests(&agent, 10..13);
    wait_in_bucket(&weed, "after", &still);

    // `tapwire reload-config` says the same and fails.
    let out = Command::new(env!("CARGO_BIN_EXE_tapwire"))
        .args(["reload-config", "--httpd-listen"])
        .arg(format!("127.0.0.1:{status_port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&located) && stderr.contains("colour"),
        "{stderr}"
    );
    std::fs::write(&path, &good).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tapwire"))
        .args(["reload-config", "--httpd-listen"])
        .arg(format!("127.0.0.1:{status_port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "config reloaded: stores unchanged\n"
    );

    std::thread::sleep(Duration::from_millis(1500));
    let (_, metrics) = get(status_port, "/metrics");
    for line in [
        "tapwire_reloads_total{result=\"ok\"} 2",
        "tapwire_reloads_total{result=\"failed\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    drop(agent);
}
