//! The agent as a user runs it — default config, events and objects on stdout —
//! against real clients and servers, capture limited to the test's processes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    Agent, Bg, certs, free_port, header_of, object_of, objects, path_str, python, transactions_of,
    wait_listening,
};
use serde_json::Value;

/// `http_server.py`'s `/big` body.
fn big_body() -> Vec<u8> {
    (0..2usize << 20)
        .map(|i| ((i * 7 + 3) % 251) as u8)
        .collect()
}

#[test]
fn https_keep_alive_and_plain_http_become_events_and_exact_objects() {
    if !common::can_run("https_keep_alive_and_plain_http_become_events_and_exact_objects") {
        return;
    }
    let _serial = common::serial();
    let certs = certs();
    let (tls_port, plain_port) = (free_port(), free_port());
    let _tls_server = common::http_server_with(tls_port, Some(&certs));
    let _plain_server = common::http_server_with(plain_port, None);

    let base = format!("https://127.0.0.1:{tls_port}");
    let script = format!(
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{plain_port}/small').read()"
    );
    let py = python();
    let cgroup = common::Cgroup::new("e2e");
    let agent = Agent::start_dataplane(&["--cgroup".into(), path_str(&cgroup.path).into()], &[]);
    // Both clients start after the agent, their work on the command line; curl
    // takes the three URLs over one keep-alive connection.
    let mut args = vec!["-sk", "--http1.1"];
    let urls: Vec<String> = ["/small", "/chunked", "/big"]
        .iter()
        .map(|path| format!("{base}{path}"))
        .collect();
    for url in &urls {
        args.extend([url.as_str(), "-o", "/dev/null"]);
    }
    let curl = cgroup.spawn("curl", &args);
    let curl_pid = curl.id();
    common::finish(curl, Duration::from_secs(60));
    let client = cgroup.spawn(&py, &["-c", &script]);
    let py_pid = client.id();
    common::finish(client, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let lines = agent.stop_with(libc::SIGINT);
    let objects = objects(&lines);

    let txns = transactions_of(&lines, curl_pid);
    let got: Vec<(&str, &str, &str, u64)> = txns
        .iter()
        .map(|t| {
            (
                t["method"].as_str().unwrap(),
                t["authority"].as_str().unwrap(),
                t["path"].as_str().unwrap(),
                t["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let host = format!("127.0.0.1:{tls_port}");
    assert_eq!(
        got,
        [
            ("GET", host.as_str(), "/small", 200),
            ("GET", &host, "/chunked", 200),
            ("GET", &host, "/big", 200)
        ],
        "curl's transactions"
    );
    for t in &txns {
        assert_eq!(
            (t["tls"].as_bool(), t["protocol"].as_str()),
            (Some(true), Some("http1"))
        );
        assert_eq!(t["direction"], "egress-internal");
        assert_eq!(t["comm"], "curl");
        assert_eq!(
            t["conn_id"], txns[0]["conn_id"],
            "one keep-alive connection"
        );
        assert_eq!(
            (t["gap"].as_bool(), t["truncated"].as_bool()),
            (Some(false), Some(false))
        );
        assert!(
            t["remote"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{tls_port}"))
        );
    }
    assert_eq!(
        object_of(&objects, &txns[0], "response_body"),
        b"hello from tapwire\n"
    );
    assert_eq!(
        object_of(&objects, &txns[1], "response_body"),
        b"first chunk; second chunk; third and last chunk\n"
    );
    assert_eq!(
        header_of(&objects, &txns[1], "response_headers", "transfer-encoding").as_deref(),
        Some("chunked")
    );
    let big = object_of(&objects, &txns[2], "response_body");
    assert_eq!(blake3::hash(big), blake3::hash(&big_body()), "2 MiB body");
    assert_eq!(txns[2]["response_body_bytes"], 2 << 20);
    assert_eq!(
        object_of(&objects, &txns[0], "request_headers"),
        format!(
            "GET /small HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
        )
        .as_bytes()
    );

    let conn_events: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "connection" && v["conn_id"] == txns[0]["conn_id"])
        .collect();
    let kinds: Vec<&str> = conn_events
        .iter()
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["open", "close"], "{conn_events:?}");
    let close = conn_events[1];
    assert_eq!(
        (close["pid"].as_u64(), close["role"].as_str()),
        (Some(curl_pid as u64), Some("client"))
    );
    assert!(
        close["bytes_received"].as_u64().unwrap() > 2 << 20,
        "{close}"
    );
    assert_eq!(close["tls"], true);

    let plain = transactions_of(&lines, py_pid);
    assert_eq!(plain.len(), 1, "python's one request: {plain:?}");
    let p = &plain[0];
    assert_eq!(
        (
            p["method"].as_str(),
            p["path"].as_str(),
            p["status"].as_u64()
        ),
        (Some("GET"), Some("/small"), Some(200))
    );
    assert_eq!(p["tls"], false);
    assert_eq!(
        object_of(&objects, p, "response_body"),
        b"hello from tapwire\n"
    );

    // Only the selected processes were recorded.
    for line in lines.iter().filter(|v| v["type"] == "http_transaction") {
        assert!(
            line["pid"] == curl_pid || line["pid"] == py_pid,
            "unselected process: {line}"
        );
    }
}

#[test]
fn http2_over_tls_to_nginx_gives_hpack_decoded_headers() {
    if !common::can_run("http2_over_tls_to_nginx_gives_hpack_decoded_headers") {
        return;
    }
    let _serial = common::serial();
    let certs = certs();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {};\n\
         ssl_certificate_key {};\n    location / {{ add_header x-test h2-works; return 200 \"hello h2\\n\"; }}\n  }}\n}}\n",
        path_str(&certs.cert),
        path_str(&certs.key),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _nginx = Bg::spawn(Command::new("nginx").args([
        "-c",
        path_str(&conf_path),
        "-e",
        &format!("{d}/error.log"),
    ]));
    wait_listening(port, Duration::from_secs(20));

    let url = format!("https://127.0.0.1:{port}/h2/path?q=1");
    let cgroup = common::Cgroup::new("h2");
    let agent = Agent::start_dataplane(&["--cgroup".into(), path_str(&cgroup.path).into()], &[]);
    let curl = cgroup.spawn("curl", &["-sk", "--http2", "-H", "x-custom: yes", &url]);
    let curl_pid = curl.id();
    let body = common::finish(curl, Duration::from_secs(60));
    assert_eq!(body, b"hello h2\n");
    std::thread::sleep(Duration::from_secs(1));
    let lines = agent.stop_with(libc::SIGTERM);
    let objects = objects(&lines);
    let txns = transactions_of(&lines, curl_pid);
    assert_eq!(txns.len(), 1, "{txns:?}");
    let t = &txns[0];
    assert_eq!(t["protocol"], "http2");
    assert_eq!(t["stream_id"], 1);
    assert_eq!(
        (t["method"].as_str(), t["path"].as_str()),
        (Some("GET"), Some("/h2/path?q=1"))
    );
    assert_eq!(t["authority"], format!("127.0.0.1:{port}"));
    assert_eq!(t["status"], 200);
    assert_eq!(t["incomplete_headers"], false);
    let header = |role, name| header_of(&objects, t, role, name).unwrap_or_default();
    assert_eq!(header("request_headers", "x-custom"), "yes");
    assert_eq!(header("request_headers", "user-agent"), "curl/7.88.1");
    assert_eq!(header("response_headers", "x-test"), "h2-works");
    assert!(header("response_headers", "server").starts_with("nginx"));
    assert_eq!(t["user_agent"], "curl/7.88.1");
    assert_eq!(t["url"], format!("https://127.0.0.1:{port}/h2/path?q=1"));
    assert_eq!(object_of(&objects, t, "response_body"), b"hello h2\n");
}

/// Events carry metadata, objects payload: credentials sent in headers and in the
/// query reach the stored header object and no event line, which carries the
/// allow-listed fields instead.
#[test]
fn credentials_reach_the_header_objects_and_no_event() {
    if !common::can_run("credentials_reach_the_header_objects_and_no_event") {
        return;
    }
    let _serial = common::serial();
    let port = free_port();
    let _server = common::http_server_with(port, None);
    let (api_key, cookie, query, bearer) = (
        "apikey-9f3c1e7a5b",
        "cookie-4d2b8e6f0a",
        "query-7c5a3e1b9d",
        "bearer-2e8d4a6c0f1b3d5e",
    );
    let target = format!("/small?q=1&Token={query}");
    let url = format!("http://127.0.0.1:{port}{target}");
    let (api_key_header, cookie_header, bearer_header) = (
        format!("x-api-key: {api_key}"),
        format!("cookie: session={cookie}"),
        format!("authorization: Bearer {bearer}"),
    );
    let cgroup = common::Cgroup::new("creds");
    let agent = Agent::start_dataplane(&["--cgroup".into(), path_str(&cgroup.path).into()], &[]);
    let curl = cgroup.spawn(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-H",
            &api_key_header,
            "-H",
            &cookie_header,
            "-H",
            &bearer_header,
            &url,
        ],
    );
    let curl_pid = curl.id();
    common::finish(curl, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let lines = agent.stop_with(libc::SIGINT);
    let objects = objects(&lines);
    let txns = transactions_of(&lines, curl_pid);
    assert_eq!(txns.len(), 1, "{txns:?}");
    let t = &txns[0];

    for line in lines.iter().filter(|v| v["type"] != "object") {
        let text = line.to_string();
        for secret in [api_key, cookie, query, bearer] {
            assert!(!text.contains(secret), "{secret} in event {text}");
        }
    }
    assert!(t.get("request_headers").is_none() && t.get("response_headers").is_none());
    assert_eq!(t["schema"], 2);
    assert_eq!(t["path"], "/small?q=1&Token=REDACTED");
    assert_eq!(
        t["url"],
        format!("http://127.0.0.1:{port}/small?q=1&Token=REDACTED")
    );
    assert_eq!(t["user_agent"], "curl/7.88.1");
    assert_eq!(t["request_content_type"], Value::Null);
    assert_eq!(t["response_content_type"], "text/plain");
    assert_eq!(
        (
            t["auth_token_source"].as_str(),
            t["auth_token_type"].as_str(),
            t["auth_token_mask"].as_str()
        ),
        (Some("authorization"), Some("Bearer"), Some("...3d5e"))
    );
    let stamp = t["timestamp"].as_str().unwrap();
    let parsed = Command::new("date")
        .args(["-u", "-d", stamp, "+%s"])
        .output()
        .unwrap();
    assert!(parsed.status.success(), "date refused {stamp}");
    let secs: u64 = String::from_utf8(parsed.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(secs) < 120, "timestamp {stamp} vs now {now}");

    let header = |name| header_of(&objects, t, "request_headers", name);
    assert_eq!(header("x-api-key").as_deref(), Some(api_key));
    assert_eq!(header("cookie"), Some(format!("session={cookie}")));
    assert_eq!(header("authorization"), Some(format!("Bearer {bearer}")));
    let head = object_of(&objects, t, "request_headers");
    assert!(
        head.starts_with(format!("GET {target} HTTP/1.1\r\n").as_bytes()),
        "{}",
        String::from_utf8_lossy(head)
    );
}
