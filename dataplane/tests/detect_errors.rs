//! `detect_errors` as a Qtap user configures it: a rule on `5xx` fires for a
//! 503 and not for a 200, and stores the response body and request head it
//! records while `http_capture` stores a summary only; a rule that records
//! without reporting stores its part and writes no issue; a `trigger_duration`
//! rule fires for a slow response; `trigger_contains` reads a gzip body
//! decoded, for the one URL `only_urls` names. Each issue is checked field by
//! field, and its objects against the stored bytes and their digests.
//!
//! Capture is limited to this test's process tree (`--pid`) and to the client
//! side (`direction: egress`): the client is `curl`, the server a thread of
//! the test on loopback with fixed answers.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{Agent, curl_loopback_get, objects};
use serde_json::{Value, json};

// What the server answers to `/fail`, to `/gzip` and to anything else.
use common::{ANSWER_503_DOWN as FAIL, ANSWER_GZIP_HELLO as GZIP, ANSWER_OK_HELLO as OK};
/// How long the server waits before answering `/slow`.
const SLOW: Duration = Duration::from_millis(700);

/// A loopback HTTP/1.1 server on a thread of this process.
fn serve() -> u16 {
    common::serve_loopback_http(|request_line| {
        if request_line.starts_with("GET /fail ") {
            FAIL
        } else if request_line.starts_with("GET /gzip ") {
            GZIP
        } else {
            if request_line.starts_with("GET /slow ") {
                std::thread::sleep(SLOW);
            }
            OK
        }
    })
}

const CONFIG: &str = r#"version: 2
services:
  event_stores: [{id: out, type: stdout}]
  object_stores: [{id: out, type: stdout}]
stacks:
  s:
    plugins:
      - type: http_capture
        config: {level: summary, format: json}
      - type: report_usage
      - type: detect_errors
        config:
          rules:
            - name: server errors
              trigger_status_codes: ["5xx"]
              report_as_issue: true
              record_req_headers: true
              record_res_body: true
            - name: unreported 503
              trigger_status_codes: [503]
              record_res_headers: true
            - name: slow
              trigger_duration: 500ms
              report_as_issue: true
            - name: greets
              trigger_contains: "hello"
              only_urls: ["http://svc.test:{port}/gzip"]
              report_as_issue: true
tap:
  direction: egress
  http: {stack: s}
"#;

/// The events of `kind` for `path`.
fn of_path<'a>(lines: &'a [Value], kind: &str, path: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == kind && v["path"] == path)
        .collect()
}

#[test]
fn rules_fire_issues_and_record_parts_as_configured() {
    if !common::can_run("rules_fire_issues_and_record_parts_as_configured") {
        return;
    }
    let port = serve();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("qpoint.yaml");
    std::fs::write(&config, CONFIG.replace("{port}", &port.to_string())).unwrap();
    let agent = Agent::capturing_this_test(&config);
    // The server thread entered `accept` before the probes: one throwaway
    // connection brings it back under them.
    drop(TcpStream::connect(("127.0.0.1", port)).expect("throwaway connection"));
    std::thread::sleep(Duration::from_millis(200));
    for path in ["/ok", "/fail", "/slow", "/gzip"] {
        curl_loopback_get("svc.test", port, path);
    }
    agent.wait_for("the last issue", Duration::from_secs(20), |v| {
        v["type"] == "issue" && v["path"] == "/gzip"
    });
    let lines = agent.stop_with(libc::SIGINT);
    let stored = objects(&lines);
    let authority = format!("svc.test:{port}");

    // A 200 that no rule matches: its event, no issue, and only the summary.
    let ok = of_path(&lines, "http_transaction", "/ok");
    assert_eq!(ok.len(), 1, "{ok:?}");
    let roles = |v: &Value| -> Vec<String> {
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["role"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(roles(ok[0]), ["http_transaction"]);
    assert!(of_path(&lines, "issue", "/ok").is_empty());

    // The 503: one issue (the unreported rule writes none), naming the parts
    // its rule recorded; the transaction's event lists every stored part.
    let txn = of_path(&lines, "http_transaction", "/fail")[0];
    assert_eq!(
        roles(txn),
        [
            "http_transaction",
            "request_headers",
            "response_headers",
            "response_body"
        ]
    );
    let issues = of_path(&lines, "issue", "/fail");
    assert_eq!(issues.len(), 1, "{issues:?}");
    let mut issue = issues[0].clone();
    let fields = issue.as_object_mut().unwrap();
    let timestamp = fields.remove("timestamp").unwrap();
    assert!(timestamp.as_str().unwrap().ends_with('Z'), "{timestamp}");
    let duration = fields.remove("duration_ms").unwrap();
    assert!(duration.as_f64().unwrap() > 0.0);
    let exe = fields.remove("exe").unwrap();
    assert!(exe.is_null() || exe.as_str().unwrap().ends_with("curl"));
    for key in [
        "host",
        "cgroup",
        "container_id",
        "container_runtime",
        "pod_uid",
        "pod_qos",
    ] {
        assert_eq!(fields.remove(key), txn.get(key).cloned(), "{key}");
    }
    let objects = fields.remove("objects").unwrap();
    let request_head =
        format!("GET /fail HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: tapwire-test\r\n\r\n");
    let part = |role: &str, bytes: &[u8], content_type: &str| {
        json!({
            "role": role,
            "digest": blake3::hash(bytes).to_hex().as_str(),
            "size": bytes.len(),
            "content_type": content_type,
            "url": null,
            "kept": true,
        })
    };
    assert_eq!(
        objects,
        json!([
            part(
                "request_headers",
                request_head.as_bytes(),
                "application/http-headers"
            ),
            part("response_body", b"down\n", "text/plain"),
        ])
    );
    // The recorded parts are stored, byte for byte.
    for o in objects.as_array().unwrap() {
        let digest = o["digest"].as_str().unwrap();
        assert!(stored.contains_key(digest), "object {digest} not stored");
    }
    assert_eq!(
        stored[objects[1]["digest"].as_str().unwrap()],
        b"down\n".to_vec()
    );
    assert_eq!(
        issue,
        json!({
            "type": "issue",
            "schema": 2,
            "conn_id": txn["conn_id"],
            "request_id": txn["request_id"],
            "stream_id": null,
            "start_ns": txn["start_ns"],
            "pid": txn["pid"],
            "tid": txn["tid"],
            "local": txn["local"],
            "remote": format!("127.0.0.1:{port}"),
            "comm": "curl",
            "cgroup_id": txn["cgroup_id"],
            "direction": "egress-internal",
            "protocol": "http1",
            "tls": false,
            "tls_sni": null,
            "method": "GET",
            "authority": authority,
            "path": "/fail",
            "url": format!("http://{authority}/fail"),
            "status": 503,
            "error": "server errors",
            "trigger_conditions": ["detect_errors:status"],
            "trigger_reasons": ["response status code [503] matched [5xx]"],
        })
    );
    // The summary object stays a summary: no headers, no body.
    let summary =
        String::from_utf8(common::object_of(&stored, txn, "http_transaction").to_vec()).unwrap();
    assert!(
        !summary.contains("\"headers\"") && !summary.contains("\"body\""),
        "{summary}"
    );

    // The slow response: a duration issue, with Qtap's reason.
    let slow = of_path(&lines, "issue", "/slow");
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0]["error"], "slow");
    assert_eq!(slow[0]["status"], 200);
    assert_eq!(
        slow[0]["trigger_conditions"],
        json!(["detect_errors:duration"])
    );
    let reason = slow[0]["trigger_reasons"][0].as_str().unwrap();
    let took = reason
        .strip_prefix("duration [")
        .and_then(|r| r.strip_suffix("ms] exceeded threshold [500ms]"))
        .unwrap_or_else(|| panic!("reason: {reason}"));
    let took: u64 = took.parse().unwrap_or_else(|_| panic!("reason: {reason}"));
    assert!((700..5000).contains(&took), "{reason}");
    assert_eq!(slow[0]["objects"], json!([]));

    // The gzip body contains `hello` once inflated; `only_urls` names it.
    let gzip = of_path(&lines, "issue", "/gzip");
    assert_eq!(gzip.len(), 1, "{gzip:?}");
    assert_eq!(gzip[0]["error"], "greets");
    assert_eq!(
        gzip[0]["trigger_conditions"],
        json!(["detect_errors:url", "detect_errors:body"])
    );
    assert_eq!(
        gzip[0]["trigger_reasons"],
        json!([
            "url in include list",
            "response body contains the specified content"
        ])
    );
    // `/ok` says hello too, but is not in `only_urls`.
    assert_eq!(
        lines.iter().filter(|v| v["type"] == "issue").count(),
        3,
        "issues: one for /fail, /slow and /gzip each"
    );
}
