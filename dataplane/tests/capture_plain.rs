//! Plaintext HTTP through the syscall tracepoints, TLS ciphertext never shown
//! as plain data, and processes started after the agent.

mod common;

use std::{process::Command, time::Duration};

use common::*;

fn http_server(port: u16, dir: &std::path::Path) -> Gated {
    Gated::new(
        &python(),
        &[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            path_str(dir),
            &port.to_string(),
        ],
    )
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
    let mut server = http_server(port, dir.path());
    let server_pid = server.pid();
    let tls_port = free_port();
    let certs = certs();
    let tls_server = https_server(tls_port, &certs);
    let tls_pid = tls_server.0.id();
    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let mut curl = Gated::new("curl", &["-s", &url]);
    let tls_url = format!("https://127.0.0.1:{tls_port}/x");
    let mut tls_curl = Gated::new("curl", &["-sk", &tls_url]);
    let pids = [server_pid, tls_pid, curl.pid(), tls_curl.pid()];
    let mut args = Vec::new();
    for p in pids {
        args.push("--pid".to_string());
        args.push(p.to_string());
    }
    let agent = Agent::start(&args, &[]);
    server.go();
    wait_listening(port, Duration::from_secs(20));
    let curl_pid = curl.pid();
    curl.go();
    assert_eq!(curl.finish(Duration::from_secs(30)), b"plain hello\n");
    let tls_curl_pid = tls_curl.pid();
    tls_curl.go();
    assert_eq!(
        tls_curl.finish(Duration::from_secs(30)),
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
    // A shell selected before the agent starts; the programs it starts (new
    // processes, forked and exec'd after the agent is up) are its descendants.
    // Probes for a program started later are attached when its exec (and the
    // libraries it maps) are seen, a few ms after the fact; the python client
    // loads libssl first and waits a moment so its request does not race that.
    let script = format!(
        "curl -s http://127.0.0.1:{port}/late.txt && {py} -c \"import ssl, runpy, sys, time; \
         time.sleep(1.5); sys.argv = ['servers.py', 'post', '{tls_port}', '1000']; \
         runpy.run_path('{servers}', run_name='__main__')\"",
        py = python(),
        servers = servers_py()
    );
    let mut shell = Gated::new("sh", &["-c", &script]);
    let shell_pid = shell.pid();
    let agent = Agent::start(&["--pid".into(), shell_pid.to_string()], &[]);
    shell.go();
    let out = String::from_utf8(shell.finish(Duration::from_secs(60))).unwrap();
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
