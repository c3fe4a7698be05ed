//! Plaintext HTTP through the syscall tracepoints, TLS ciphertext never shown
//! as plain data, and processes started after the agent.

mod common;

use std::{process::Command, time::Duration};

use common::*;

/// Starts python's `http.server` on `port` in `cgroup`.
fn http_server(cgroup: &Cgroup, port: u16, dir: &std::path::Path) -> Bg {
    let mut cmd = cgroup.command(python());
    cmd.args([
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        path_str(dir),
        &port.to_string(),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    Bg(cmd.spawn().expect("spawn http.server"))
}

/// True if some data payload of `conn` starts like a TLS record.
fn has_tls_record(lines: &[serde_json::Value], conn: u64) -> bool {
    data_of(lines, conn).iter().any(|d| {
        let p = payload(d);
        p.len() >= 3 && (0x14..=0x17).contains(&p[0]) && p[1] == 3
    })
}

#[test]
fn plaintext_http_captured_and_tls_ciphertext_never_plain() {
    if !can_run("plaintext_http_captured_and_tls_ciphertext_never_plain") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.txt"), b"plain hello\n").expect("write file");
    let port = free_port();
    let tls_port = free_port();
    let certs = certs();
    let tls_server = https_server(tls_port, &certs);
    let tls_pid = tls_server.0.id();
    let cgroup = Cgroup::new("plain");
    let agent = Agent::start(
        &[
            "--cgroup".into(),
            path_str(&cgroup.path).into(),
            "--pid".into(),
            tls_pid.to_string(),
        ],
        &[],
    );
    // The plain server and both clients start after the agent.
    let server = http_server(&cgroup, port, dir.path());
    let server_pid = server.0.id();
    wait_listening(port, Duration::from_secs(20));
    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let curl = cgroup.spawn("curl", &["-s", &url]);
    let curl_pid = curl.id();
    assert_eq!(finish(curl, Duration::from_secs(30)), b"plain hello\n");
    let tls_url = format!("https://127.0.0.1:{tls_port}/x");
    let tls_curl = cgroup.spawn("curl", &["-sk", &tls_url]);
    let tls_curl_pid = tls_curl.id();
    assert_eq!(
        finish(tls_curl, Duration::from_secs(30)),
        b"hello from tls server\n"
    );
    agent.wait_for("plain curl close", Duration::from_secs(10), |v| {
        v["type"] == "close" && v["pid"] == curl_pid
    });
    agent.wait_for("tls curl close", Duration::from_secs(10), |v| {
        v["type"] == "close" && v["pid"] == tls_curl_pid
    });
    let lines = agent.stop_with(libc::SIGTERM);
    drop(server);

    let open = conn_of(&lines, curl_pid, port).expect("plain curl connection");
    let conn = open["conn"].as_u64().unwrap();
    let request = stream(&lines, conn, "egress");
    let head = format!("GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    assert!(
        request.starts_with(head.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(&request)
    );
    assert!(request.ends_with(b"\r\n\r\n"));
    let response = stream(&lines, conn, "ingress");
    assert!(
        response.starts_with(b"HTTP/1.0 200 OK\r\n"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert!(response.ends_with(b"\r\n\r\nplain hello\n"));
    for d in data_of(&lines, conn) {
        assert_eq!(d["source"], "plain");
    }
    // The server side of curl's connection (not the readiness probe's).
    let curl_port = port_of(&open["local"]);
    let sopen = lines
        .iter()
        .find(|v| {
            v["type"] == "open"
                && v["pid"] == server_pid
                && v["remote"] == format!("127.0.0.1:{curl_port}")
        })
        .cloned()
        .expect("http.server connection");
    assert_eq!(sopen["role"], "server");
    let sconn = sopen["conn"].as_u64().unwrap();
    assert_eq!(stream(&lines, sconn, "ingress"), request);
    assert_eq!(stream(&lines, sconn, "egress"), response);

    // The TLS connection: plaintext from the library only, never its ciphertext.
    let topen = conn_of(&lines, tls_curl_pid, tls_port).expect("tls curl connection");
    let tls_curl_port = port_of(&topen["local"]);
    let sconn_tls = lines
        .iter()
        .find(|v| {
            v["type"] == "open"
                && v["pid"] == tls_pid
                && v["remote"] == format!("127.0.0.1:{tls_curl_port}")
        })
        .cloned()
        .expect("tls server connection");
    for c in [
        topen["conn"].as_u64().unwrap(),
        sconn_tls["conn"].as_u64().unwrap(),
    ] {
        let data = data_of(&lines, c);
        assert!(!data.is_empty());
        for d in &data {
            assert_eq!(d["source"], "tls", "ciphertext shown as plain data: {d}");
        }
        assert!(
            !has_tls_record(&lines, c),
            "a TLS record in the captured bytes"
        );
    }
}

#[test]
fn process_started_after_the_agent_is_captured() {
    if !can_run("process_started_after_the_agent_is_captured") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("late.txt"), b"late\n").expect("write file");
    let port = free_port();
    let plain = Bg::spawn(
        Command::new(python())
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                path_str(dir.path()),
            ])
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_listening(port, Duration::from_secs(20));
    let tls_port = free_port();
    let certs = certs();
    let _tls = https_server(tls_port, &certs);
    // A shell started after the agent in a selected cgroup; the programs it
    // starts are new processes, forked and exec'd, that connect at once.
    let script = format!(
        "curl -s http://127.0.0.1:{port}/late.txt && {py} {servers} post {tls_port} 1000",
        py = python(),
        servers = servers_py()
    );
    let cgroup = Cgroup::new("late");
    let agent = Agent::start(&["--cgroup".into(), path_str(&cgroup.path).into()], &[]);
    let shell = cgroup.spawn("sh", &["-c", &script]);
    let shell_pid = shell.id();
    let out = String::from_utf8(finish(shell, Duration::from_secs(60))).unwrap();
    assert!(out.starts_with("late\n"), "{out}");
    let execs = agent.wait_for("curl's exec", Duration::from_secs(10), |v| {
        v["type"] == "exec" && v["comm"] == "curl"
    });
    let curl_pid = execs["pid"].as_u64().unwrap() as u32;
    assert_ne!(curl_pid, shell_pid, "curl runs as a new process");
    let plain_open = agent.wait_for("curl's connection", Duration::from_secs(10), |v| {
        v["type"] == "open" && v["pid"] == curl_pid
    });
    let py_data = agent.wait_for(
        "python client's TLS request",
        Duration::from_secs(10),
        |v| {
            v["type"] == "data"
                && v["source"] == "tls"
                && v["direction"] == "egress"
                && v["pid"] != curl_pid
        },
    );
    let lines = agent.stop_with(libc::SIGINT);
    drop(plain);
    let conn = plain_open["conn"].as_u64().unwrap();
    assert!(stream(&lines, conn, "egress").starts_with(b"GET /late.txt HTTP/1.1\r\n"));
    assert!(stream(&lines, conn, "ingress").ends_with(b"\r\n\r\nlate\n"));
    let py_pid = py_data["pid"].as_u64().unwrap() as u32;
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "exec" && v["pid"] == py_pid),
        "the python client was exec'd after the agent started"
    );
    let py_conn = py_data["conn"].as_u64().unwrap();
    assert!(stream(&lines, py_conn, "egress").starts_with(b"POST /upload HTTP/1.1\r\n"));
}
