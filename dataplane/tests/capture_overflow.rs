//! Forced ring overflow: tiny rings, heavy traffic. Losses are counted, not
//! hidden, and the agent keeps capturing.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn tiny_rings_count_drops_and_agent_keeps_running() {
    if !can_run("tiny_rings_count_drops_and_agent_keeps_running") {
        return;
    }
    let _serial = serial();
    let certs = certs();
    let port = free_port();
    let server = https_server(port, &certs);
    let server_pid = server.0.id();
    let script = servers_py();
    let py = python();
    let cgroup = Cgroup::new("overflow");
    let agent = Agent::start(
        &[
            "--cgroup".into(),
            path_str(&cgroup.path).into(),
            "--pid".into(),
            server_pid.to_string(),
        ],
        &[("TAPWIRE_RING_BYTES", "65536")],
    );
    // 64 KiB rings: a 5 MiB upload is 320 records of 16 KiB in one burst.
    let client = cgroup.spawn(&py, &[&script, "post", &port.to_string(), "5242880"]);
    let _ = finish(client, Duration::from_secs(60));
    let drops = agent.wait_for("non-zero ring drops", Duration::from_secs(10), |v| {
        v["type"] == "drops" && v["ring_full"].as_u64().unwrap_or(0) > 0
    });
    assert!(drops["lost_bytes"].as_u64().unwrap() > 0, "{drops}");
    eprintln!("drops after overflow: {drops}");
    // Still capturing: a small request afterwards arrives whole.
    let url = format!("https://127.0.0.1:{port}/after");
    let after = cgroup.spawn("curl", &["-sk", &url]);
    let after_pid = after.id();
    assert_eq!(
        finish(after, Duration::from_secs(30)),
        b"hello from tls server\n"
    );
    agent.wait_for("the later request", Duration::from_secs(10), |v| {
        v["type"] == "data"
            && v["pid"] == after_pid
            && payload(v).starts_with(b"GET /after HTTP/1.1\r\n")
    });
    let lines = agent.stop_with(libc::SIGTERM);
    let last = last_drops(&lines);
    assert_eq!(last["final"], true);
    assert!(last["ring_full"].as_u64().unwrap() >= drops["ring_full"].as_u64().unwrap());
}
