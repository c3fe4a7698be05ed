//! Threads killed inside `SSL_read`: the probes' in-flight entries for them
//! are reclaimed at thread exit and counted, and TLS capture goes on.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, Bg, Gated, certs, free_port, https_server, python, servers_py};

const THREADS: u64 = 1_000;

#[test]
fn threads_killed_inside_ssl_read_are_reclaimed_and_capture_goes_on() {
    if !common::can_run("threads_killed_inside_ssl_read_are_reclaimed_and_capture_goes_on") {
        return;
    }
    let _serial = common::serial();
    let certs = certs();
    let port = free_port();
    let _server = https_server(port, &certs);
    let mut stuck = Bg::spawn(
        Command::new(python())
            .arg(format!(
                "{}/tests/common/stuck_readers.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args([port.to_string(), THREADS.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut later = Gated::new(
        &python(),
        &[&servers_py(), "post", &port.to_string(), "1000"],
    );
    let agent = Agent::start_dataplane(
        &[
            "--pid".into(),
            stuck.pid().to_string(),
            "--pid".into(),
            later.pid().to_string(),
        ],
        &[],
    );
    // The readers block in SSL_read only now, with the probes attached.
    let mut go = stuck.0.stdin.take().expect("stdin");
    go.write_all(b"go\n").expect("start the readers");
    let mut ready = String::new();
    BufReader::new(stuck.0.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("stuck readers");
    assert_eq!(ready.trim(), "ready");
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(stuck.pid() as i32, libc::SIGKILL) };
    let _ = stuck.0.wait();
    later.go();
    let reply = String::from_utf8(later.finish(Duration::from_secs(60))).expect("utf-8");
    std::thread::sleep(Duration::from_secs(1));
    let stderr = agent.stderr.clone();
    let lines = agent.stop_with(libc::SIGINT);
    let counters = Agent::stopped_counters(&stderr.lock().unwrap());

    // A thread not yet scheduled into its read when the kill came has no
    // entry to reclaim; on a busy machine a few may lag that long.
    let reclaimed = counters["kernel_drops"]["abandoned_call"].as_u64().unwrap();
    eprintln!("reclaimed {reclaimed} in-flight entries of {THREADS} killed threads");
    assert!(
        reclaimed >= THREADS * 9 / 10,
        "threads killed inside SSL_read left entries, reclaimed and counted: {counters}"
    );
    assert_eq!(counters["kernel_drops"]["map_insert"], 0, "{counters}");
    let post = lines
        .iter()
        .find(|v| v["type"] == "http_transaction" && v["path"] == "/upload")
        .unwrap_or_else(|| panic!("the later TLS request is captured; reply {reply}"));
    assert_eq!(post["method"], "POST");
    assert_eq!(post["status"], 200);
    assert_eq!(post["tls"], true);
    assert_eq!(post["request_body_bytes"], 1000);
}
