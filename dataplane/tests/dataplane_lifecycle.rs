//! Connections end with their process: 10,000 connections from processes that
//! exit without closing their sockets leave no connection behind in the data
//! plane nor in the kernel maps, their open requests come out marked truncated,
//! and a request made afterwards is captured. A socket closed by `close_range`
//! or replaced by `dup2` ends its connection while its process lives on.

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, Bg, answering_server, python, script};
use serde_json::Value;

/// Processes forked, and connections each opens before it exits.
const CHILDREN: usize = 100;
const CONNS_PER_CHILD: usize = 100;

#[test]
fn connections_of_processes_that_exit_without_closing_are_released() {
    if !common::can_run("connections_of_processes_that_exit_without_closing_are_released") {
        return;
    }
    let _serial = common::serial();
    let (port, _server) = answering_server();
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
    // Exited processes' connections are released half a second after the exit;
    // their kernel map entries at the next sweep (every 2 s).
    std::thread::sleep(Duration::from_secs(5));
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
    // The kernel's tables are back to their idle size: nothing of the exited
    // processes (every selected process has exited by now).
    let maps = counters["kernel_maps"]
        .as_object()
        .unwrap_or_else(|| panic!("no kernel_maps: {counters}"));
    assert!(
        maps["conns"]["reclaimed"].as_u64().unwrap() >= total,
        "each exited process's connection entries reclaimed: {counters}"
    );
    for (map, c) in maps {
        assert_eq!(c["entries"], 0, "{map} keeps entries: {counters}");
    }
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

/// A client that makes two requests, then ends the first connection by
/// `dup2`-ing `/dev/null` over its socket and the second with `close_range`,
/// says `closed` and lives on.
const CLOSING_CLIENT: &str = r#"
import ctypes, os, socket, sys, time
port = int(sys.argv[1])
sys.stdin.readline()
def request(path):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += s.recv(65536)
    return s
a = request(b"/dup2")
b = request(b"/close-range")
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, a.fileno())
libc = ctypes.CDLL(None, use_errno=True)
SYS_close_range = 436
if libc.syscall(SYS_close_range, b.fileno(), b.fileno(), 0) != 0:
    sys.exit("close_range: errno %d" % ctypes.get_errno())
print("closed", flush=True)
time.sleep(120)
"#;

/// Starts the Python client `script` on `port`, held until [`release`].
fn held_client(script: &str, port: u16) -> Bg {
    Bg::spawn(
        Command::new(python())
            .args(["-c", script, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
}

/// Lets a [`held_client`] go; the first line it prints.
fn release(client: &mut Bg) -> String {
    client
        .0
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release the client");
    let mut out = std::io::BufReader::new(client.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("client output");
    line
}

#[test]
fn close_range_and_dup2_over_a_socket_end_its_connection() {
    if !common::can_run("close_range_and_dup2_over_a_socket_end_its_connection") {
        return;
    }
    let _serial = common::serial();
    let (port, _server) = answering_server();
    let mut client = held_client(CLOSING_CLIENT, port);
    let pid = client.pid();
    let agent = Agent::start_dataplane(&["--pid".into(), pid.to_string()], &[]);
    let line = release(&mut client);
    assert_eq!(line.trim(), "closed");
    for path in ["/dup2", "/close-range"] {
        let txn = agent.wait_for(path, Duration::from_secs(10), |v| {
            v["type"] == "http_transaction" && v["path"] == path
        });
        let conn_id = txn["conn_id"].clone();
        agent.wait_for(&format!("close of {path}"), Duration::from_secs(10), |v| {
            v["type"] == "connection" && v["event"] == "close" && v["conn_id"] == conn_id
        });
    }
    assert!(
        client.0.try_wait().expect("client").is_none(),
        "the connections ended while their process was alive"
    );
    drop(client);
    agent.stop_with(libc::SIGINT);
}

/// Context switches so far of each of `pid`'s threads, by thread name (names
/// shared by several threads are summed).
fn switches_by_thread(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let n: u64 = status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        *out.entry(name.trim().to_string()).or_insert(0) += n;
    }
    out
}

/// A client that makes one request when told, then lives on.
const ONE_REQUEST_CLIENT: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
sys.stdin.readline()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /after-idle HTTP/1.1\r\nHost: x\r\n\r\n")
reply = b""
while b"\r\n\r\n" not in reply:
    reply += s.recv(65536)
print(reply.split(b"\r\n")[0].decode(), flush=True)
time.sleep(120)
"#;

/// An idle agent sleeps: with no traffic its shards wake about once a
/// second, its control thread about once, its ring readers ten times a
/// second each; and the first request after the quiet spell is captured.
#[test]
fn an_idle_agent_sleeps_and_wakes_for_the_next_request() {
    if !common::can_run("an_idle_agent_sleeps_and_wakes_for_the_next_request") {
        return;
    }
    let _serial = common::serial();
    let (port, _server) = answering_server();
    let mut client = held_client(ONE_REQUEST_CLIENT, port);
    let agent = Agent::start_dataplane(&["--pid".into(), client.pid().to_string()], &[]);
    // Past the start-up and the shards' two seconds of ticking after their
    // last frame.
    std::thread::sleep(Duration::from_secs(4));
    let secs = 5;
    let before = switches_by_thread(agent.child.id());
    std::thread::sleep(Duration::from_secs(secs));
    let after = switches_by_thread(agent.child.id());
    let mut rates = Vec::new();
    for (name, n) in &after {
        let rate = n.saturating_sub(before.get(name).copied().unwrap_or(0)) as f64 / secs as f64;
        rates.push((name.clone(), rate));
    }
    let shards: Vec<_> = rates
        .iter()
        .filter(|(n, _)| n.starts_with("shard-"))
        .collect();
    assert!(!shards.is_empty(), "no shard thread among {rates:?}");
    for (name, rate) in &rates {
        // Each reader thread is counted alone: `ring-N`.
        let limit = if name.starts_with("ring-") { 15.0 } else { 3.0 };
        assert!(
            *rate <= limit,
            "{name} woke {rate:.1} times a second while idle (at most {limit}): {rates:?}"
        );
    }
    let line = release(&mut client);
    assert_eq!(line.trim(), "HTTP/1.1 200 OK");
    let txn = agent.wait_for(
        "the request after the quiet spell",
        Duration::from_secs(5),
        |v| v["type"] == "http_transaction" && v["path"] == "/after-idle",
    );
    assert_eq!(txn["status"], 200);
    drop(client);
    agent.stop_with(libc::SIGINT);
}
