//! `tap.filters`, applied in the kernel: a process a filter names produces no
//! records (its payload never enters a ring), while a sibling under the same
//! selection is captured; `only` keeps the connection and skips a layer.
//!
//! Capture is limited to this test's process tree (`--pid` of the test). The
//! clients are copies of `curl` under names each filter strategy matches (and
//! one it must not: regex is case-sensitive); the servers are `http_server.py`
//! (plain HTTP and HTTPS) started by the test.
//!
//! A filtered program is let go (given its URL through a FIFO) only once the
//! agent reports its decision written into the probes
//! (`tapwire_filtered_programs_total`): what is checked is that the kernel
//! then leaves it out from its first byte, whatever the load on the machine.
//! (A connection opened before the decision is left out by the agent itself,
//! counted in `filtered_late`: docs/config.md.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Agent, certs, finish, free_ports, guard, http_server_with, metric_sum, path_str, which,
};
use serde_json::Value;

/// A copy of `curl` at `dir/name` (creating parent directories).
fn curl_copy(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(which("curl"), &path).unwrap();
    path
}

/// Runs `exe` (a curl) on `url` to completion; returns its pid.
fn curl(exe: &Path, url: &str) -> u32 {
    let mut cmd = Command::new(exe);
    cmd.args(["-sk", "--noproxy", "*", "--max-time", "10", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = guard(&mut cmd).spawn().expect("run curl");
    let pid = child.id();
    finish(child, Duration::from_secs(15));
    pid
}

/// The programs whose filter decision reached the probes so far.
fn decided(status_port: u16) -> u64 {
    metric_sum(status_port, "tapwire_filtered_programs_total")
}

/// Starts `cmd`, a program a filter names that first reads `fifo`; once the
/// agent has written the program's filter decision into the probes, writes
/// `line` into `fifo` (the program goes on) and waits for it to finish.
/// Returns its pid.
fn run_once_decided(cmd: &mut Command, fifo: &Path, line: &str, status_port: u16) -> u32 {
    let before = decided(status_port);
    let child = guard(cmd).spawn().expect("run a filtered program");
    let pid = child.id();
    let until = Instant::now() + Duration::from_secs(20);
    while decided(status_port) == before {
        assert!(
            Instant::now() < until,
            "no filter decision for {cmd:?} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Opening blocks until the program opens its end.
    let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    w.write_all(line.as_bytes()).unwrap();
    drop(w);
    finish(child, Duration::from_secs(15));
    pid
}

/// A new FIFO at `path`.
fn fifo(path: PathBuf) -> PathBuf {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    path
}

/// Runs `exe` (a curl a filter names) on `url` with [`run_once_decided`]: its
/// URL comes through a config file (`-K`) that is a FIFO.
fn filtered_curl(exe: &Path, url: &str, status_port: u16) -> u32 {
    let rc = fifo(exe.with_extension("curlrc"));
    let mut cmd = Command::new(exe);
    cmd.args(["-sk", "--noproxy", "*", "--max-time", "10", "-K"])
        .arg(&rc)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_once_decided(&mut cmd, &rc, &format!("url = \"{url}\"\n"), status_port)
}

/// Events of process `pid`.
fn of_pid(lines: &[Value], pid: u32) -> Vec<&Value> {
    lines.iter().filter(|v| v["pid"] == pid).collect()
}

#[test]
fn filters_leave_out_their_processes_and_only_skips_a_layer() {
    if !common::can_run("filters_leave_out_their_processes_and_only_skips_a_layer") {
        return;
    }
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    let certs = certs();
    let [plain, tls, status] = free_ports();
    let plain_server = http_server_with(plain, None);
    let _tls = http_server_with(tls, Some(&certs));

    let config = dir.path().join("qpoint.yaml");
    std::fs::write(
        &config,
        format!(
            r#"version: 2
services:
  event_stores: [{{id: out, type: stdout}}]
  object_stores: [{{id: out, type: stdout}}]
stacks:
  capture:
    plugins:
      - type: http_capture
        config: {{level: full}}
      - type: report_usage
tap:
  http: {{stack: capture}}
  filters:
    groups: [container]
    custom:
      - {{exe: "{exact}", strategy: exact}}
      - {{exe: "{d}/prefix-", strategy: prefix}}
      - {{exe: /curl-suffix}}
      - {{exe: "-contains-", strategy: contains}}
      - {{exe: "/curl-re[0-9]+$", strategy: regex}}
      - {{exe: /curl-http-only, only: [http]}}
      - {{exe: /curl-tls-only, only: [tls]}}
      - {{exe: /bash-forks}}
"#,
            // Case-insensitive: the whole path in capitals still matches.
            exact = format!("{d}/curl-exact").to_uppercase(),
        ),
    )
    .unwrap();
    let excluded: Vec<PathBuf> = [
        "curl-exact",
        "prefix-dir/curl",
        "curl-suffix",
        "curl-contains-x",
        "curl-re42",
    ]
    .iter()
    .map(|name| curl_copy(dir.path(), name))
    .collect();
    // Not matched: regex is case-sensitive; and the system's own curl.
    let captured = [
        curl_copy(dir.path(), "curl-RE42"),
        PathBuf::from(which("curl")),
    ];
    let bash_forks = dir.path().join("bash-forks");
    std::fs::copy(which("bash"), &bash_forks).unwrap();
    let http_only = curl_copy(dir.path(), "curl-http-only");
    let tls_only = curl_copy(dir.path(), "curl-tls-only");

    let agent = Agent::capturing_this_test_at(&config, status);
    let url = |path: &str| format!("http://127.0.0.1:{plain}/{path}");
    // Plain HTTP, and HTTPS for one (its TLS probes find nothing to do).
    let excluded_pids: Vec<(u32, &PathBuf)> = excluded
        .iter()
        .enumerate()
        .map(|(i, exe)| match i {
            0 => (
                filtered_curl(exe, &format!("https://127.0.0.1:{tls}/excluded"), status),
                exe,
            ),
            _ => (filtered_curl(exe, &url("excluded"), status), exe),
        })
        .collect();
    let captured_pids: Vec<(u32, &PathBuf)> = captured
        .iter()
        .map(|exe| (curl(exe, &url("captured")), exe))
        .collect();
    // The same request as the captured copy above: the same bytes.
    let http_only_pid = filtered_curl(&http_only, &url("captured"), status);
    let tls_only_pid = filtered_curl(
        &tls_only,
        &format!("https://127.0.0.1:{tls}/tls-only"),
        status,
    );
    // A filtered shell that, once its own decision is made, forks a subshell
    // (no exec) that sends a request itself: the child inherits the decision
    // in the kernel.
    let go = fifo(dir.path().join("bash-forks.go"));
    let mut cmd = Command::new(&bash_forks);
    cmd.arg("-c").arg(format!(
        "read -r _ < {go}; (exec 3<>/dev/tcp/127.0.0.1/{plain}; \
         printf 'GET /forked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3; \
         cat <&3 >/dev/null); true",
        go = path_str(&go)
    ));
    run_once_decided(&mut cmd, &go, "go\n", status);

    for (pid, exe) in &captured_pids {
        agent.wait_for(
            &format!("the transaction of {}", exe.display()),
            Duration::from_secs(20),
            |v| v["type"] == "http_transaction" && v["pid"] == *pid,
        );
    }
    for pid in [http_only_pid, tls_only_pid] {
        agent.wait_for("a connection close", Duration::from_secs(20), |v| {
            v["type"] == "connection" && v["event"] == "close" && v["pid"] == pid
        });
    }
    // The server's side of the last request: by then every client event is
    // out too.
    agent.wait_for(
        "the server's last transaction",
        Duration::from_secs(20),
        |v| v["type"] == "http_transaction" && v["path"] == "/forked",
    );
    let stderr = std::sync::Arc::clone(&agent.stderr);
    let lines = agent.stop_with(libc::SIGINT);
    let counters = Agent::stopped_counters(&stderr.lock().unwrap());

    for (pid, exe) in &excluded_pids {
        assert_eq!(
            of_pid(&lines, *pid),
            Vec::<&Value>::new(),
            "{}",
            exe.display()
        );
    }
    for (pid, exe) in &captured_pids {
        let txns: Vec<_> = of_pid(&lines, *pid)
            .into_iter()
            .filter(|v| v["type"] == "http_transaction")
            .collect();
        assert_eq!(txns.len(), 1, "{}: {txns:?}", exe.display());
        assert_eq!(txns[0]["path"], "/captured");
        assert_eq!(txns[0]["status"], 200);
    }
    // `only: [http]`: the connection, without its payload.
    let events = of_pid(&lines, http_only_pid);
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap(),
                v["event"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("connection", "open"), ("connection", "close")],
        "{events:?}"
    );
    let close = events[1];
    assert_eq!(close["remote"], format!("127.0.0.1:{plain}"));
    // No payload crossed a ring, yet the bytes are counted: as many as the
    // captured copy of the same program moved for the same request.
    let captured_close = of_pid(&lines, captured_pids[0].0)
        .into_iter()
        .find(|v| v["type"] == "connection" && v["event"] == "close")
        .expect("the captured curl's close event");
    assert!(close["bytes_sent"].as_u64().unwrap() > 0, "{close}");
    assert_eq!(
        (&close["bytes_sent"], &close["bytes_received"]),
        (
            &captured_close["bytes_sent"],
            &captured_close["bytes_received"]
        ),
        "{close}\n{captured_close}"
    );
    // `only: [tls]`: the connection, no plaintext.
    let events = of_pid(&lines, tls_only_pid);
    assert!(
        events.iter().all(|v| v["type"] == "connection"),
        "{events:?}"
    );
    assert!(events.iter().any(|v| v["event"] == "close"), "{events:?}");
    // The request itself was made: the server's side of it is captured.
    assert!(
        lines.iter().any(|v| v["type"] == "http_transaction"
            && v["path"] == "/tls-only"
            && v["status"] == 200),
        "the server's transaction of the TLS request"
    );

    // The subshell's request is seen from the server's side only.
    let forked: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction" && v["path"] == "/forked")
        .collect();
    assert_eq!(forked.len(), 1, "{forked:?}");
    assert_eq!(forked[0]["pid"], plain_server.pid(), "{}", forked[0]);

    // Counted per socket descriptor: one for each curl; two in the subshell,
    // which uses its socket as fd 3 and, while `printf` writes through it, as
    // fd 1 (`dup2`). (`cat` is a new program, not filtered: its reads are
    // captured.)
    let kernel = &counters["kernel_excluded"];
    assert_eq!(kernel["filter"], excluded_pids.len() + 2, "{counters}");
    assert_eq!(kernel["filter_payload"], 1, "{counters}");
    assert_eq!(counters["filtered_late"], 0, "{counters}");
    // Decisions written: the five excluded curls, the two with `only`, the
    // shell (not its subshell: a fork inherits in the kernel).
    assert_eq!(
        counters["filtered_programs"],
        excluded_pids.len() + 3,
        "{counters}"
    );
}
