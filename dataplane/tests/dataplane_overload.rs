//! Graceful overload: with rings far too small for the load, the probes copy
//! only the first bytes of each call once a ring passes its high-water mark
//! and count the rest. Every request keeps its metadata (method, path,
//! status), the bodies left out are marked `truncated` with their true size,
//! and every byte not copied is accounted for.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{Agent, answering_server, overload_client};
use serde_json::Value;

const CONNS: usize = 8;
const REQUESTS: usize = 40;
/// Each request is one write of its head and this many body bytes: 16
/// records of 16 KiB when copied whole, as much as the ring below holds.
const BODY: u64 = 256 << 10;
/// Per-CPU ring: the high-water mark (half, the default) is passed within
/// each upload; above it the prefixes of about 30 calls fit while the reader
/// catches up.
const RING_BYTES: u32 = 256 << 10;

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{} in {v}", path.join(".")))
}

#[test]
fn tiny_rings_keep_every_request_and_count_every_byte_not_copied() {
    if !common::can_run("tiny_rings_keep_every_request_and_count_every_byte_not_copied") {
        return;
    }
    let _serial = common::serial();
    let (port, _server) = answering_server();
    let (client, mut client_in, done) = overload_client(port, CONNS, REQUESTS, BODY);
    // Only the client is captured: each of its uploads is one write.
    let agent = Agent::start_dataplane(
        &[
            "--pid".into(),
            client.pid().to_string(),
            "--ring-bytes".into(),
            RING_BYTES.to_string(),
        ],
        &[],
    );
    client_in.write_all(b"go\n").expect("start client");
    let done = done
        .recv_timeout(Duration::from_secs(60))
        .expect("the client finished within 60 s");
    assert_eq!(done.trim(), "done", "every request was answered");
    // Let the agent drain what the rings still hold.
    std::thread::sleep(Duration::from_secs(1));
    let stderr = agent.stderr.clone();
    let lines = agent.stop_with(libc::SIGINT);
    drop(client_in);
    let counters = Agent::stopped_counters(&stderr.lock().unwrap());
    eprintln!("overload counters: {counters}");

    // The rings did pass their mark: bytes were left out in the kernel.
    let kernel_records = u64_at(&counters, &["kernel_drops", "overload_records"]);
    let kernel_shed = u64_at(&counters, &["kernel_drops", "overload_shed_bytes"]);
    assert!(kernel_shed > 0, "no overload happened: {counters}");
    // Every byte not copied is accounted for where it landed, by reason.
    let shards = &counters["shards"];
    let landed: u64 = [
        "overload_body_bytes",
        "overload_resync_bytes",
        "overload_unparsed_bytes",
        "overload_late_bytes",
    ]
    .iter()
    .map(|k| u64_at(shards, &[k]))
    .sum();
    assert_eq!(landed, kernel_shed, "{counters}");
    assert_eq!(u64_at(shards, &["overload_records"]), kernel_records);
    assert_eq!(counters["routing"]["shard_gone"], 0);

    let uploads: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .filter(|t| {
            t["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/upload/"))
        })
        .collect();
    let whole: Vec<&&Value> = uploads
        .iter()
        .filter(|t| t["method"] == "POST" && t["status"] == 200)
        .collect();
    let made = CONNS * REQUESTS;
    eprintln!(
        "overload: {} of {made} requests with method, path and status; {} events in all",
        whole.len(),
        uploads.len()
    );
    // At least 99% of the requests made have their event, metadata kept.
    let mut paths: Vec<&str> = whole.iter().filter_map(|t| t["path"].as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert!(
        paths.len() * 100 >= made * 99,
        "{} of {made} requests captured; counters {counters}",
        paths.len()
    );
    // Bodies: the true size is reported; a body whose object holds less than
    // that (bytes left out) is marked `truncated`.
    let mut shed_bodies = 0;
    for t in &whole {
        if t["gap"] == true {
            continue;
        }
        assert_eq!(t["request_body_bytes"], BODY, "{t}");
        let kept = t["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["role"] == "request_body")
            .map_or(0, |o| o["size"].as_u64().expect("object size"));
        if kept < BODY {
            shed_bodies += 1;
            assert_eq!(t["truncated"], true, "a shed body is marked: {t}");
        }
    }
    assert!(shed_bodies > 0, "no body was shed; counters {counters}");
    assert!(
        u64_at(shards, &["overload_body_bytes"]) > 0,
        "bytes skipped inside bodies by their length: {counters}"
    );
}
