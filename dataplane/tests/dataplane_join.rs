//! Connections older than the agent: an HTTP/2 connection and a keep-alive
//! HTTP/1.1 connection, opened and used before the agent starts, carry more
//! requests after it started; each of those becomes a transaction with method,
//! path and status.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, Bg, free_port, wait_listening, which};
use serde_json::Value;

fn join_js() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/join.js").to_owned()
}

#[test]
fn connections_opened_before_the_agent_are_followed_from_the_next_message() {
    if !common::can_run("connections_opened_before_the_agent_are_followed_from_the_next_message") {
        return;
    }
    let _serial = common::serial();
    let node = which("node");
    let (h2_port, h1_port) = (free_port(), free_port());
    let ports = [h2_port.to_string(), h1_port.to_string()];
    let _server = Bg::spawn(
        Command::new(&node)
            .arg(join_js())
            .arg("server")
            .args(&ports)
            .stdout(Stdio::null()),
    );
    wait_listening(h1_port, Duration::from_secs(20));
    wait_listening(h2_port, Duration::from_secs(20));

    let mut client = Bg::spawn(
        Command::new(&node)
            .arg(join_js())
            .arg("client")
            .args(&ports)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let client_pid = client.0.id();
    let mut out = BufReader::new(client.0.stdout.take().expect("client stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("client output");
    assert_eq!(line.trim(), "connected", "client did not connect");

    // Both connections exist and have carried a request: now the agent starts.
    let agent = Agent::start_dataplane(&["--pid".into(), client_pid.to_string()], &[]);
    client
        .0
        .stdin
        .take()
        .expect("client stdin")
        .write_all(b"go\n")
        .expect("release client");
    let mut replies = Vec::new();
    for line in out.lines() {
        replies.push(line.expect("client output"));
    }
    let status = client.0.wait().expect("client exit");
    assert!(status.success(), "client failed: {status}");
    assert_eq!(
        replies,
        [
            "h2 /after-h2-1",
            "h1 /after-h1-1",
            "h2 /after-h2-2",
            "h1 /after-h1-2",
            "h2 /after-h2-3",
            "h1 /after-h1-3"
        ]
    );
    std::thread::sleep(Duration::from_secs(1));
    let lines = agent.stop_with(libc::SIGINT);

    // Connections first seen already open have role `unknown`.
    let unknown: Vec<u64> = lines
        .iter()
        .filter(|v| v["type"] == "connection" && v["event"] == "open" && v["pid"] == client_pid)
        .filter(|v| v["role"] == "unknown")
        .map(|v| v["conn_id"].as_u64().unwrap())
        .collect();
    let txns: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction" && v["pid"] == client_pid)
        .collect();
    for (protocol, port) in [("http2", h2_port), ("http1", h1_port)] {
        let of_conn: Vec<&&Value> = txns
            .iter()
            .filter(|t| t["remote"] == format!("127.0.0.1:{port}"))
            .collect();
        let got: Vec<(&str, &str, u64)> = of_conn
            .iter()
            .map(|t| {
                (
                    t["method"].as_str().unwrap_or(""),
                    t["path"].as_str().unwrap_or(""),
                    t["status"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let short = if protocol == "http2" { "h2" } else { "h1" };
        let want: Vec<(&str, String, u64)> = (1..=3)
            .map(|i| ("GET", format!("/after-{short}-{i}"), 200))
            .collect();
        let want: Vec<(&str, &str, u64)> =
            want.iter().map(|(m, p, s)| (*m, p.as_str(), *s)).collect();
        assert_eq!(got, want, "{protocol} transactions: {of_conn:#?}");
        for t in &of_conn {
            assert_eq!(t["protocol"], protocol, "{t}");
            assert!(
                unknown.contains(&t["conn_id"].as_u64().unwrap()),
                "{protocol}: the connection predates the agent, so its open says role unknown: {t}"
            );
        }
        let conns: std::collections::HashSet<u64> = of_conn
            .iter()
            .map(|t| t["conn_id"].as_u64().unwrap())
            .collect();
        assert_eq!(conns.len(), 1, "{protocol}: one connection, reused");
    }
}
