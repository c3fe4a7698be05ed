//! The agent never captures its own traffic. Here it runs inside its own
//! selection (`--pid` of this test's process tree, which holds the agent, a
//! SeaweedFS S3 server, a plain-HTTP pulse receiver and an HTTP server) with an
//! `insecure: true` S3 store and an `http://` pulse store, both on loopback:
//! neither end of its uploads is recorded, while a request the test makes is.
//!
//! SeaweedFS is inside the selection, so its own internal traffic (the S3
//! gateway writing to its volume server) is captured and stored in turn: the
//! test keeps the agent's run short.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Agent, path_str, port_of};
use serde_json::Value;

const BUCKET: &str = "self-traffic";

/// A loopback HTTP/1.1 server on a thread of this process (so inside the
/// selection) answering every request with `body`; counts requests.
fn serve(body: &'static [u8]) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let count = Arc::clone(&count);
            std::thread::spawn(move || answer(conn, body, &count));
        }
    });
    (port, served)
}

/// Answers the requests of one keep-alive connection.
fn answer(conn: TcpStream, body: &[u8], served: &AtomicUsize) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut request_body = vec![0; length];
        if reader.read_exact(&mut request_body).is_err() {
            return;
        }
        served.fetch_add(1, Ordering::SeqCst);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(body).is_err() {
            return;
        }
    }
}

/// Waits until no TCP connection to or from `port` is established (`/proc/net/tcp*`),
/// so that every connection to it after this is made by the agent.
fn wait_no_connections(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    let needle = format!(":{port:04X} ");
    loop {
        let busy = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    fields.len() > 3
                        && fields[3] == "01"
                        && (format!("{} ", fields[1]).contains(&needle)
                            || format!("{} ", fields[2]).contains(&needle))
                })
        });
        if !busy {
            return;
        }
        assert!(Instant::now() < until, "connections to port {port} linger");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(weed: &common::Weed, spool: &std::path::Path, pulse_port: u16) -> String {
    let store = weed.store_yaml("s3_store", BUCKET, spool, "fatal");
    let indented: String = store.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "version: 2\nservices:\n  event_stores:\n    - id: console\n      type: stdout\n    \
         - id: pulse\n      type: pulse\n      url: http://127.0.0.1:{pulse_port}\n      \
         batch_max_delay_ms: 100\n  object_stores:\n    -\n{indented}"
    )
}

/// The port of an event's `local` or `remote` address, if it has one.
fn ports(event: &Value) -> [Option<u16>; 2] {
    [&event["local"], &event["remote"]].map(|a| a.is_string().then(|| port_of(a)))
}

#[test]
fn neither_end_of_the_agents_own_uploads_is_recorded() {
    if !common::can_run("neither_end_of_the_agents_own_uploads_is_recorded") {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket(BUCKET);
    let _serial = common::serial();
    let (pulse_port, pulse_requests) = serve(b"");
    let (app_port, _) = serve(b"hello from the app\n");
    let s3_port: u16 = weed
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("s3 port");

    // The bucket was made by this test: its connection must be gone before the
    // agent starts, so that S3 sees only the agent's.
    wait_no_connections(s3_port);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("qpoint.yaml");
    std::fs::write(
        &config_path,
        config(&weed, &dir.path().join("spool"), pulse_port),
    )
    .unwrap();
    let agent = Agent::start_dataplane(
        &[
            "--config".into(),
            path_str(&config_path).into(),
            "--pid".into(),
            std::process::id().to_string(),
        ],
        &[],
    );
    let agent_pid = agent.child.id();

    let out = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{app_port}/made-by-the-test"),
        ])
        .output()
        .expect("run curl");
    assert_eq!(out.stdout, b"hello from the app\n");
    agent.wait_for("the test's transaction", Duration::from_secs(20), |v| {
        v["type"] == "http_transaction" && v["path"] == "/made-by-the-test"
    });
    // The agent's own traffic happens: events posted to pulse, objects put to S3.
    let until = Instant::now() + Duration::from_secs(20);
    while pulse_requests.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "the agent never posted to pulse");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = Arc::clone(&agent.stderr);
    let lines = agent.stop_with(libc::SIGINT);
    let keys = common::block_on(weed.client(BUCKET).list_keys()).unwrap();
    assert!(!keys.is_empty(), "the agent stored no object in S3");

    // The test's own request is recorded, on both sides.
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction" && v["path"] == "/made-by-the-test")
        .collect();
    assert_eq!(mine.len(), 2, "client and server side: {mine:?}");

    // Nothing of the agent's: not its own sockets, nor their peer ends at the
    // S3 and pulse servers.
    for event in &lines {
        assert_ne!(event["pid"], agent_pid, "the agent's own socket: {event}");
        for port in ports(event).into_iter().flatten() {
            assert!(
                port != s3_port && port != pulse_port,
                "an end of the agent's upload traffic was recorded: {event}"
            );
        }
    }
    // The servers' ends were seen by the probes and left out, counted.
    let counters = Agent::stopped_counters(&stderr.lock().unwrap());
    let agent_peer = counters["kernel_excluded"]["agent_peer"].as_u64().unwrap();
    assert!(
        agent_peer >= 2,
        "expected the S3 and pulse server ends left out: {counters}"
    );
}
