//! Selection by executable and by cgroup, applied in the kernel. Each test
//! selects something only it uses: a private copy of curl, a fresh cgroup.

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::*;

#[test]
fn exe_selection_captures_that_program_only() {
    if !can_run("exe_selection_captures_that_program_only") {
        return;
    }
    let _serial = serial();
    let certs = certs();
    let port = free_port();
    let _server = https_server(port, &certs);
    // A private copy: its inode is ours alone, so no other curl on the host is
    // selected.
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("curl-under-test");
    std::fs::copy(which("curl"), &exe).expect("copy curl");
    let agent = Agent::start(&["--exe".into(), path_str(&exe).into()], &[]);
    let url = format!("https://127.0.0.1:{port}/by-exe");
    let out = Command::new(&exe)
        .args(["-sk", &url])
        .output()
        .expect("run curl copy");
    assert_eq!(out.stdout, b"hello from tls server\n");
    let exec = agent.wait_for(
        "exec of the selected program",
        Duration::from_secs(10),
        |v| v["type"] == "exec" && v["filename"] == path_str(&exe),
    );
    let pid = exec["pid"].as_u64().unwrap() as u32;
    agent.wait_for("its response", Duration::from_secs(10), |v| {
        v["type"] == "data" && v["pid"] == pid && v["direction"] == "ingress"
    });
    let lines = agent.stop_with(libc::SIGINT);
    // Only the selected program (the server is not selected).
    for v in lines
        .iter()
        .filter(|v| v["type"] == "data" || v["type"] == "open")
    {
        assert_eq!(v["pid"], pid, "an unselected process was captured: {v}");
    }
}

#[test]
fn cgroup_selection_captures_processes_that_join_later() {
    if !can_run("cgroup_selection_captures_processes_that_join_later") {
        return;
    }
    let Some(root) = cgroup2_root() else {
        eprintln!("skipped: no cgroup2 hierarchy mounted");
        return;
    };
    let _serial = serial();
    let certs = certs();
    let port = free_port();
    let _server = https_server(port, &certs);
    let cg = root.join(format!("tapwire-test-{}", std::process::id()));
    std::fs::create_dir(&cg).expect("create cgroup");
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(cg.clone());
    let agent = Agent::start(&["--cgroup".into(), path_str(&cg).into()], &[]);
    // Joins the cgroup, then becomes the python client.
    let script = format!(
        "echo $$ > {procs}; exec {py} {servers} post {port} 2000",
        procs = path_str(&cg.join("cgroup.procs")),
        py = python(),
        servers = servers_py()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = agent.wait_for("the client's request", Duration::from_secs(10), |v| {
        v["type"] == "data" && v["direction"] == "egress" && v["source"] == "tls"
    });
    let pid = data["pid"].as_u64().unwrap() as u32;
    let lines = agent.stop_with(libc::SIGTERM);
    let conn = data["conn"].as_u64().unwrap();
    assert!(stream(&lines, conn, "egress").starts_with(b"POST /upload HTTP/1.1\r\n"));
    for v in lines
        .iter()
        .filter(|v| v["type"] == "data" || v["type"] == "open")
    {
        assert_eq!(
            v["pid"], pid,
            "a process outside the cgroup was captured: {v}"
        );
    }
}
