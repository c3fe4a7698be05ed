//! A store that cannot keep up pushes back instead of dropping: with the
//! agent's standard output not being read, its writer blocks, the stdout
//! store's queue fills, and the shards wait for room (counted as `waits`)
//! rather than drop objects and events. Once output is read again, nothing is
//! missing: the stores dropped nothing, and every request has its event.

mod common;

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Agent, answering_server, free_port, overload_client, stat};
use serde_json::Value;

const CONNS: usize = 4;
const REQUESTS: usize = 48;
/// 192 uploads of 1 MiB: three times the stdout queue's 64 MiB.
const BODY: u64 = 1 << 20;

#[test]
fn a_blocked_stdout_slows_capture_down_and_loses_nothing() {
    if !common::can_run("a_blocked_stdout_slows_capture_down_and_loses_nothing") {
        return;
    }
    let _serial = common::serial();
    let (port, _server) = answering_server();
    let (client, mut client_in, done) = overload_client(port, CONNS, REQUESTS, BODY);
    let status_port = free_port();
    let agent = Agent::start_dataplane(
        &[
            "--pid".into(),
            client.pid().to_string(),
            "--httpd-listen".into(),
            format!("127.0.0.1:{status_port}"),
        ],
        &[],
    );
    // Nobody reads the agent's output until its stdout store is full.
    agent.hold_stdout.store(true, Ordering::Relaxed);
    client_in.write_all(b"go\n").expect("start client");
    // Released as soon as a shard is seen waiting: well inside the second a
    // store waits before it gives up on a stuck output.
    let waits = common::wait_metric(
        status_port,
        "tapwire_store_waits_total",
        Duration::from_secs(60),
    );
    agent.hold_stdout.store(false, Ordering::Relaxed);
    assert!(waits > 0, "the stdout store never filled");
    let made = CONNS * REQUESTS;
    let common::Finished {
        lines,
        stderr,
        counters,
    } = common::finish_overload(agent, &done, made);
    drop(client_in);
    eprintln!("pushback counters: {counters}");

    // The stores lost nothing, and the object store did wait.
    let stops: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("store stopped") && l.contains("accepted"))
        .collect();
    assert_eq!(stops.len(), 2, "an event and an object store: {stops:?}");
    for line in &stops {
        assert_eq!(stat(line, "dropped"), 0, "{line}");
    }
    let object_waits: u64 = stops
        .iter()
        .filter(|l| l.contains("object store"))
        .map(|l| stat(l, "waits"))
        .sum();
    assert!(object_waits > 0, "{stops:?}");
    // Nor did user space anywhere else.
    assert_eq!(counters["routing"]["shard_gone"], 0, "{counters}");
    assert_eq!(counters["shards"]["body_shed_bytes"], 0, "{counters}");

    // Every request has its event, with method, path and status.
    let mut paths: Vec<&str> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .filter(|t| t["method"] == "POST" && t["status"] == 200)
        .filter_map(|t| t["path"].as_str())
        .filter(|p| p.starts_with("/upload/"))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let lost_in_kernel = counters["kernel_drops"]["ring_full"].as_u64().unwrap_or(0);
    assert!(
        paths.len() == made || (lost_in_kernel > 0 && paths.len() * 100 >= made * 99),
        "{} of {made} requests captured; counters {counters}",
        paths.len()
    );
    // Objects named by the events were all kept.
    let not_kept: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .flat_map(|t| t["objects"].as_array().into_iter().flatten())
        .filter(|o| o["kept"] == false)
        .collect();
    assert!(not_kept.is_empty(), "objects not kept: {not_kept:?}");
    // And every object written has its `artifact_record`, though the writer
    // makes those itself while its queue is full.
    let named = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .map(|t| t["objects"].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    let records = lines
        .iter()
        .filter(|v| v["type"] == "artifact_record")
        .count();
    assert_eq!(records, named, "one artifact_record per object stored");
}
