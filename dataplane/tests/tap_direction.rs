//! `tap.direction` and `tap.ignore_loopback`, applied in the kernel: excluded
//! connections produce no records (their payload never enters a ring) and are
//! counted; recorded transactions name their direction in Qtap's words.
//!
//! Capture is limited to this test's process tree (`--pid` of the test): the
//! client is `curl`, the servers are a thread of the test on loopback and a
//! python server inside a network namespace the test creates, reached over a
//! veth pair at a private address (internal) and at a documentation-range
//! address (203.0.113.0/24, external).

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, Bg, path_str, python};
use serde_json::Value;

/// A loopback HTTP/1.1 server on a thread of this process answering every
/// request with a short body.
fn serve_loopback() -> u16 {
    common::serve_loopback_http(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
    })
}

/// Runs `curl -s URL`, asserting success.
fn curl(url: &str) {
    let out = Command::new("curl")
        .args(["-s", "--noproxy", "*", "--max-time", "10", url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
}

/// The agent with `tap` (YAML under `tap:`) capturing this test's process tree.
/// `loopback_port`'s server thread is already blocked in `accept`, entered
/// before the probes were attached: one throwaway connection brings it back
/// into `accept` under the probes, so the next connection is seen as accepted
/// (server side) rather than found open.
fn agent_with(dir: &std::path::Path, tap: &str, loopback_port: u16) -> Agent {
    let config = dir.join("qpoint.yaml");
    let tap: String = tap.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(
        &config,
        format!(
            "version: 2\nservices:\n  event_stores: [{{id: out, type: stdout}}]\n  \
             object_stores: [{{id: out, type: stdout}}]\nstacks:\n  capture:\n    plugins:\n      \
             - type: http_capture\n        config: {{level: full}}\n      - type: report_usage\n\
             tap:\n  http: {{stack: capture}}\n{tap}"
        ),
    )
    .unwrap();
    let agent = Agent::start_dataplane(
        &[
            "--config".into(),
            path_str(&config).into(),
            "--pid".into(),
            std::process::id().to_string(),
        ],
        &[],
    );
    drop(TcpStream::connect(("127.0.0.1", loopback_port)).expect("throwaway connection"));
    std::thread::sleep(Duration::from_millis(200));
    agent
}

/// Transactions of `path`.
fn transactions<'a>(lines: &'a [Value], path: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "http_transaction" && v["path"] == path)
        .collect()
}

/// The `kernel_excluded` counters of the agent's final `stopped` line.
fn excluded(agent_stderr: &[String]) -> Value {
    Agent::stopped_counters(agent_stderr)["kernel_excluded"].clone()
}

/// Stops the agent; its stdout lines and stderr lines.
fn stop(agent: Agent) -> (Vec<Value>, Vec<String>) {
    let stderr = std::sync::Arc::clone(&agent.stderr);
    let lines = agent.stop_with(libc::SIGINT);
    let err = stderr.lock().unwrap().clone();
    (lines, err)
}

#[test]
fn direction_egress_records_client_side_only_and_ingress_server_side_only() {
    if !common::can_run("direction_egress_records_client_side_only") {
        return;
    }
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let port = serve_loopback();
    let curl_pid_of = |v: &Value| v["pid"] != std::process::id();

    let agent = agent_with(dir.path(), "direction: egress", port);
    curl(&format!("http://127.0.0.1:{port}/egress-only"));
    agent.wait_for("the client's transaction", Duration::from_secs(20), |v| {
        v["type"] == "http_transaction" && v["path"] == "/egress-only"
    });
    std::thread::sleep(Duration::from_millis(500));
    let (lines, stderr) = stop(agent);
    let seen = transactions(&lines, "/egress-only");
    assert_eq!(seen.len(), 1, "client side only: {seen:?}");
    assert!(curl_pid_of(seen[0]), "{}", seen[0]);
    assert_eq!(seen[0]["direction"], "egress-internal", "{}", seen[0]);
    let server_side = |v: &&Value| {
        v["local"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!(":{port}")))
    };
    assert_eq!(
        lines.iter().find(server_side),
        None,
        "nothing of the server side"
    );
    assert!(excluded(&stderr)["direction"].as_u64().unwrap() >= 1);

    let agent = agent_with(dir.path(), "direction: ingress", port);
    curl(&format!("http://127.0.0.1:{port}/ingress-only"));
    agent.wait_for("the server's transaction", Duration::from_secs(20), |v| {
        v["type"] == "http_transaction" && v["path"] == "/ingress-only"
    });
    std::thread::sleep(Duration::from_millis(500));
    let (lines, stderr) = stop(agent);
    let seen = transactions(&lines, "/ingress-only");
    assert_eq!(seen.len(), 1, "server side only: {seen:?}");
    assert_eq!(seen[0]["pid"], std::process::id(), "{}", seen[0]);
    assert_eq!(seen[0]["direction"], "ingress", "{}", seen[0]);
    assert!(excluded(&stderr)["direction"].as_u64().unwrap() >= 1);
}

/// A network namespace with one veth pair to it; removed on drop.
struct Netns {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

impl Netns {
    /// `internal` and `external` are the namespace's addresses; the host side
    /// takes the address before each (both /30).
    fn create(internal: [u8; 4], external: [u8; 4]) -> Netns {
        let tag = std::process::id() % 100_000;
        let ns = Netns {
            name: format!("twcfg{tag}"),
            host_if: format!("twc{tag}h"),
        };
        let peer = format!("twc{tag}n");
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        for addr in [internal, external] {
            let mut host = addr;
            host[3] -= 1;
            let host = format!("{}.{}.{}.{}/30", host[0], host[1], host[2], host[3]);
            let inside = format!("{}.{}.{}.{}/30", addr[0], addr[1], addr[2], addr[3]);
            ip(&["addr", "add", &host, "dev", &ns.host_if]);
            ip(&["-n", &ns.name, "addr", "add", &inside, "dev", &peer]);
        }
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", &peer, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn ignore_loopback_keeps_veth_traffic_and_names_internal_and_external() {
    if !common::can_run("ignore_loopback_keeps_veth_traffic") {
        return;
    }
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let third = (std::process::id() % 250) as u8;
    let internal = [10, 213, third, 2];
    let external = [203, 0, 113, 4 * (third % 60) + 2];
    let ns = Netns::create(internal, external);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("page"), b"from the namespace\n").unwrap();
    let server = Command::new("ip")
        .args(["netns", "exec", &ns.name, &python(), "-m", "http.server"])
        .args([
            "--bind",
            "0.0.0.0",
            "--directory",
            path_str(www.path()),
            "8080",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server in the namespace");
    let _server = Bg(server);
    let at = |a: [u8; 4]| format!("{}.{}.{}.{}:8080", a[0], a[1], a[2], a[3]);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(at(internal)).is_err() {
        assert!(std::time::Instant::now() < until, "namespace server not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = serve_loopback();

    let agent = agent_with(dir.path(), "ignore_loopback: true", port);
    curl(&format!("http://127.0.0.1:{port}/on-loopback"));
    curl(&format!("http://{}/page?internal", at(internal)));
    curl(&format!("http://{}/page?external", at(external)));
    for what in ["internal", "external"] {
        agent.wait_for(what, Duration::from_secs(20), |v| {
            v["type"] == "http_transaction"
                && v["path"] == format!("/page?{what}")
                && v["direction"] != "ingress"
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let (lines, stderr) = stop(agent);
    assert!(
        transactions(&lines, "/on-loopback").is_empty(),
        "loopback traffic recorded"
    );
    assert!(
        lines.iter().all(|v| {
            !v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.") || r.starts_with("[::1]"))
        }),
        "a loopback connection was recorded"
    );
    for (what, word) in [
        ("internal", "egress-internal"),
        ("external", "egress-external"),
    ] {
        let client: Vec<&Value> = transactions(&lines, &format!("/page?{what}"))
            .into_iter()
            .filter(|v| v["direction"] != "ingress")
            .collect();
        assert_eq!(client.len(), 1, "{what}: {client:?}");
        assert_eq!(client[0]["direction"], word, "{}", client[0]);
    }
    // Both ends of the loopback request were seen by the probes and left out.
    assert!(excluded(&stderr)["loopback"].as_u64().unwrap() >= 2);
}
