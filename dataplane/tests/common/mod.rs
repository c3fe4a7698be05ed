//! The shared test set-up (`testkit/`), under the name the suites use.
#![allow(unused_imports, dead_code, reason = "each test binary uses a subset")]

pub use tapwire_testkit::*;

/// Linux 6.13 or later: the kernel has uprobe sessions.
pub fn kernel_has_uprobe_sessions() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 13)
}

/// What an agent left after an overload run ([`finish_overload`]).
pub struct Finished {
    /// Its output lines.
    pub lines: Vec<serde_json::Value>,
    /// Its log lines.
    pub stderr: Vec<String>,
    /// Its `stopped` counters.
    pub counters: serde_json::Value,
}

/// Waits for an [`overload_client`] to say it is `done`, then (at most a
/// minute) for the agent to write `made` transaction events, and stops the
/// agent with SIGINT.
pub fn finish_overload(
    agent: Agent,
    done: &std::sync::mpsc::Receiver<String>,
    made: usize,
) -> Finished {
    use std::time::{Duration, Instant};
    let done = done
        .recv_timeout(Duration::from_secs(90))
        .expect("the client finished within 90 s");
    assert_eq!(done.trim(), "done", "every request was answered");
    // Let the agent drain its rings and write what it holds.
    let until = Instant::now() + Duration::from_secs(60);
    while agent
        .lines()
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .count()
        < made
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = agent.stderr.clone();
    let lines = agent.stop_with(libc::SIGINT);
    let stderr = stderr.lock().unwrap().clone();
    let counters = Agent::stopped_counters(&stderr);
    Finished {
        lines,
        stderr,
        counters,
    }
}

/// The sum of a metric's samples on the agent's `/metrics` at `port`.
pub fn metric_sum(port: u16, name: &str) -> u64 {
    let (code, body) = status::get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Polls [`metric_sum`] every 20 ms until it is above zero or `timeout`
/// has passed; returns the last sum.
pub fn wait_metric(port: u16, name: &str, timeout: std::time::Duration) -> u64 {
    let until = std::time::Instant::now() + timeout;
    loop {
        let sum = metric_sum(port, name);
        if sum > 0 || std::time::Instant::now() > until {
            return sum;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `key: N` in a store's `stopped` line (its stats, printed with `Debug`):
/// the whole field name, not a longer one ending with it.
pub fn stat(line: &str, key: &str) -> u64 {
    let at = line
        .find(&format!(" {key}: "))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len() + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

/// A script of this directory (`dataplane/tests/common/`).
pub fn script(name: &str) -> String {
    format!("{}/tests/common/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `answering_server.py` on a free loopback port, listening: its port, and
/// the server, killed on drop.
pub fn answering_server() -> (u16, Bg) {
    let port = free_port();
    let server = Bg::spawn(
        std::process::Command::new(python())
            .arg(script("answering_server.py"))
            .arg(port.to_string()),
    );
    wait_listening(port, std::time::Duration::from_secs(20));
    (port, server)
}

/// `overload_client.py` uploading to `port` (`conns` connections, each
/// `requests` POSTs of `body` bytes), waiting for its start signal: the
/// client (killed on drop), its stdin (write a line to start it; the client
/// exits once it closes), and the line it prints when done.
pub fn overload_client(
    port: u16,
    conns: usize,
    requests: usize,
    body: u64,
) -> (
    Bg,
    std::process::ChildStdin,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead as _;
    let mut client = Bg::spawn(
        std::process::Command::new(python())
            .arg(script("overload_client.py"))
            .arg(port.to_string())
            .args([conns as u64, requests as u64, body].map(|n| n.to_string()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    );
    let stdin = client.0.stdin.take().expect("client stdin");
    let out = client.0.stdout.take().expect("client stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    (client, stdin, rx)
}
