//! `http_capture` as a Qtap user configures it, checked against the stored
//! bytes: levels `none`, `summary`, `headers` and `full`, formats `json` and
//! `text` (Qtap's `http_transaction` layouts, bodies inflated) and `parts`, a rule
//! `http.res.status >= 400` that raises the level for failing requests only,
//! and an `endpoints` entry that switches the stack for one domain; only the
//! stacks with `http_metrics` feed the status server's request counters, and
//! a stack with only `http_metrics` records nothing else. `access_logs`
//! writes its entries to stderr, never to stdout: a console line at `summary`
//! and, by a rule, a JSON entry at `details`.
//!
//! Capture is limited to this test's process tree (`--pid`) and to the client
//! side (`direction: egress`): the client is `curl`, the server a thread of
//! the test on loopback with fixed answers.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{Agent, curl_loopback_get, object_of, objects};
use serde_json::Value;

// What the server answers to `/fail`, to `/gzip` and to anything else.
use common::{ANSWER_503_DOWN as FAIL, ANSWER_GZIP_HELLO as GZIP, ANSWER_OK_HELLO as OK};

/// A loopback HTTP/1.1 server on a thread of this process.
fn serve() -> u16 {
    common::serve_loopback_http(|request_line| {
        if request_line.starts_with("GET /fail ") {
            FAIL
        } else if request_line.starts_with("GET /gzip ") {
            GZIP
        } else {
            OK
        }
    })
}

const CONFIG: &str = r#"version: 2
services:
  event_stores: [{id: out, type: stdout}]
  object_stores: [{id: out, type: stdout}]
rulekit:
  macros:
    - name: failing
      expr: http.res.status >= 400
stacks:
  qtap:
    plugins:
      - type: http_capture
        config:
          level: none
          format: json
          rules:
            - name: errors
              expr: failing()
              level: full
            - name: summary
              expr: http.req.path == "/summary"
              level: summary
            - name: headers
              expr: http.req.path == "/headers"
              level: details
            - name: full
              expr: http.req.path in ["/full", "/gzip"]
              level: full
            - name: text
              expr: http.req.path == "/text"
              level: full
              format: text
      - type: report_usage
  parts:
    plugins:
      - type: http_capture
        config: {level: headers, format: parts}
      - type: report_usage
      - type: http_metrics
  counted:
    plugins:
      - type: http_metrics
  logged:
    plugins:
      - type: access_logs
        config:
          mode: summary
          format: console
          rules:
            - name: failures in detail
              expr: http.res.status >= 400
              mode: details
              format: json
tap:
  direction: egress
  http: {stack: qtap}
  endpoints:
    - domain: Parts.Test
      http: {stack: parts}
    - domain: counted.test
      http: {stack: counted}
    - domain: log.test
      http: {stack: logged}
"#;

/// The event of the request for `path` to `host`.
fn event<'a>(lines: &'a [Value], host: &str, path: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| {
            v["type"] == "http_transaction"
                && v["path"] == path
                && v["authority"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{host}:")))
        })
        .unwrap_or_else(|| panic!("no event for {host}{path}"))
}

/// Replaces each `{key}` in `template` with its value.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_owned(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

/// The value of `"key":"…"` or `"key":N` in a JSON object's bytes, as written.
fn raw_field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).expect("value ends");
    rest[..end].trim_matches('"')
}

#[test]
fn levels_formats_rules_and_endpoints_store_what_they_name() {
    if !common::can_run("levels_formats_rules_and_endpoints_store_what_they_name") {
        return;
    }
    let port = serve();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("qpoint.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let status_port = common::free_port();
    let agent = Agent::capturing_this_test_at(&config, status_port);
    // The server thread entered `accept` before the probes: one throwaway
    // connection brings it back under them.
    drop(TcpStream::connect(("127.0.0.1", port)).expect("throwaway connection"));
    std::thread::sleep(Duration::from_millis(200));

    for path in [
        "/none", "/summary", "/headers", "/full", "/text", "/fail", "/gzip",
    ] {
        curl_loopback_get("svc.test", port, path);
    }
    curl_loopback_get("log.test", port, "/full");
    curl_loopback_get("log.test", port, "/fail");
    curl_loopback_get("counted.test", port, "/full");
    curl_loopback_get("counted.test", port, "/fail");
    curl_loopback_get("parts.test", port, "/full");
    agent.wait_for("the last transaction", Duration::from_secs(20), |v| {
        v["type"] == "http_transaction" && v["authority"] == format!("parts.test:{port}")
    });
    // `http_metrics` is in the stacks of `parts.test` and `counted.test` only:
    // three requests counted, the seven to `svc.test` not.
    let counted = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("tapwire_http_requests_total{"))
            .map(str::to_owned)
            .collect()
    };
    let expected = [
        r#"tapwire_http_requests_total{method="GET",status_class="2xx",protocol="http1",direction="egress"} 2"#,
        r#"tapwire_http_requests_total{method="GET",status_class="5xx",protocol="http1",direction="egress"} 1"#,
    ];
    let start = std::time::Instant::now();
    let series = loop {
        let (code, text) = common::get(status_port, "/metrics");
        assert_eq!(code, 200, "{text}");
        let series = counted(&text);
        if series == expected || start.elapsed() > Duration::from_secs(10) {
            break series;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(series, expected);
    agent.wait_stderr(
        &format!("http://log.test:{port}/fail"),
        Duration::from_secs(10),
    );
    let stderr = agent.stderr.lock().unwrap().clone();
    let lines = agent.stop_with(libc::SIGINT);
    let stored = objects(&lines);

    let authority = format!("svc.test:{port}");
    let request_head =
        format!("GET {{path}} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: tapwire-test\r\n\r\n");
    // Values every object shares, and those of one transaction.
    let values = |path: &str, txn: &Value, object: &str| {
        // The object names the executable exactly when the event does.
        let exe = txn["exe"].as_str();
        let head = request_head.replace("{path}", path);
        let answer = if path == "/fail" { FAIL } else { OK };
        vec![
            ("path", path.to_owned()),
            ("authority", authority.clone()),
            ("pid", txn["pid"].to_string()),
            (
                "exe_json",
                exe.map(|e| format!(r#""process_exe":"{e}","#))
                    .unwrap_or_default(),
            ),
            (
                "exe_text",
                exe.map(|e| format!("  Process: {e}\n")).unwrap_or_default(),
            ),
            ("conn", txn["conn_id"].to_string()),
            ("sent", head.len().to_string()),
            ("received", answer.len().to_string()),
            ("time", raw_field(object, "transaction_time").to_owned()),
            ("ms", raw_field(object, "duration_ms").to_owned()),
        ]
    };
    let json_of = |path: &str| {
        let txn = event(&lines, "svc.test", path);
        let roles: Vec<&str> = txn["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["http_transaction"], "{path}: {txn}");
        let object =
            String::from_utf8(object_of(&stored, txn, "http_transaction").to_vec()).expect("utf-8");
        (txn, object)
    };

    // `none` (the plugin's level, no rule matching a 200): no object.
    let none = event(&lines, "svc.test", "/none");
    assert_eq!(none["objects"], serde_json::json!([]), "{none}");

    let metadata = r#"{"metadata":{"process_id":"{pid}",{exe_json}"bytes_sent":{sent},"bytes_received":{received},"connection_id":"{conn}","endpoint_id":"svc.test"},"#;
    let request = r#""request":{"method":"GET","url":"http://{authority}{path}","scheme":"http","path":"{path}","authority":"{authority}","protocol":"http1","user_agent":"tapwire-test""#;
    let request_headers = r#","headers":{":authority":"{authority}",":method":"GET",":path":"{path}",":scheme":"http","Host":"{authority}","User-Agent":"tapwire-test"}"#;
    let tail = r#""transaction_time":"{time}","duration_ms":{ms},"direction":"egress-internal"}"#;

    // `summary`: metadata, no headers, no bodies.
    let (txn, object) = json_of("/summary");
    let expected = format!(
        r#"{metadata}{request}}},"response":{{"status":200,"content_type":"text/plain"}},{tail}"#
    );
    assert_eq!(object, fill(&expected, &values("/summary", txn, &object)));
    assert!(raw_field(&object, "transaction_time").ends_with('Z'));
    assert!(raw_field(&object, "duration_ms").parse::<u64>().unwrap() >= 1);

    // `headers` (written `details`, Qtap's older name): headers, no bodies.
    let (txn, object) = json_of("/headers");
    let expected = format!(
        r#"{metadata}{request}{request_headers}}},"response":{{"status":200,"content_type":"text/plain","headers":{{":status":"200","Content-Length":"6","Content-Type":"text/plain"}}}},{tail}"#
    );
    assert_eq!(object, fill(&expected, &values("/headers", txn, &object)));

    // `full`: headers and bodies (base64, as Qtap's JSON writes bytes).
    let (txn, object) = json_of("/full");
    let expected = format!(
        r#"{metadata}{request}{request_headers}}},"response":{{"status":200,"content_type":"text/plain","headers":{{":status":"200","Content-Length":"6","Content-Type":"text/plain"}},"body":"aGVsbG8K"}},{tail}"#
    );
    assert_eq!(object, fill(&expected, &values("/full", txn, &object)));

    // The rule on the status raises the level of the failing request only.
    let (txn, object) = json_of("/fail");
    let expected = format!(
        r#"{metadata}{request}{request_headers}}},"response":{{"status":503,"content_type":"text/plain","headers":{{":status":"503","Content-Length":"5","Content-Type":"text/plain"}},"body":"ZG93bgo="}},{tail}"#
    );
    assert_eq!(object, fill(&expected, &values("/fail", txn, &object)));

    // Bodies are stored inflated, as Qtap stores them; headers as sent.
    let (_, object) = json_of("/gzip");
    assert!(
        object.contains(
            r#""response":{"status":200,"content_type":"text/plain","headers":{":status":"200","Content-Encoding":"gzip","Content-Length":"26","Content-Type":"text/plain"},"body":"aGVsbG8K"},"#
        ),
        "{object}"
    );

    // `format: text`: Qtap's text layout.
    let txn = event(&lines, "svc.test", "/text");
    let text = String::from_utf8(object_of(&stored, txn, "http_transaction").to_vec()).unwrap();
    let time = text
        .lines()
        .find_map(|l| l.strip_prefix("  Transaction Time: "))
        .expect("time line");
    let ms = text
        .lines()
        .find_map(|l| l.strip_prefix("  Duration: "))
        .and_then(|d| d.strip_suffix("ms"))
        .expect("duration line");
    let expected = "HTTP Transaction\n================\n\nMetadata:\n  Transaction Time: {time}\n  \
         Duration: {ms}ms\n  Direction: egress-internal\n  Process ID: {pid}\n{exe_text}  \
         Bytes Sent: {sent}\n  Bytes Received: {received}\n\nRequest:\n  Method: GET\n  \
         URL: http://{authority}/text\n  Headers:\n    :authority: {authority}\n    :method: GET\n    \
         :path: /text\n    :scheme: http\n    Host: {authority}\n    User-Agent: tapwire-test\n\n\
         Response:\n  Status: 200\n  Content-Type: text/plain\n  Headers:\n    :status: 200\n    \
         Content-Length: 6\n    Content-Type: text/plain\n  Body:\nhello\n\n";
    let mut v = values(
        "/text",
        txn,
        "{\"transaction_time\":\"\",\"duration_ms\":0}",
    );
    v.retain(|(k, _)| *k != "time" && *k != "ms");
    v.push(("time", time.to_owned()));
    v.push(("ms", ms.to_owned()));
    assert_eq!(text, fill(expected, &v));
    assert_eq!(time.len(), "2026-11-30T06:12:00Z".len(), "{time}");
    let txn_objects = &txn["objects"][0];
    assert_eq!(txn_objects["content_type"], "text/plain");

    // The endpoint's stack for `parts.test` (written `Parts.Test`): header
    // blocks as tapwire's parts, and none of the default stack's rules.
    let txn = event(&lines, "parts.test", "/full");
    let roles: Vec<&str> = txn["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["request_headers", "response_headers"], "{txn}");
    assert_eq!(
        object_of(&stored, txn, "request_headers"),
        format!(
            "GET /full HTTP/1.1\r\nHost: parts.test:{port}\r\nUser-Agent: tapwire-test\r\n\r\n"
        )
        .as_bytes()
    );
    assert_eq!(
        object_of(&stored, txn, "response_headers"),
        &OK[..OK.len() - "hello\n".len()]
    );

    // A stack with only `http_metrics`: counted above, no event, no object.
    assert!(
        !lines.iter().any(|v| v["authority"]
            .as_str()
            .is_some_and(|a| a.starts_with("counted.test"))),
        "a request to counted.test was recorded"
    );

    // `access_logs`: entries on stderr only; stdout has nothing of log.test.
    let console = stderr
        .iter()
        .find(|l| l.contains(&format!("http://log.test:{port}/full")))
        .expect("console access log line");
    let ms = console
        .strip_prefix(&format!(
            "■ curl egress-internal → GET http://log.test:{port}/full 200 "
        ))
        .and_then(|rest| rest.strip_suffix("ms"))
        .unwrap_or_else(|| panic!("console line: {console}"));
    assert!(ms.parse::<u64>().is_ok(), "{console}");
    let json = stderr
        .iter()
        .find(|l| l.contains(&format!("http://log.test:{port}/fail")))
        .expect("JSON access log line");
    let mut entry: Value = serde_json::from_str(json).expect("one JSON object per line");
    let entry_map = entry.as_object_mut().unwrap();
    let time = entry_map.remove("time").expect("time");
    assert!(time.as_str().unwrap().ends_with('Z'), "{json}");
    assert!(entry_map.remove("duration_ms").unwrap().is_u64(), "{json}");
    assert!(entry_map.remove("pid").unwrap().is_u64(), "{json}");
    let bin = entry_map.remove("bin").unwrap();
    assert!(bin.as_str().unwrap().ends_with("curl"), "{json}");
    let sent =
        format!("GET /fail HTTP/1.1\r\nHost: log.test:{port}\r\nUser-Agent: tapwire-test\r\n\r\n")
            .len();
    assert_eq!(
        entry,
        serde_json::json!({
            "msg": "HTTP transaction",
            "direction": "egress-internal",
            "method": "GET",
            "url": format!("http://log.test:{port}/fail"),
            "status": 503,
            "meta": {"bytes_sent": sent, "bytes_received": FAIL.len(), "protocol": "http1"},
            "request": {"headers": {"Host": format!("log.test:{port}"), "User-Agent": "tapwire-test"}},
            "response": {"headers": {"Content-Length": "5", "Content-Type": "text/plain"}},
        }),
        "{json}"
    );
    assert!(
        !lines.iter().any(|v| v.to_string().contains("log.test")),
        "an access log entry or a request to log.test reached stdout"
    );
}
