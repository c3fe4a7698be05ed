//! `/healthz` fails when a pipeline thread stalls with work waiting. Built only
//! with the `fault-injection` feature (`cargo xtask test` runs it so), whose
//! `TAPWIRE_FAULT_STALL=shard` makes a shard stop for good after it moved a
//! record.

mod common;

use std::time::{Duration, Instant};

use common::{Client, get, http_server, start_agent_with, wait_get};

#[test]
fn healthz_fails_when_a_shard_stalls() {
    if !common::can_run("healthz_fails_when_a_shard_stalls") {
        return;
    }
    let _serial = common::serial();
    let server_port = common::free_port();
    let _server = http_server(server_port);
    let mut client = Client::start(server_port);
    let status_port = common::free_port();
    let mut agent = start_agent_with(
        None,
        client.pid(),
        status_port,
        &[("TAPWIRE_FAULT_STALL", "shard")],
    );
    assert_eq!(get(status_port, "/healthz"), (200, "ok\n".to_owned()));
    // Idle threads still beat: no work is not a stall.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(status_port, "/healthz").0, 200);

    let stalled_at = Instant::now();
    client.requests(3);
    let (_, body) = wait_get(status_port, "/healthz", Duration::from_secs(30), |c, _| {
        c == 503
    });
    let waited = stalled_at.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "reported after {waited:?}, before the 10 s limit"
    );
    assert!(
        body.lines()
            .all(|l| l.starts_with("shard-") && l.contains("has made no progress for")),
        "{body}"
    );
    // The status server itself keeps answering.
    assert_eq!(get(status_port, "/metrics").0, 200);
    // A stuck shard cannot drain: end the agent without a graceful stop.
    let _ = agent.child.kill();
    let _ = agent.child.wait();
}
