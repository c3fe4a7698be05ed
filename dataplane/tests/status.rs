//! The status server of a running agent: `/metrics` scraped during capture
//! parses with the reference Prometheus parser, counts exactly the requests
//! made, has every metric docs/metrics.md lists (and nothing it does not), and
//! keeps its series count fixed however many paths and ports the traffic uses;
//! `/readyz` waits for the S3 store to reach its endpoint; `/healthz` is ok.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Client, get, http_server, parse_metrics, samples, start_agent, venv_python, wait_get,
};
use serde_json::Value;

/// Metric names listed in docs/metrics.md (the first column of its tables).
fn documented() -> BTreeSet<String> {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .unwrap();
    docs.lines()
        .filter_map(|l| l.strip_prefix("| `tapwire_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("tapwire_{name}"))
        .collect()
}

/// Label names a series may carry: each takes values from a fixed set.
const BOUNDED_LABELS: [&str; 14] = [
    "reason",
    "map",
    "cpu",
    "shard",
    "kind",
    "store",
    "result",
    "method",
    "status_class",
    "protocol",
    "direction",
    "le",
    "version",
    "commit",
];

fn agent_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("qpoint.yaml");
    std::fs::write(
        &path,
        "version: 2\nservices:\n  event_stores:\n    - id: console\n      type: stdout\n  \
         object_stores: []\n",
    )
    .unwrap();
    path
}

/// The value of `tapwire_http_requests_total` for GET 2xx HTTP/1 egress, and
/// the sum over every label set.
fn requests(families: &[Value]) -> (f64, f64) {
    let all: Vec<Value> = samples(families)
        .into_iter()
        .filter(|s| s["name"] == "tapwire_http_requests_total")
        .collect();
    let get = all
        .iter()
        .find(|s| {
            s["labels"]
                == serde_json::json!({"method": "GET", "status_class": "2xx", "protocol": "http1", "direction": "egress"})
        })
        .map_or(0.0, |s| s["value"].as_f64().unwrap());
    let sum = all.iter().map(|s| s["value"].as_f64().unwrap()).sum();
    (get, sum)
}

/// Sum of every sample named `name`.
fn total(families: &[Value], name: &str) -> f64 {
    samples(families)
        .iter()
        .filter(|s| s["name"] == name)
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// Scrapes until the request counter and the shards' published transaction
/// counter reach `n` (the agent publishes once a second); returns the parsed
/// families.
fn scrape_until(python: &std::path::PathBuf, port: u16, n: f64) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let (code, text) = get(port, "/metrics");
        assert_eq!(code, 200, "{text}");
        let families = parse_metrics(python, &text);
        let (_, sum) = requests(&families);
        let published = total(&families, "tapwire_shard_transactions_total");
        if (sum >= n && published >= n) || start.elapsed() > Duration::from_secs(30) {
            return families;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn metrics_count_requests_exactly_with_bounded_labels() {
    if !common::can_run("metrics_count_requests_exactly_with_bounded_labels") {
        return;
    }
    let Some(python) = venv_python() else {
        return;
    };
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path());
    let server_port = common::free_port();
    let _server = http_server(server_port);
    let mut client = Client::start(server_port);
    let status_port = common::free_port();
    let agent = start_agent(Some(&config), client.pid(), status_port);
    assert_eq!(get(status_port, "/healthz"), (200, "ok\n".to_owned()));
    wait_get(status_port, "/readyz", Duration::from_secs(10), |c, _| {
        c == 200
    });

    assert_eq!(client.requests(10), 10);
    let early = scrape_until(&python, status_port, 10.0);
    assert_eq!(requests(&early), (10.0, 10.0));
    let early_series = samples(&early).len();

    assert_eq!(client.requests(990), 1000);
    let families = scrape_until(&python, status_port, 1000.0);
    assert_eq!(
        requests(&families),
        (1000.0, 1000.0),
        "one GET 2xx egress request counted per request made"
    );
    let events = agent
        .lines()
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .count();
    assert_eq!(events, 1000, "one event per request too");

    // 1,000 paths and 1,000 local ports later, not one series more.
    let all = samples(&families);
    assert_eq!(
        all.len(),
        early_series,
        "series count grew with traffic: {:?}",
        all.iter().map(|s| &s["name"]).collect::<Vec<_>>()
    );
    for sample in &all {
        for (label, value) in sample["labels"].as_object().unwrap() {
            assert!(
                BOUNDED_LABELS.contains(&label.as_str()),
                "unbounded label `{label}` in {sample}"
            );
            let value = value.as_str().unwrap();
            assert!(
                !value.contains("/item") && !value.contains(&server_port.to_string()),
                "a path or port leaked into a label: {sample}"
            );
        }
    }

    // Every documented metric is there, and nothing undocumented.
    let names: BTreeSet<String> = families
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .chain(all.iter().map(|s| s["name"].as_str().unwrap().to_owned()))
        .collect();
    let documented = documented();
    assert!(documented.len() >= 30, "docs list {documented:?}");
    let missing: Vec<&String> = documented.difference(&names).collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );
    for family in &families {
        let name = family["name"].as_str().unwrap();
        let listed = documented.contains(name) || documented.contains(&format!("{name}_total"));
        assert!(listed, "exported but not in docs/metrics.md: {name}");
    }
    let kernel: BTreeSet<&str> = all
        .iter()
        .filter(|s| s["name"] == "tapwire_kernel_drops_total")
        .map(|s| s["labels"]["reason"].as_str().unwrap())
        .collect();
    assert!(kernel.contains("ring_full") && kernel.contains("lost_bytes"));
    // Every TLS library kind has its series; the system's `libssl.so`, and
    // NSS's `libnspr4.so` and `libssl3.so`, are probed at start.
    let probed: std::collections::BTreeMap<&str, f64> = all
        .iter()
        .filter(|s| s["name"] == "tapwire_tls_files_probed")
        .map(|s| {
            (
                s["labels"]["kind"].as_str().unwrap(),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        probed.keys().copied().collect::<Vec<_>>(),
        ["gnutls", "go", "nss", "openssl"]
    );
    assert!(
        probed["openssl"] >= 1.0 && probed["nss"] >= 2.0,
        "{probed:?}"
    );
    // TLS calls are probed with uprobe sessions on a kernel that has them.
    let sessions = all
        .iter()
        .find(|s| s["name"] == "tapwire_tls_uprobe_sessions")
        .expect("tapwire_tls_uprobe_sessions exported");
    assert_eq!(
        sessions["value"].as_f64(),
        Some(if common::kernel_has_uprobe_sessions() {
            1.0
        } else {
            0.0
        }),
        "{sessions}"
    );
    drop(agent);
}

#[test]
fn readyz_waits_until_the_s3_store_reaches_its_endpoint() {
    if !common::can_run("readyz_waits_until_the_s3_store_reaches_its_endpoint") {
        return;
    }
    let Some(mut weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket("ready");
    weed.stop();
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let store = weed.store_yaml("s3_store", "ready", &dir.path().join("spool"), "warn");
    let indented: String = store.lines().map(|l| format!("      {l}\n")).collect();
    let config = dir.path().join("qpoint.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 2\nservices:\n  event_stores:\n    - id: console\n      type: stdout\n  \
             object_stores:\n    -\n{indented}"
        ),
    )
    .unwrap();
    let server_port = common::free_port();
    let _server = http_server(server_port);
    let mut client = Client::start(server_port);
    let status_port = common::free_port();
    let _agent = start_agent(Some(&config), client.pid(), status_port);
    // Probes are attached; only the store holds readiness back.
    assert_eq!(
        get(status_port, "/readyz"),
        (
            503,
            "object store `s3_store` has not reached its destination yet\n".to_owned()
        )
    );
    assert_eq!(get(status_port, "/healthz").0, 200);
    client.requests(1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(status_port, "/readyz").0, 503, "S3 is still down");

    weed.restart();
    let (_, body) = wait_get(status_port, "/readyz", Duration::from_secs(30), |c, _| {
        c == 200
    });
    assert_eq!(body, "ready\n");
    let keys = common::block_on(weed.client("ready").list_keys()).unwrap();
    assert!(
        !keys.is_empty(),
        "ready only once the spooled objects reached S3"
    );
}
