//! The agent's hand-off to storage, end to end: SIGKILL in the middle of a burst
//! of captured objects, while S3 is blackholed (so they wait in the spool), loses
//! none that an emitted event names (the next start uploads the spool); a stdout
//! reader that stops reading cannot hold up SIGTERM past the documented deadline,
//! an object damaged in the spool on disk before a restart is counted and never uploaded,
//! and a second SIGTERM forces the exit; SIGHUP does not stop the agent.

mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, Bg, Fault, FaultProxy, Gated, path_str, python, wait_listening};

const BUCKET: &str = "burst";
/// Requests in the burst: each gives three distinct objects (request headers,
/// request body, response headers; the echoed response body is the request
/// body again), so 700 make 2,100 objects; the test takes about 45 s on a
/// loaded 2-core machine. `TAPWIRE_BURST_REQUESTS` sets another size.
const CI_REQUESTS: usize = 700;
/// The agent's stop deadline (`agent::SHUTDOWN_DEADLINE`), plus scheduling slack.
const STOP_DEADLINE: Duration = Duration::from_secs(15 + 3);

fn config(weed: &common::Weed, endpoint: &str, spool: &std::path::Path) -> String {
    let store = weed.store_yaml("s3_store", BUCKET, spool, "fatal").replace(
        &format!("endpoint: {}", weed.endpoint()),
        &format!("endpoint: {endpoint}"),
    );
    let indented: String = store.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "version: 2\nservices:\n  event_stores:\n    - id: console\n      type: stdout\n  \
         object_stores:\n    -\n{indented}"
    )
}

/// A Python client that waits for a line on stdin, then POSTs `n` distinct bodies
/// over one kept-alive connection.
fn burst_client(port: u16, n: usize) -> Gated {
    let script = format!(
        "import sys, http.client\n\
         sys.stdin.readline()\n\
         c = http.client.HTTPConnection('127.0.0.1', {port})\n\
         for i in range({n}):\n\
         \x20   body = ('burst body %d ' % i).encode() * 40\n\
         \x20   c.request('POST', '/burst/%d' % i, body=body)\n\
         \x20   c.getresponse().read()\n"
    );
    Gated::stdin(&python(), &["-c", &script])
}

/// The plain-HTTP test server on a free port.
fn plain_server() -> (Bg, u16) {
    let port = common::free_port();
    let server = Bg::spawn(
        Command::new(python())
            .arg(common::http_server_py())
            .arg(port.to_string())
            .stdout(Stdio::null()),
    );
    wait_listening(port, Duration::from_secs(20));
    (server, port)
}

/// Digests named with `kept: true` by the transaction events in `lines`.
fn kept_digests(lines: &[serde_json::Value]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .flat_map(|v| v["objects"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["kept"] == true)
        .map(|o| o["digest"].as_str().expect("digest").to_owned())
        .collect()
}

#[test]
fn sigkill_during_a_burst_loses_no_object_an_emitted_event_names() {
    if !common::can_run("sigkill_during_a_burst_loses_no_object_an_emitted_event_names") {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket(BUCKET);
    let _serial = common::serial();
    let requests = std::env::var("TAPWIRE_BURST_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CI_REQUESTS);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config_path = dir.path().join("qpoint.yaml");
    let proxy = FaultProxy::start(&weed.endpoint());
    std::fs::write(&config_path, config(&weed, proxy.endpoint(), &spool)).unwrap();
    let (_server, port) = plain_server();

    let mut client = burst_client(port, requests);
    let mut agent = Agent::start_dataplane(
        &[
            "--config".into(),
            path_str(&config_path).into(),
            "--pid".into(),
            client.pid().to_string(),
        ],
        &[],
    );
    // Uploads hang from now on: what the agent keeps stays in its spool.
    proxy.set(Fault::Blackhole);
    client.go_with(b"go\n");
    // Kill the agent a third of the way into the burst.
    let third = requests / 3;
    let until = Instant::now() + Duration::from_secs(60);
    while agent
        .lines()
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .count()
        < third
    {
        assert!(Instant::now() < until, "no burst captured");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGKILL) };
    let _ = agent.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let emitted = agent.lines();
    drop(agent);
    client.finish(Duration::from_secs(60));
    let named = kept_digests(&emitted);
    let events = emitted
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .count();
    assert!(
        named.len() >= third,
        "{events} events named {} objects",
        named.len()
    );

    // Restart on the same spool with S3 reachable, capturing nothing of
    // interest: it uploads what the killed agent had spooled.
    proxy.set(Fault::None);
    let idle = Bg::spawn(Command::new("sleep").arg("120"));
    let agent = Agent::start_dataplane(
        &[
            "--config".into(),
            path_str(&config_path).into(),
            "--pid".into(),
            idle.pid().to_string(),
        ],
        &[],
    );
    let started =
        common::without_ansi(&agent.wait_stderr("s3 store started", Duration::from_secs(30)));
    // Console (`recovered=210 `) or JSON (`"recovered":210,`) log lines.
    let recovered: usize = started
        .split("recovered=")
        .nth(1)
        .or_else(|| started.split("\"recovered\":").nth(1))
        .and_then(|r| r.split([' ', ',', '}']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recovered count: {started}"));
    assert!(
        recovered >= named.len() / 2,
        "the killed agent's objects were in its spool: {started}"
    );
    let client = weed.client(BUCKET);
    let until = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let keys: BTreeSet<String> = common::block_on(client.list_keys())
            .unwrap()
            .into_iter()
            .collect();
        let missing: Vec<&String> = named.difference(&keys).collect();
        if missing.is_empty() || Instant::now() > until {
            break missing.len();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    agent.stop_with(libc::SIGTERM);
    assert_eq!(
        missing,
        0,
        "{missing} of the {} objects named by {events} emitted events are not in the bucket",
        named.len()
    );
    // Spot-check the bytes under their digests.
    for key in named.iter().take(20) {
        let bytes = common::block_on(client.get_object(key)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), key);
    }
}

#[test]
fn a_spool_object_damaged_before_restart_is_counted_and_never_uploaded() {
    if !common::can_run("a_spool_object_damaged_before_restart_is_counted_and_never_uploaded") {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket(BUCKET);
    let _serial = common::serial();
    const REQUESTS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config_path = dir.path().join("qpoint.yaml");
    let proxy = FaultProxy::start(&weed.endpoint());
    std::fs::write(&config_path, config(&weed, proxy.endpoint(), &spool)).unwrap();
    let (_server, port) = plain_server();

    let mut client = burst_client(port, REQUESTS);
    let first_status = common::free_port();
    let agent = common::status::start_agent(Some(&config_path), client.pid(), first_status);
    // S3 unreachable from now on: every object the agent keeps waits in its spool.
    proxy.set(Fault::Blackhole);
    client.go_with(b"go\n");
    client.finish(Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(30);
    while agent
        .lines()
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .count()
        < REQUESTS
    {
        assert!(Instant::now() < until, "the requests were not captured");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The store's gauges say what waits: each distinct object once in the
    // spool, and an announcement per request and object it named, in memory.
    let waiting = agent.lines();
    let named = kept_digests(&waiting);
    let refs = waiting
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .flat_map(|v| v["objects"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["kept"] == true)
        .count();
    let gauge = |m: &str, name: &str| -> Option<u64> {
        m.lines()
            .find(|l| {
                l.starts_with(&format!("tapwire_store_{name}{{"))
                    && l.contains("store=\"s3_store\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let (_, metrics) = common::status::wait_get(
        first_status,
        "/metrics",
        Duration::from_secs(10),
        |code, m| {
            code == 200
                && gauge(m, "spooled") == Some(named.len() as u64)
                && gauge(m, "announcements_waiting") == Some(refs as u64)
        },
    );
    assert_eq!(
        (
            gauge(&metrics, "spooled"),
            gauge(&metrics, "announcements_waiting")
        ),
        (Some(named.len() as u64), Some(refs as u64)),
        "{metrics}"
    );
    assert!(
        gauge(&metrics, "spool_bytes").is_some_and(|b| b > 0),
        "{metrics}"
    );
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGKILL) };
    let lines = agent.lines();
    drop(agent);
    let named = kept_digests(&lines);
    // The first request's header block: an object no other transaction shares.
    let victim = lines
        .iter()
        .find(|v| v["type"] == "http_transaction" && v["path"] == "/burst/0")
        .and_then(|v| {
            v["objects"]
                .as_array()?
                .iter()
                .find(|o| o["role"] == "request_headers" && o["kept"] == true)?["digest"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("the first request's headers were kept");

    // Damage that object's bytes in its spool segment, as a failing disk might.
    let (file, at) = find_in_spool(&spool, &victim);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    // Restart with S3 reachable.
    proxy.set(Fault::None);
    let idle = Bg::spawn(Command::new("sleep").arg("120"));
    let status_port = common::free_port();
    let agent = common::status::start_agent(Some(&config_path), idle.pid(), status_port);
    let warning =
        common::without_ansi(&agent.wait_stderr("spool file damaged", Duration::from_secs(30)));
    assert!(warning.contains(&victim), "{warning}");
    let started =
        common::without_ansi(&agent.wait_stderr("s3 store started", Duration::from_secs(30)));
    assert!(
        started.contains("corrupt=1") || started.contains("\"corrupt\":1"),
        "{started}"
    );
    // The status server publishes the counters once a second.
    let is_corrupt = |l: &&str| {
        l.starts_with("tapwire_store_drops_corrupt_total{") && l.contains("store=\"s3_store\"")
    };
    let (_, metrics) = common::status::wait_get(
        status_port,
        "/metrics",
        Duration::from_secs(10),
        |code, m| code == 200 && m.lines().any(|l| is_corrupt(&l)),
    );
    let corrupt: Vec<&str> = metrics.lines().filter(is_corrupt).collect();
    assert_eq!(corrupt.len(), 1, "{metrics}");
    assert!(corrupt[0].ends_with(" 1"), "{}", corrupt[0]);

    // Every other named object arrives; the damaged one is not uploaded at
    // all, so nothing in the bucket sits under a digest its bytes do not have.
    let client = weed.client(BUCKET);
    let expected: BTreeSet<String> = named.iter().filter(|d| **d != victim).cloned().collect();
    let until = Instant::now() + Duration::from_secs(30);
    let keys = loop {
        let keys: BTreeSet<String> = common::block_on(client.list_keys())
            .unwrap()
            .into_iter()
            .collect();
        if keys.is_superset(&expected) || Instant::now() > until {
            break keys;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    agent.stop_with(libc::SIGTERM);
    assert!(
        keys.is_superset(&expected),
        "missing: {:?}",
        expected.difference(&keys).collect::<Vec<_>>()
    );
    assert!(!keys.contains(&victim), "the damaged object was uploaded");
    for key in &keys {
        let bytes = common::block_on(client.get_object(key)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), key);
    }
}

/// The agent on the embedded default config (events and objects to stdout),
/// its stdout a pipe nobody reads, its stderr collected; once it is ready, `curl`
/// (the selected process) fetches `urls`.
struct Unread {
    agent: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
    text: String,
}

impl Unread {
    fn start(urls: &[String]) -> Unread {
        let mut curl = Gated::stdin("curl", &["-s", "-o", "/dev/null", "-K", "-"]);
        let mut cmd = Command::new(common::cargo_bin("tapwire"));
        cmd.args(["--pid", &curl.pid().to_string()])
            .env_remove("TAPWIRE_DEBUG_CAPTURE")
            .env_remove("TAPWIRE_CONFIG")
            // Tests running at once each take a free status port.
            .env("TAPWIRE_HTTPD_LISTEN", "127.0.0.1:0")
            .env("TAPWIRE_LOG_ENCODING", "console")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut agent = common::guard(&mut cmd).spawn().expect("spawn tapwire");
        let mut stderr = agent.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut text = String::new();
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                let _ = tx.send(text.clone());
            }
        });
        let mut unread = Unread {
            agent,
            log: rx,
            text: String::new(),
        };
        unread.wait_log("capture ready", Duration::from_secs(60));
        let config: String = urls.iter().map(|u| format!("url = \"{u}\"\n")).collect();
        curl.go_with(config.as_bytes());
        curl.finish(Duration::from_secs(60));
        unread
    }

    fn wait_log(&mut self, text: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        while !self.text.contains(text) {
            assert!(
                Instant::now() < until,
                "no `{text}` in the log:\n{}",
                self.text
            );
            if let Ok(t) = self.log.recv_timeout(Duration::from_millis(100)) {
                self.text = t;
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill of our child.
        unsafe { libc::kill(self.agent.id() as i32, sig) };
    }

    /// Waits for the exit, at most `timeout`; returns the status and how long.
    fn exit_within(&mut self, timeout: Duration) -> (std::process::ExitStatus, Duration) {
        let from = Instant::now();
        let status = loop {
            if let Some(status) = self.agent.try_wait().expect("wait agent") {
                break status;
            }
            assert!(from.elapsed() < timeout, "still running {timeout:?} later");
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = from.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        while let Ok(text) = self.log.try_recv() {
            self.text = text;
        }
        (status, took)
    }
}

/// A 2 MiB body (printed as a base64 object line: far more than a pipe holds)
/// and two small ones.
fn big_urls(port: u16) -> Vec<String> {
    ["big", "small", "chunked"]
        .iter()
        .map(|path| format!("http://127.0.0.1:{port}/{path}"))
        .collect()
}

#[test]
fn sighup_does_not_stop_the_agent() {
    if !common::can_run("sighup_does_not_stop_the_agent") {
        return;
    }
    let _serial = common::serial();
    let (_server, port) = plain_server();
    let mut agent = Unread::start(&[format!("http://127.0.0.1:{port}/small")]);
    agent.signal(libc::SIGHUP);
    agent.wait_log("config reloaded: stores unchanged", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.agent.try_wait().expect("wait agent").is_none(),
        "SIGHUP stopped the agent:\n{}",
        agent.text
    );
    agent.signal(libc::SIGTERM);
    let (status, _) = agent.exit_within(STOP_DEADLINE);
    assert!(status.success(), "{status}");
}

#[test]
fn a_second_sigterm_while_stopping_exits_at_once() {
    if !common::can_run("a_second_sigterm_while_stopping_exits_at_once") {
        return;
    }
    let _serial = common::serial();
    let (_server, port) = plain_server();
    let mut agent = Unread::start(&big_urls(port));
    std::thread::sleep(Duration::from_secs(2));
    agent.signal(libc::SIGTERM);
    agent.wait_log("stopping", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        agent.agent.try_wait().expect("wait agent").is_none(),
        "still flushing to the stalled reader"
    );
    agent.signal(libc::SIGTERM);
    // Without the forced exit the stop would wait for its deadline. What is left
    // after the agent's own exit is the kernel detaching its probes (an RCU grace
    // period per uprobe, overlapped by closing them in parallel): about 1-3 s here.
    let (status, took) = agent.exit_within(STOP_DEADLINE);
    assert_eq!(status.code(), Some(143), "forced exit status");
    assert!(
        took < STOP_DEADLINE / 3,
        "took {took:?}, the stop deadline is {STOP_DEADLINE:?}"
    );
    assert!(
        agent
            .text
            .contains("second signal while stopping; exiting now"),
        "{}",
        agent.text
    );
}

#[test]
fn a_stalled_stdout_reader_cannot_hold_up_sigterm() {
    if !common::can_run("a_stalled_stdout_reader_cannot_hold_up_sigterm") {
        return;
    }
    let _serial = common::serial();
    let (_server, port) = plain_server();
    let mut agent = Unread::start(&big_urls(port));
    std::thread::sleep(Duration::from_secs(2));
    agent.signal(libc::SIGTERM);
    let (status, took) = agent.exit_within(STOP_DEADLINE);
    let log = agent.text.clone();
    assert!(status.success(), "exit status {status}; stderr:\n{log}");
    assert!(took < STOP_DEADLINE, "stopped in {took:?}");
    assert!(
        log.contains("standard output did not take every line before the shutdown deadline"),
        "the unwritten lines are logged:\n{log}"
    );
    let stopped = log
        .lines()
        .find(|l| l.contains("object store stopped"))
        .unwrap_or_else(|| panic!("no final object store counters:\n{log}"));
    assert!(
        stopped.contains("unwritten: ") && !stopped.contains("unwritten: 0,"),
        "unwritten objects counted: {stopped}"
    );
}

/// The spool segment holding the object with digest `hex`, and the offset of
/// its first byte there (each object is a header, then its bytes).
fn find_in_spool(spool: &Path, hex: &str) -> (std::path::PathBuf, usize) {
    use tapwire_store::spool::header::parse_header;
    for entry in std::fs::read_dir(spool).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let header = parse_header(&bytes[at..]).expect("whole spool headers");
            let start = at + usize::from(header.offset);
            if blake3::Hash::from_bytes(header.digest).to_hex().as_str() == hex {
                assert!(header.len > 0, "object {hex} is empty");
                return (path, start);
            }
            at = start + header.len as usize;
        }
    }
    panic!("object {hex} is in no spool segment");
}
