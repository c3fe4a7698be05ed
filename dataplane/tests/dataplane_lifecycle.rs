//! Connections end with their process: 10,000 connections from processes that
//! exit without closing their sockets leave no connection behind in the data
//! plane, their open requests come out marked truncated, and a request made
//! afterwards is captured.

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, Bg, free_port, python, wait_listening};
use serde_json::Value;

/// Processes forked, and connections each opens before it exits.
const CHILDREN: usize = 100;
const CONNS_PER_CHILD: usize = 100;

fn script(name: &str) -> String {
    format!("{}/tests/common/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn connections_of_processes_that_exit_without_closing_are_released() {
    if !common::can_run("connections_of_processes_that_exit_without_closing_are_released") {
        return;
    }
    let _serial = common::serial();
    let port = free_port();
    let _server = Bg::spawn(
        Command::new(python())
            .arg(script("answering_server.py"))
            .arg(port.to_string()),
    );
    wait_listening(port, Duration::from_secs(20));
    let mut clients = Bg::spawn(
        Command::new(python())
            .arg(script("exiting_clients.py"))
            .args([
                port.to_string(),
                CHILDREN.to_string(),
                CONNS_PER_CHILD.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let agent = Agent::start_dataplane(&["--pid".into(), clients.pid().to_string()], &[]);
    clients
        .0
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release clients");
    let mut reply = String::new();
    clients
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut reply)
        .expect("clients' output");
    let status = clients.0.wait().expect("clients");
    assert!(status.success(), "clients failed: {status}");
    assert_eq!(reply.trim(), "HTTP/1.1 200 OK");
    // Exited processes' connections are released half a second after the exit.
    std::thread::sleep(Duration::from_secs(2));
    let stderr = agent.stderr.clone();
    let lines = agent.stop_with(libc::SIGINT);
    let counters = Agent::stopped_counters(&stderr.lock().unwrap());
    let shards = &counters["shards"];

    let total = (CHILDREN * CONNS_PER_CHILD) as u64;
    // Each connection entry released (a connection whose records trailed its
    // process's exit by more than the grace period is released again).
    assert!(
        shards["released_on_exit"].as_u64().unwrap() >= total,
        "{counters}"
    );
    assert_eq!(shards["connections"], 0, "no connection left: {counters}");
    assert_eq!(shards["open_at_stop"], 0, "{counters}");
    let txns: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .collect();
    let leaked = txns
        .iter()
        .filter(|t| t["path"].as_str().is_some_and(|p| p.starts_with("/leak/")))
        .collect::<Vec<_>>();
    assert_eq!(
        leaked.len() as u64,
        total,
        "every request of an exited process comes out"
    );
    assert!(
        leaked
            .iter()
            .all(|t| t["method"] == "GET" && t["truncated"] == true),
        "requests cut off by the exit are marked truncated"
    );
    let after: Vec<&&Value> = txns.iter().filter(|t| t["path"] == "/after").collect();
    assert_eq!(after.len(), 1, "the request made afterwards is captured");
    assert_eq!(after[0]["status"], 200);
    assert_eq!(after[0]["truncated"], false);
}
