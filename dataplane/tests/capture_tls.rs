//! TLS capture with real programs: curl, python (`_ex` calls), node (static
//! OpenSSL), and where the probes sit.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest as _, Sha256};

/// The end of the HTTP head in `bytes`.
fn body_after_head(bytes: &[u8]) -> &[u8] {
    let at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head")
        + 4;
    &bytes[at..]
}

#[test]
fn curl_https_exact_bytes_direction_and_addresses() {
    if !can_run("curl_https_exact_bytes_direction_and_addresses") {
        return;
    }
    // The TLS calls are probed by uprobe sessions on a kernel that has them.
    let mode = if common::kernel_has_uprobe_sessions() {
        "tls calls as uprobe sessions"
    } else {
        "tls calls probed with a uprobe and a uretprobe"
    };
    curl_https_exact_bytes(&[], mode);
}

/// The same with a uprobe and a uretprobe per call, as on kernels before 6.13.
#[test]
fn curl_https_exact_bytes_with_uprobes_and_uretprobes() {
    if !can_run("curl_https_exact_bytes_with_uprobes_and_uretprobes") {
        return;
    }
    curl_https_exact_bytes(
        &["--uprobe-sessions", "off"],
        "tls calls probed with a uprobe and a uretprobe (--uprobe-sessions off)",
    );
}

/// curl, started after the agent, against a TLS server: the exact bytes at
/// both ends, with the agent run with `extra` arguments and logging `mode`.
fn curl_https_exact_bytes(extra: &[&str], mode: &str) {
    let _serial = serial();
    let certs = certs();
    let port = free_port();
    let server = https_server(port, &certs);
    let server_pid = server.0.id();
    let url = format!("https://127.0.0.1:{port}/path");
    let cgroup = Cgroup::new("curl");
    let started = Instant::now();
    let mut args: Vec<String> = vec![
        "--cgroup".into(),
        path_str(&cgroup.path).into(),
        "--pid".into(),
        server_pid.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let agent = Agent::start(&args, &[]);
    agent.wait_stderr(mode, Duration::from_secs(5));
    // Started after the agent, URL on the command line.
    let curl = cgroup.spawn("curl", &["-sk", "--http1.1", &url]);
    let curl_pid = curl.id();
    let out = finish(curl, Duration::from_secs(30));
    assert_eq!(out, b"hello from tls server\n");
    agent.wait_for("curl's connection close", Duration::from_secs(10), |v| {
        v["type"] == "close" && v["pid"] == curl_pid
    });
    agent.wait_for("server's close", Duration::from_secs(10), |v| {
        v["type"] == "close" && v["pid"] == server_pid
    });
    let lines = agent.stop_with(libc::SIGINT);

    let open = conn_of(&lines, curl_pid, port).expect("an open line for curl's connection");
    assert_eq!(open["role"], "client");
    assert_eq!(open["comm"], "curl");
    assert_eq!(open["family"], "ipv4");
    assert_eq!(open["remote"], format!("127.0.0.1:{port}"));
    let conn = open["conn"].as_u64().unwrap();
    let curl_port = port_of(&open["local"]);
    let sopen = conn_at(&lines, server_pid, port).expect("an open line for the server side");
    assert_eq!(sopen["role"], "server");
    assert_eq!(sopen["remote"], format!("127.0.0.1:{curl_port}"));
    let sconn = sopen["conn"].as_u64().unwrap();

    for d in data_of(&lines, conn).iter().chain(&data_of(&lines, sconn)) {
        assert_eq!(
            d["source"], "tls",
            "ciphertext or plain data on a TLS connection: {d}"
        );
    }
    for d in data_of(&lines, conn) {
        assert_eq!(d["pid"], curl_pid);
    }
    let request = stream(&lines, conn, "egress");
    let expected_start =
        format!("GET /path HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: curl/");
    assert!(
        request.starts_with(expected_start.as_bytes()) && request.ends_with(b"Accept: */*\r\n\r\n"),
        "request bytes: {:?}",
        String::from_utf8_lossy(&request)
    );
    let response = stream(&lines, conn, "ingress");
    assert!(
        response.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(body_after_head(&response), b"hello from tls server\n");
    // The server saw exactly the same bytes, the other way round.
    assert_eq!(stream(&lines, sconn, "ingress"), request);
    assert_eq!(stream(&lines, sconn, "egress"), response);
    let drops = last_drops(&lines);
    assert_eq!(drops["final"], true);
    eprintln!("curl test took {:?}", started.elapsed());
}

#[test]
fn python_ex_calls_5mib_post_reassembles_on_both_sides() {
    if !can_run("python_ex_calls_5mib_post_reassembles_on_both_sides") {
        return;
    }
    let _serial = serial();
    const SIZE: usize = 5 * 1024 * 1024;
    let certs = certs();
    let port = free_port();
    let server = https_server(port, &certs);
    let server_pid = server.0.id();
    let py = python();
    let script = servers_py();
    let cgroup = Cgroup::new("python");
    // Both sides' 5 MiB may land in one CPU's 16 MiB ring, past graceful
    // overload's default mark (half the ring) while the reader is still
    // writing out earlier records: exact bytes are asserted here, so the
    // probes copy every byte (overload is tested in dataplane_overload).
    let agent = Agent::start(
        &[
            "--cgroup".into(),
            path_str(&cgroup.path).into(),
            "--pid".into(),
            server_pid.to_string(),
            "--overload-percent".into(),
            "100".into(),
        ],
        &[],
    );
    let client = cgroup.spawn(
        &py,
        &[&script, "post", &port.to_string(), &SIZE.to_string()],
    );
    let client_pid = client.id();
    let out = String::from_utf8(finish(client, Duration::from_secs(60))).unwrap();
    let mut words = out.split_whitespace();
    let (sent_hash, server_hash) = (words.next().unwrap(), words.next().unwrap());
    assert_eq!(
        sent_hash, server_hash,
        "the server received the body intact"
    );
    agent.wait_for("client close", Duration::from_secs(20), |v| {
        v["type"] == "close" && v["pid"] == client_pid
    });
    agent.wait_for("server close", Duration::from_secs(20), |v| {
        v["type"] == "close" && v["pid"] == server_pid
    });
    let lines = agent.stop_with(libc::SIGTERM);

    let open = conn_of(&lines, client_pid, port).expect("client connection");
    let conn = open["conn"].as_u64().unwrap();
    let sopen = conn_at(&lines, server_pid, port).expect("server connection");
    let sconn = sopen["conn"].as_u64().unwrap();
    for (side, c, dir) in [("client", conn, "egress"), ("server", sconn, "ingress")] {
        let bytes = stream(&lines, c, dir);
        let body = body_after_head(&bytes);
        assert_eq!(body.len(), SIZE, "{side}: body length");
        let hash = hex(&Sha256::digest(body));
        assert_eq!(
            hash, sent_hash,
            "{side}: reassembled body differs from the sent bytes"
        );
        // Sequence numbers are gap-free from the open record on.
        let mut seqs: Vec<u64> = lines
            .iter()
            .filter(|v| v["conn"] == c && v["type"] != "drops")
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        seqs.sort_unstable();
        assert!(
            seqs.iter().enumerate().all(|(i, &s)| i as u64 == s),
            "{side}: sequence gap"
        );
        for d in data_of(&lines, c) {
            assert_eq!(d["source"], "tls");
        }
    }
    let drops = last_drops(&lines);
    for reason in [
        "ring_full",
        "copy_failed",
        "tls_no_fd",
        "call_too_large",
        "lost_bytes",
        "decode_errors",
    ] {
        assert_eq!(drops[reason], 0, "drops: {drops}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn node_https_request_is_captured() {
    if !can_run("node_https_request_is_captured") {
        return;
    }
    let _serial = serial();
    let certs = certs();
    let port = free_port();
    let server = https_server(port, &certs);
    let server_pid = server.0.id();
    // The request leaves after a short pause: node links OpenSSL into its own
    // executable, first seen when node execs unless a node ran when the agent
    // started; its probes are live once that file's symbols are read
    // (`docs/capture.md`).
    let script = format!(
        "setTimeout(() => require('https').get({{host: '127.0.0.1', port: {port}, path: '/from-node', \
         rejectUnauthorized: false}}, r => {{ let b = ''; r.on('data', d => b += d); \
         r.on('end', () => process.stdout.write(b)); }}), 1500);"
    );
    let cgroup = Cgroup::new("node");
    let agent = Agent::start(
        &[
            "--cgroup".into(),
            path_str(&cgroup.path).into(),
            "--pid".into(),
            server_pid.to_string(),
        ],
        &[],
    );
    let node = cgroup.spawn("node", &["-e", &script]);
    let node_pid = node.id();
    let out = finish(node, Duration::from_secs(60));
    assert_eq!(out, b"hello from tls server\n");
    agent.wait_for("node's request", Duration::from_secs(10), |v| {
        v["type"] == "data" && v["pid"] == node_pid && v["direction"] == "egress"
    });
    agent.wait_for("node's response", Duration::from_secs(10), |v| {
        v["type"] == "data" && v["pid"] == node_pid && v["direction"] == "ingress"
    });
    let lines = agent.stop_with(libc::SIGINT);
    let open = conn_of(&lines, node_pid, port).expect("node's connection");
    assert_eq!(open["role"], "client");
    let conn = open["conn"].as_u64().unwrap();
    let request = stream(&lines, conn, "egress");
    assert!(
        request.starts_with(b"GET /from-node HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request)
    );
    let response = stream(&lines, conn, "ingress");
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(response.ends_with(b"hello from tls server\n"));
    for d in data_of(&lines, conn) {
        assert_eq!(d["source"], "tls");
    }
}

/// Debian's libssl.so.3 and node: every read/write probe sits on an
/// instruction the kernel emulates (the tests above capture exact bytes with
/// this placement).
#[test]
fn probes_sit_on_emulated_instructions() {
    use iced_x86::{Decoder, DecoderOptions};
    use tapwire::capture::{
        libraries::plan,
        placement::{PointKind, emulated},
    };
    for path in ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/bin/node"] {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let (_, points) = plan(&data).unwrap_or_else(|e| panic!("plan {path}: {e}"));
        let calls: Vec<_> = points
            .iter()
            .filter(|p| p.kind == PointKind::Call)
            .collect();
        assert!(!calls.is_empty(), "{path}: no read/write probe points");
        let mut cookies: Vec<u64> = Vec::new();
        for p in &calls {
            let off = p.file_offset as usize;
            let mut d = Decoder::with_ip(64, &data[off..off + 16], p.vaddr, DecoderOptions::NONE);
            let insn = d.decode();
            let what = emulated(&insn).unwrap_or_else(|| {
                panic!("{path}: {} at {:#x} starts with {insn}", p.symbol, p.vaddr)
            });
            assert!(p.placement.emulated(), "{path}: {p:?}");
            eprintln!(
                "{path}: {} -> {:#x} ({what}: {insn}) {:?}",
                p.symbol, p.vaddr, p.placement
            );
            cookies.push(p.cookie);
        }
        // Reads and writes are both covered.
        assert!(
            cookies.iter().any(|&c| c == 1 || c == 2),
            "{path}: no read probe"
        );
        assert!(
            cookies.iter().any(|&c| c == 3 || c == 4),
            "{path}: no write probe"
        );
    }
}
