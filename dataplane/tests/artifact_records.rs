//! `http_capture.object_store` and `artifact_record` events, with two S3
//! object stores on one SeaweedFS and a stdout object store: three stacks,
//! picked by `tap.endpoints`, each send their objects to one store. Each
//! bucket then holds exactly the digests of its stack's requests; every
//! `artifact_record` names a key present in its store's bucket (the listing
//! compared), links to its request event by `conn_id` and `request_id`, and
//! each request gets its own record for each of its objects, a deduplicated
//! one included.
//!
//! A reload keeps the stacks' stores: a store added ahead of them moves their
//! index, and one that removes a named store is refused; an object store's
//! `event_store: {disabled: true}` turns its records off.
//!
//! Clients are `curl` and Python's `http.client`, the server a thread of the
//! test on loopback; the agent captures this test's process tree (`--pid`)
//! on the client side only (`direction: egress`). SeaweedFS is in that tree
//! too: its own requests name no listed domain, and the file has no default
//! stack, so they are not recorded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Agent;
use serde_json::Value;

/// What the server answers to `/two`.
const TWO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\ntwo\n";
/// What the server answers to anything else.
const ONE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\none\n";

/// The stores and stacks; `{alpha}`, `{beta}` are the S3 store entries.
const CONFIG: &str = r#"version: 2
services:
  event_stores: [{id: out, type: stdout}]
  object_stores:
{alpha}{beta}    - {id: console, type: stdout}
stacks:
  alpha:
    plugins:
      - type: http_capture
        config: {level: full, format: parts, object_store: {id: to_alpha}}
      - type: report_usage
  beta:
    plugins:
      - type: http_capture
        config: {level: full, format: json, object_store: {id: to_beta}}
      - type: report_usage
  printed:
    plugins:
      - type: http_capture
        config: {level: headers, format: parts, object_store: {id: console}}
      - type: report_usage
tap:
  direction: egress
  endpoints:
    - domain: alpha.test
      http: {stack: alpha}
    - domain: beta.test
      http: {stack: beta}
    - domain: printed.test
      http: {stack: printed}
"#;

/// `curl` GET of `http://HOST:PORT/PATH`, `HOST` resolved to loopback.
fn curl(host: &str, port: u16, path: &str) {
    let out = Command::new("curl")
        .args(["-sf", "--noproxy", "*", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {host}{path}: {out:?}");
}

/// Python's `http.client` GET of `PATH` from loopback, `Host: HOST:PORT`.
fn python(host: &str, port: u16, path: &str) {
    let script = format!(
        "import http.client\n\
         c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=10)\n\
         c.request('GET', '{path}', headers={{'Host': '{host}:{port}'}})\n\
         r = c.getresponse()\n\
         assert r.status == 200 and r.read() in (b'one\\n', b'two\\n')\n"
    );
    let out = Command::new(common::python())
        .args(["-c", &script])
        .output()
        .expect("run python");
    assert!(out.status.success(), "python {host}{path}: {out:?}");
}

/// The request events to `host`.
fn requests<'a>(lines: &'a [Value], host: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| {
            v["type"] == "http_transaction"
                && v["authority"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{host}:")))
        })
        .collect()
}

/// (request_id, role, digest) of every object of `requests`, each kept.
fn objects_of(requests: &[&Value]) -> Vec<(u64, String, String)> {
    let mut out: Vec<_> = requests
        .iter()
        .flat_map(|txn| {
            txn["objects"].as_array().unwrap().iter().map(move |o| {
                assert_eq!(o["kept"], true, "{txn}");
                (
                    txn["request_id"].as_u64().unwrap(),
                    o["role"].as_str().unwrap().to_owned(),
                    o["digest"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    out.sort();
    out
}

/// The `artifact_record` events of store `store`.
fn records<'a>(lines: &'a [Value], store: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "artifact_record" && v["store"] == store)
        .collect()
}

/// (request_id, role, digest) of `records`.
fn named(records: &[&Value]) -> Vec<(u64, String, String)> {
    let mut out: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r["request_id"].as_u64().unwrap(),
                r["role"].as_str().unwrap().to_owned(),
                r["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The bucket's keys, each checked to hold bytes of its digest.
fn bucket(weed: &common::Weed, name: &str) -> BTreeSet<String> {
    let client = weed.client(name);
    let keys = common::block_on(client.list_keys()).unwrap();
    for key in &keys {
        let bytes = common::block_on(client.get_object(key)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), key);
    }
    keys.into_iter().collect()
}

#[test]
fn each_stack_stores_in_its_store_and_every_stored_object_is_recorded() {
    if !common::can_run("each_stack_stores_in_its_store_and_every_stored_object_is_recorded") {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket("alpha");
    weed.create_bucket("beta");
    let dir = tempfile::tempdir().unwrap();
    let entry = |id: &str, bucket: &str| -> String {
        weed.store_yaml(id, bucket, &dir.path().join(bucket), "fatal")
            .lines()
            .enumerate()
            .map(|(i, l)| format!("    {}{l}\n", if i == 0 { "- " } else { "  " }))
            .collect()
    };
    let config = dir.path().join("qpoint.yaml");
    std::fs::write(
        &config,
        CONFIG
            .replace("{alpha}", &entry("to_alpha", "alpha"))
            .replace("{beta}", &entry("to_beta", "beta")),
    )
    .unwrap();
    let port = common::serve_loopback_http(|line| {
        if line.starts_with("GET /two ") {
            TWO
        } else {
            ONE
        }
    });
    let agent = Agent::capturing_this_test(&config);

    // `/one` twice to `alpha.test`: the same header blocks and body, stored
    // once, recorded for each request.
    curl("alpha.test", port, "/one");
    curl("alpha.test", port, "/two");
    curl("alpha.test", port, "/one");
    python("beta.test", port, "/one");
    curl("beta.test", port, "/two");
    curl("printed.test", port, "/one");

    // Every object of every request is recorded once stored.
    let start = Instant::now();
    let lines = loop {
        let lines = agent.lines();
        let wanted: usize = ["alpha.test", "beta.test", "printed.test"]
            .iter()
            .map(|h| objects_of(&requests(&lines, h)).len())
            .sum();
        let got = lines
            .iter()
            .filter(|v| v["type"] == "artifact_record")
            .count();
        let all_requests = [("alpha.test", 3), ("beta.test", 2), ("printed.test", 1)]
            .iter()
            .all(|(h, n)| requests(&lines, h).len() == *n);
        if all_requests && wanted == got {
            break lines;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{got} of {wanted} objects recorded: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (alpha, beta, printed) = (
        requests(&lines, "alpha.test"),
        requests(&lines, "beta.test"),
        requests(&lines, "printed.test"),
    );
    assert_eq!((alpha.len(), beta.len(), printed.len()), (3, 2, 1));

    // Each bucket holds exactly its stack's objects.
    let digests = |objects: &[(u64, String, String)]| -> BTreeSet<String> {
        objects.iter().map(|(_, _, d)| d.clone()).collect()
    };
    let (alpha_objects, beta_objects) = (objects_of(&alpha), objects_of(&beta));
    assert_eq!(
        alpha_objects.len(),
        3 * 3,
        "request head, response head and body"
    );
    assert_eq!(beta_objects.len(), 2, "one `http_transaction` object each");
    let (alpha_keys, beta_keys) = (bucket(&weed, "alpha"), bucket(&weed, "beta"));
    assert_eq!(alpha_keys, digests(&alpha_objects));
    assert_eq!(beta_keys, digests(&beta_objects));
    let one = blake3::hash(b"one\n").to_hex().to_string();
    let two = blake3::hash(b"two\n").to_hex().to_string();
    assert!(alpha_keys.contains(&one) && alpha_keys.contains(&two));
    assert_eq!(
        alpha_keys.len(),
        5,
        "two request heads, one response head (the same bytes for all three), two bodies"
    );
    assert!(alpha_keys.is_disjoint(&beta_keys));

    // The records name exactly the bucket's keys, one per request and object.
    for (store, bucket_name, keys, objects) in [
        ("to_alpha", "alpha", &alpha_keys, &alpha_objects),
        ("to_beta", "beta", &beta_keys, &beta_objects),
    ] {
        let recorded = records(&lines, store);
        assert_eq!(named(&recorded), *objects, "{store}");
        let recorded_keys: BTreeSet<String> = recorded
            .iter()
            .map(|r| r["digest"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(recorded_keys, *keys, "{store}");
        for r in &recorded {
            let digest = r["digest"].as_str().unwrap();
            assert_eq!(
                r["url"],
                format!("http://{}/{bucket_name}/{digest}", weed.endpoint())
            );
            // The request event it links to names the same object.
            let txn = lines
                .iter()
                .find(|v| {
                    v["type"] == "http_transaction"
                        && v["conn_id"] == r["conn_id"]
                        && v["request_id"] == r["request_id"]
                })
                .unwrap_or_else(|| panic!("no request event for {r}"));
            let object = txn["objects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["digest"] == digest && o["role"] == r["role"])
                .unwrap_or_else(|| panic!("{txn} does not name {r}"));
            assert_eq!(r["size"], object["size"]);
            assert_eq!(r["content_type"], object["content_type"]);
            let summary = &r["summary"];
            for field in ["method", "authority", "status", "direction", "pid", "tls"] {
                assert_eq!(summary[field], txn[field], "{field} of {r}");
            }
            assert_eq!(summary["direction"], "egress-internal");
            assert!(r["timestamp"].as_str().unwrap().ends_with('Z'), "{r}");
        }
    }
    // The kinds, in Qtap's words too.
    let kinds: BTreeMap<String, String> = lines
        .iter()
        .filter(|v| v["type"] == "artifact_record")
        .map(|r| {
            (
                r["role"].as_str().unwrap().to_owned(),
                r["artifact_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("http_transaction".into(), "http_transaction".into()),
            ("request_headers".into(), "req-headers".into()),
            ("response_body".into(), "res-body".into()),
            ("response_headers".into(), "res-headers".into()),
        ])
    );
    // The two `/one` bodies to `alpha.test`: one uploaded, one found there.
    let body_records: Vec<bool> = records(&lines, "to_alpha")
        .iter()
        .filter(|r| r["digest"] == one.as_str())
        .map(|r| r["deduplicated"].as_bool().unwrap())
        .collect();
    assert_eq!(body_records.len(), 2);
    assert_eq!(body_records.iter().filter(|d| **d).count(), 1);

    // The stdout store: the header objects of `printed.test` only, each
    // printed and recorded without a URL.
    let printed_objects = objects_of(&printed);
    assert_eq!(printed_objects.len(), 2);
    let lines_printed: BTreeSet<String> = common::objects(&lines).into_keys().collect();
    assert_eq!(lines_printed, digests(&printed_objects));
    let console = records(&lines, "console");
    assert_eq!(named(&console), printed_objects);
    assert!(console.iter().all(|r| r["url"].is_null()), "{console:?}");

    let count = |lines: &[Value], t: &str| lines.iter().filter(|v| v["type"] == t).count();
    assert_eq!(count(&agent.lines(), "artifact_record"), 9 + 2 + 2);

    // A reload adding a store ahead of the others: `alpha` still stores in
    // `to_alpha`, now second in the list, and nothing in the new store.
    let text = std::fs::read_to_string(&config).unwrap();
    let added = text.replace(
        "  object_stores:\n",
        "  object_stores:\n    - {id: extra, type: stdout}\n",
    );
    reload(&agent, &config, &added, "started [extra]");
    // A request to `alpha.test`, once its request head is in the bucket.
    let stored_in_alpha = |path: &str| -> (Value, String) {
        curl("alpha.test", port, path);
        let txn = wait_request(&agent, path);
        assert_eq!(txn["objects"][0]["role"], "request_headers");
        let head = txn["objects"][0]["digest"].as_str().unwrap().to_owned();
        wait_until(path, || bucket(&weed, "alpha").contains(&head));
        (txn, head)
    };
    let (_, head) = stored_in_alpha("/three");
    assert!(!common::objects(&agent.lines()).contains_key(&head));

    // A reload removing `to_beta`, named by the running stack `beta` (the new
    // file's own stacks would not name it): refused, `beta` keeps its store.
    let beta_entry = entry("to_beta", "beta");
    let removed = added.replace(&beta_entry, "").replace(
        "object_store: {id: to_beta}",
        "object_store: {id: to_alpha}",
    );
    reload(
        &agent,
        &config,
        &removed,
        "object store `to_beta` is named by `http_capture.object_store` of the running stack \
         `beta`; stacks change only at restart, so a reload cannot remove that store",
    );
    python("beta.test", port, "/two");
    wait_until("a new object in `beta`", || {
        bucket(&weed, "beta").len() > beta_keys.len()
    });

    // A reload that only turns `to_alpha`'s records off (`event_store:
    // {disabled: true}`): its objects are still stored, no longer recorded.
    let quiet = added.replace(
        "    - id: to_alpha\n",
        "    - id: to_alpha\n      event_store: {disabled: true}\n",
    );
    assert_ne!(quiet, added);
    reload(&agent, &config, &quiet, "config reloaded: stores unchanged");
    let (txn, _) = stored_in_alpha("/four");

    let lines = agent.stop_with(libc::SIGINT);
    assert_eq!(count(&lines, "artifact_record"), 9 + 2 + 2 + 3 + 1);
    assert!(
        !lines
            .iter()
            .any(|v| v["type"] == "artifact_record" && v["request_id"] == txn["request_id"]),
        "records of `to_alpha` are off"
    );
}

/// Waits up to 20 s for `done`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "no {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `text` to the agent's `config`, sends SIGHUP and waits until its
/// stderr `says` the outcome.
fn reload(agent: &Agent, config: &std::path::Path, text: &str, says: &str) {
    std::fs::write(config, text).unwrap();
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    agent.wait_stderr(says, Duration::from_secs(30));
}

/// The request event for `path`, once the agent has written it.
fn wait_request(agent: &Agent, path: &str) -> Value {
    agent.wait_for(path, Duration::from_secs(20), |v| {
        v["type"] == "http_transaction" && v["path"] == path
    })
}
