//! Capture from the first byte: programs started after the agent, the way a
//! user starts them — URL on the command line, no pause — are captured whole,
//! including programs and TLS libraries the agent first sees when they start.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// `servers.py`'s GET body.
const BODY: &[u8] = b"hello from tls server\n";

/// Curl runs in the first-byte test (full size; CI and the bench run the same).
const CURL_RUNS: usize = 20;

/// Waits until `pred` holds for the agent's lines, or panics after `timeout`.
fn wait_until(agent: &Agent, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
    let start = Instant::now();
    while !pred(&agent.lines()) {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; agent stderr:\n{}",
            agent.stderr.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn curl_runs_started_after_the_agent_are_whole_transactions() {
    if !can_run("curl_runs_started_after_the_agent_are_whole_transactions") {
        return;
    }
    let _serial = serial();
    let certs = certs();
    let port = free_port();
    let _server = https_server(port, &certs);
    // A private copy of curl: its inode is ours alone, so `--exe` selects no
    // other curl on the host.
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = private_copy("curl", dir.path());
    let agent = Agent::start_dataplane(&["--exe".into(), path_str(&exe).into()], &[]);
    let mut pids = Vec::new();
    for i in 0..CURL_RUNS {
        let url = format!("https://127.0.0.1:{port}/run/{i}");
        let mut cmd = Command::new(&exe);
        cmd.args(["-sk", "--http1.1", &url]);
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run curl");
        pids.push(child.id());
        let out = child.wait_with_output().expect("curl output");
        assert_eq!(out.stdout, BODY, "curl run {i}");
    }
    wait_until(
        &agent,
        "every run's transaction",
        Duration::from_secs(20),
        |lines| pids.iter().all(|&p| !transactions_of(lines, p).is_empty()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines = agent.stop_with(libc::SIGTERM);
    let objects = objects(&lines);
    for (i, &pid) in pids.iter().enumerate() {
        let txns = transactions_of(&lines, pid);
        assert_eq!(txns.len(), 1, "run {i}: {txns:?}");
        let t = &txns[0];
        let path = format!("/run/{i}");
        assert_eq!(
            (
                t["method"].as_str(),
                t["path"].as_str(),
                t["status"].as_u64(),
                t["exe"].as_str(),
            ),
            (Some("GET"), Some(path.as_str()), Some(200), exe.to_str()),
            "run {i}: {t}"
        );
        assert_eq!(
            (
                t["tls"].as_bool(),
                t["gap"].as_bool(),
                t["truncated"].as_bool()
            ),
            (Some(true), Some(false), Some(false)),
            "run {i}: {t}"
        );
        assert_eq!(
            object_of(&objects, t, "request_headers"),
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
            )
            .as_bytes(),
            "run {i}"
        );
        let head = object_of(&objects, t, "response_headers");
        assert!(
            head.starts_with(b"HTTP/1.1 200 OK\r\n")
                && head.ends_with(b"Content-Length: 22\r\n\r\n"),
            "run {i}: {:?}",
            String::from_utf8_lossy(head)
        );
        assert_eq!(object_of(&objects, t, "response_body"), BODY, "run {i}");
    }
    // Only the selected program was recorded (the server is not selected).
    for t in lines.iter().filter(|v| v["type"] == "http_transaction") {
        assert!(pids.iter().any(|&p| t["pid"] == p), "unselected: {t}");
    }
}

/// The record lines of the data of `pid`'s connection to `port`: (request,
/// response) streams.
fn client_streams(lines: &[Value], pid: u32, port: u16) -> (Vec<u8>, Vec<u8>) {
    let open = conn_of(lines, pid, port).unwrap_or_else(|| panic!("no connection of {pid}"));
    let conn = open["conn"].as_u64().unwrap();
    for d in data_of(lines, conn) {
        assert_eq!(d["source"], "tls", "{d}");
    }
    (
        stream(lines, conn, "egress"),
        stream(lines, conn, "ingress"),
    )
}

/// The pid of the process in `lines` whose exec named `file`.
fn exec_pid(lines: &[Value], file: &str) -> u32 {
    lines
        .iter()
        .find(|v| v["type"] == "exec" && v["filename"] == file)
        .and_then(|v| v["pid"].as_u64())
        .unwrap_or_else(|| panic!("no exec of {file}")) as u32
}

#[test]
fn python_client_connecting_at_once_has_its_first_request_whole() {
    if !can_run("python_client_connecting_at_once_has_its_first_request_whole") {
        return;
    }
    let _serial = serial();
    const SIZE: usize = 200_000;
    let certs = certs();
    let port = free_port();
    let _server = https_server(port, &certs);
    let cgroup = Cgroup::new("python");
    let agent = Agent::start(&["--cgroup".into(), path_str(&cgroup.path).into()], &[]);
    // No pause anywhere: the client connects as soon as python has started.
    let py = which("python3");
    let mut cmd = cgroup.command(&py);
    cmd.args([&servers_py(), "post", &port.to_string(), &SIZE.to_string()]);
    let out = run_ok(cmd, Duration::from_secs(60));
    let text = String::from_utf8(out).unwrap();
    let sent_digest = text.split_whitespace().next().unwrap().to_owned();
    wait_until(&agent, "the response", Duration::from_secs(10), |lines| {
        lines
            .iter()
            .any(|v| v["type"] == "data" && v["direction"] == "ingress" && v["source"] == "tls")
    });
    let lines = agent.stop_with(libc::SIGTERM);
    let pid = lines
        .iter()
        .find(|v| v["type"] == "data" && v["source"] == "tls")
        .and_then(|v| v["pid"].as_u64())
        .expect("tls data") as u32;
    let (request, response) = client_streams(&lines, pid, port);
    assert!(
        request.starts_with(b"POST /upload HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request[..request.len().min(200)])
    );
    let at = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &request[at..];
    assert_eq!(body.len(), SIZE, "the whole request body");
    use sha2::Digest as _;
    let digest: String = sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, sent_digest);
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(response.ends_with(sent_digest.as_bytes()));
}

#[test]
fn copied_node_and_copied_libssl_are_probed_when_first_seen() {
    if !can_run("copied_node_and_copied_libssl_are_probed_when_first_seen") {
        return;
    }
    let _serial = serial();
    let certs = certs();
    let port = free_port();
    let _server = https_server(port, &certs);
    // New inodes the agent cannot know at start: a copy of node (OpenSSL linked
    // in) and a copy of libssl found through LD_LIBRARY_PATH.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = private_copy("node", dir.path());
    let libdir = dir.path().join("lib");
    std::fs::create_dir(&libdir).unwrap();
    std::fs::copy(
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        libdir.join("libssl.so.3"),
    )
    .expect("copy libssl");
    let cgroup = Cgroup::new("late-files");
    let agent = Agent::start(&["--cgroup".into(), path_str(&cgroup.path).into()], &[]);

    // node's own OpenSSL is in its 100 MB executable, a build the agent has
    // not planned: the window to its probes being live is the time to read
    // that file's symbols (reported below as `after_exec`), longer in a debug
    // build on a loaded machine than node takes to send a first request. The
    // request leaves after a second.
    let script = format!(
        "setTimeout(() => require('https').get({{host: '127.0.0.1', port: {port}, \
         path: '/from-node-copy', rejectUnauthorized: false}}, r => {{ let b = ''; \
         r.on('data', d => b += d); r.on('end', () => process.stdout.write(b)); }}), 1000);"
    );
    let mut cmd = cgroup.command(&node);
    cmd.args(["-e", &script]);
    assert_eq!(run_ok(cmd, Duration::from_secs(60)), BODY);

    // A python client whose libssl is a copy on LD_LIBRARY_PATH, loaded with
    // python's `ssl` module as it starts, connecting at once. The copy is a
    // new inode but the same build as the host's libssl, planned at start:
    // its probes are live before python's first TLS call.
    let py = "/usr/bin/python3";
    // Waits until `n` processes have received TLS data.
    let wait_for_clients = |n: usize| {
        wait_until(&agent, "the responses", Duration::from_secs(10), |lines| {
            lines
                .iter()
                .filter(|v| {
                    v["type"] == "data" && v["direction"] == "ingress" && v["source"] == "tls"
                })
                .map(|v| v["pid"].as_u64())
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= n
        })
    };
    let post = || {
        let mut cmd = cgroup.command(py);
        cmd.args([&servers_py(), "post", &port.to_string(), "1000"])
            .env("LD_LIBRARY_PATH", &libdir);
        let sent = String::from_utf8(run_ok(cmd, Duration::from_secs(60))).unwrap();
        sent.split_whitespace().next().unwrap().to_owned()
    };
    let first_digest = post();
    wait_for_clients(2);
    // Node and python have exited: no process maps the two late files, so
    // the agent releases them (probes detached, descriptors closed).
    let released = |agent: &Agent| {
        agent
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("tls file released"))
            .count()
    };
    let start = Instant::now();
    while released(&agent) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the late files were not released; agent stderr:\n{}",
            agent.stderr.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same libssl copy loaded again after its release is probed again.
    let second_digest = post();
    wait_for_clients(3);

    let lines = agent.stop_with(libc::SIGTERM);
    let node_pid = exec_pid(&lines, path_str(&node));
    let (request, response) = client_streams(&lines, node_pid, port);
    assert!(
        request.starts_with(b"GET /from-node-copy HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request)
    );
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n") && response.ends_with(BODY));

    let libssl_copy = std::fs::metadata(libdir.join("libssl.so.3")).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let py_pids: Vec<u32> = lines
        .iter()
        .filter(|v| v["type"] == "exec" && v["filename"] == py)
        .filter_map(|v| v["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    assert_eq!(py_pids.len(), 2, "two python runs");
    for (&py_pid, digest) in py_pids.iter().zip([&first_digest, &second_digest]) {
        let (request, response) = client_streams(&lines, py_pid, port);
        assert!(
            request.starts_with(b"POST /upload HTTP/1.1\r\n"),
            "{request:?}"
        );
        assert_eq!(
            request.len() - request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4,
            1000
        );
        assert!(
            response.starts_with(b"HTTP/1.1 200 OK\r\n") && response.ends_with(digest.as_bytes())
        );
        assert!(
            lines.iter().any(|v| v["type"] == "exec_map"
                && v["pid"] == py_pid
                && v["ino"] == libssl_copy.ino()),
            "python {py_pid}'s mapping of the libssl copy was reported"
        );
    }
    // Both files were probed when first seen (the libssl copy twice), the
    // windows reported, each under what brought its file: node's exec, and
    // python's mappings of the libssl copy (not python's exec, although the
    // copy may be mapped by the time the agent handles that exec).
    let late = &last_drops(&lines)["late_files"];
    for (what, files) in [("after_exec", 1), ("after_map", 2)] {
        let window = &late[what];
        assert_eq!(window["files"].as_u64().unwrap(), files, "{what}: {late}");
        assert!(window["max_us"].as_u64().unwrap() > 0, "{late}");
        eprintln!(
            "{what}: probes live p50 {} µs, p99 {} µs, max {} µs over {} files",
            window["p50_us"], window["p99_us"], window["max_us"], window["files"]
        );
    }
    assert!(late["released"].as_u64().unwrap() >= 2, "{late}");
}

/// An nginx master with `workers` workers from the binary `bin`, serving
/// `server` (a `server { … }` body) on `127.0.0.1:port`; killed on drop.
struct Nginx {
    master: Bg,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(bin: &std::path::Path, workers: u32, port: u16, server: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let conf = format!(
            "worker_processes {workers};\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n{server}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // Guarded: the master, and with it its workers, die with the test.
        let master = Bg::spawn(Command::new(bin).args([
            "-c",
            path_str(&conf_path),
            "-e",
            &format!("{d}/error.log"),
        ]));
        wait_listening(port, Duration::from_secs(20));
        Nginx { master, _dir: dir }
    }

    fn pid(&self) -> u32 {
        self.master.0.id()
    }

    /// The master's children (its workers) now.
    fn workers(&self) -> Vec<u32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

#[test]
fn nginx_workers_forked_at_a_reload_are_captured_server_side() {
    if !can_run("nginx_workers_forked_at_a_reload_are_captured_server_side") {
        return;
    }
    let _serial = serial();
    const REQUESTS: usize = 20;
    let certs = certs();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("nginx");
    std::fs::copy("/usr/sbin/nginx", &bin).expect("copy nginx");
    // `reuseport`: one listening socket per worker, so the kernel spreads the
    // connections over both workers.
    let server = format!(
        "    listen 127.0.0.1:{port} ssl reuseport;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    location / {{ return 200 \"hello from nginx\\n\"; }}",
        path_str(&certs.cert),
        path_str(&certs.key)
    );
    let nginx = Nginx::start(&bin, 2, port, &server);
    let old = nginx.workers();
    assert_eq!(old.len(), 2, "two workers before the reload");
    let agent = Agent::start_dataplane(&["--exe".into(), path_str(&bin).into()], &[]);
    // The reload: the master forks two new workers (no exec) and the old ones
    // leave.
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(nginx.pid() as i32, libc::SIGHUP) };
    let start = Instant::now();
    let new = loop {
        let now = nginx.workers();
        if now.len() == 2 && now.iter().all(|p| !old.contains(p)) {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no new workers: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for i in 0..REQUESTS {
        let url = format!("https://127.0.0.1:{port}/w/{i}");
        let out = Command::new("curl")
            .args(["-sk", "--http1.1", &url])
            .output()
            .expect("curl");
        assert_eq!(out.stdout, b"hello from nginx\n");
    }
    wait_until(&agent, "every request", Duration::from_secs(20), |lines| {
        new.iter()
            .map(|&p| transactions_of(lines, p).len())
            .sum::<usize>()
            >= REQUESTS
    });
    let lines = agent.stop_with(libc::SIGTERM);
    let mut paths = Vec::new();
    for &pid in &new {
        let txns = transactions_of(&lines, pid);
        assert!(
            !txns.is_empty(),
            "worker {pid} served none of the captured requests"
        );
        for t in txns {
            assert_eq!(
                (
                    t["method"].as_str(),
                    t["status"].as_u64(),
                    t["direction"].as_str(),
                    t["exe"].as_str(),
                    t["tls"].as_bool(),
                ),
                (
                    Some("GET"),
                    Some(200),
                    Some("ingress"),
                    bin.to_str(),
                    Some(true)
                ),
                "{t}"
            );
            paths.push(t["path"].as_str().unwrap().to_owned());
        }
    }
    paths.sort();
    let mut expected: Vec<String> = (0..REQUESTS).map(|i| format!("/w/{i}")).collect();
    expected.sort();
    assert_eq!(paths, expected, "each request once, server side");
}

#[test]
fn nginx_sendfile_bodies_equal_the_files() {
    if !can_run("nginx_sendfile_bodies_equal_the_files") {
        return;
    }
    let _serial = serial();
    let port = free_port();
    let root = tempfile::tempdir().expect("tempdir");
    let small: Vec<u8> = (0..20 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let large: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i * 13 % 253) as u8)
        .collect();
    std::fs::write(root.path().join("small.bin"), &small).unwrap();
    std::fs::write(root.path().join("large.bin"), &large).unwrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("nginx");
    std::fs::copy("/usr/sbin/nginx", &bin).expect("copy nginx");
    let server = format!(
        "    listen 127.0.0.1:{port};\n    sendfile on;\n    root {};",
        path_str(root.path())
    );
    let agent = Agent::start_dataplane(&["--exe".into(), path_str(&bin).into()], &[]);
    let nginx = Nginx::start(&bin, 1, port, &server);
    for name in ["small.bin", "large.bin"] {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{port}/{name}")])
            .output()
            .expect("curl");
        assert_eq!(
            out.stdout.len(),
            if name == "small.bin" {
                small.len()
            } else {
                large.len()
            }
        );
    }
    let workers = nginx.workers();
    wait_until(
        &agent,
        "both transactions",
        Duration::from_secs(20),
        |lines| {
            workers
                .iter()
                .map(|&p| transactions_of(lines, p).len())
                .sum::<usize>()
                >= 2
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines = agent.stop_with(libc::SIGTERM);
    let objects = objects(&lines);
    let txns: Vec<Value> = workers
        .iter()
        .flat_map(|&p| transactions_of(&lines, p))
        .collect();
    for (name, content) in [("/small.bin", &small), ("/large.bin", &large)] {
        let t = txns
            .iter()
            .find(|t| t["path"] == name)
            .unwrap_or_else(|| panic!("no transaction for {name}: {txns:?}"));
        assert_eq!(
            (
                t["status"].as_u64(),
                t["gap"].as_bool(),
                t["truncated"].as_bool()
            ),
            (Some(200), Some(false), Some(false)),
            "{t}"
        );
        assert_eq!(
            t["response_body_bytes"].as_u64(),
            Some(content.len() as u64)
        );
        let body = object_of(&objects, t, "response_body");
        assert_eq!(
            blake3::hash(body),
            blake3::hash(content),
            "{name}: the body object is the file"
        );
    }
}

#[test]
fn spliced_file_bodies_equal_the_files_and_spliced_uploads_are_flagged() {
    if !can_run("spliced_file_bodies_equal_the_files_and_spliced_uploads_are_flagged") {
        return;
    }
    let _serial = serial();
    const UPLOAD: usize = 50_000;
    let port = free_port();
    let root = tempfile::tempdir().expect("tempdir");
    let small: Vec<u8> = (0..20 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let large: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(root.path().join("small.bin"), &small).unwrap();
    std::fs::write(root.path().join("large.bin"), &large).unwrap();
    let cgroup = Cgroup::new("splice");
    let agent = Agent::start_dataplane(&["--cgroup".into(), path_str(&cgroup.path).into()], &[]);
    // A server that sends files with os.splice (file -> pipe -> socket) and
    // takes request bodies the same way (socket -> pipe -> /dev/null).
    let mut cmd = cgroup.command(which("python3"));
    cmd.args([
        &servers_py(),
        "splice",
        &port.to_string(),
        path_str(root.path()),
    ])
    .stdout(std::process::Stdio::null());
    let server = Bg::spawn(&mut cmd);
    wait_listening(port, Duration::from_secs(20));
    for (name, content) in [("small.bin", &small), ("large.bin", &large)] {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{port}/{name}")])
            .output()
            .expect("curl");
        assert!(out.stdout == **content, "{name} served whole");
    }
    let upload = vec![b'u'; UPLOAD];
    let body_file = root.path().join("upload");
    std::fs::write(&body_file, &upload).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-H", "Expect:", "--data-binary"])
        .arg(format!("@{}", path_str(&body_file)))
        .arg(format!("http://127.0.0.1:{port}/upload"))
        .output()
        .expect("curl");
    assert_eq!(out.stdout, UPLOAD.to_string().as_bytes());
    let pid = server.0.id();
    wait_until(
        &agent,
        "the transactions",
        Duration::from_secs(20),
        |lines| {
            let txns = transactions_of(lines, pid);
            ["/small.bin", "/large.bin", "/upload"]
                .iter()
                .all(|p| txns.iter().any(|t| t["path"] == *p))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let stderr = agent.stderr.clone();
    let lines = agent.stop_with(libc::SIGTERM);
    let counters = Agent::stopped_counters(&stderr.lock().unwrap());
    let objects = objects(&lines);
    let txns = transactions_of(&lines, pid);
    for (name, content) in [("/small.bin", &small), ("/large.bin", &large)] {
        let t = txns
            .iter()
            .find(|t| t["path"] == name)
            .unwrap_or_else(|| panic!("no transaction for {name}: {txns:?}"));
        assert_eq!(
            (
                t["method"].as_str(),
                t["status"].as_u64(),
                t["gap"].as_bool(),
                t["truncated"].as_bool(),
                t["response_body_bytes"].as_u64(),
            ),
            (
                Some("GET"),
                Some(200),
                Some(false),
                Some(false),
                Some(content.len() as u64)
            ),
            "{t}"
        );
        let body = object_of(&objects, t, "response_body");
        assert_eq!(
            blake3::hash(body),
            blake3::hash(content),
            "{name}: the body object is the file"
        );
    }
    // The upload's body went from the socket into a pipe: not seen, counted,
    // and the transaction says so (its head was read with `recv`).
    let t = txns
        .iter()
        .find(|t| t["path"] == "/upload")
        .unwrap_or_else(|| panic!("no upload transaction: {txns:?}"));
    assert_eq!(
        (t["method"].as_str(), t["gap"].as_bool()),
        (Some("POST"), Some(true)),
        "{t}"
    );
    assert_eq!(
        counters["kernel_drops"]["unseen_bytes"].as_u64(),
        Some(UPLOAD as u64),
        "{counters}"
    );
    assert_eq!(
        counters["sendfile"]["bytes"].as_u64(),
        Some((small.len() + large.len()) as u64),
        "{counters}"
    );
}
