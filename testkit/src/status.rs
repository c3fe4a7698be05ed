//! The agent's status server from a test: plain HTTP GETs, the Prometheus text
//! parsed by Python's `prometheus_client` (the reference parser), a plain HTTP
//! client process whose requests the agent captures, and the agent started
//! with its status server on a chosen port.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::{Agent, Bg, guard, path_str, workspace_root};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `GET path` on the status server; returns (status code, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to the status server on {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed response: {response:?}"));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head:?}"));
    (code, body.to_owned())
}

/// Polls `GET path` until `want(code, body)`, or panics after `timeout`.
pub fn wait_get(
    port: u16,
    path: &str,
    timeout: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let start = Instant::now();
    loop {
        let (code, body) = get(port, path);
        if want(code, &body) {
            return (code, body);
        }
        assert!(
            start.elapsed() < timeout,
            "GET {path} still {code} after {timeout:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The workspace venv's Python, which has `prometheus_client` (installed by
/// `cargo xtask setup --test`).
pub fn venv_python() -> Option<PathBuf> {
    let python = workspace_root().join(".venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have prometheus_client in .venv (cargo xtask setup --test)"
    );
    eprintln!("skipped: no prometheus_client in .venv; run `cargo xtask setup --test`");
    None
}

const PARSE_PY: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"#;

/// Parses Prometheus text with `prometheus_client`'s parser: a list of
/// families `{name, type, samples: [{name, labels, value}]}`. Panics if the
/// parser rejects it.
pub fn parse_metrics(python: &PathBuf, text: &str) -> Vec<Value> {
    let mut child = Command::new(python)
        .args(["-c", PARSE_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// Every sample of the parsed families.
pub fn samples(families: &[Value]) -> Vec<Value> {
    families
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap().clone())
        .collect()
}

const CLIENT_PY: &str = r#"
import http.client, sys
port = int(sys.argv[1])
sent = 0
for line in sys.stdin:
    for _ in range(int(line)):
        # A new connection (a new local port) and a new path for every request.
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/item/%d" % sent)
        assert conn.getresponse().read() == b"ok\n"
        conn.close()
        sent += 1
    print(sent, flush=True)
"#;

/// A plain HTTP client process: each line written to it is a number of GETs
/// to make, each on a new connection to a new path; it answers with the total.
pub struct Client {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    /// Starts the client against `127.0.0.1:port`; it waits for work.
    pub fn start(port: u16) -> Client {
        let mut child = guard(
            Command::new("python3")
                .args(["-c", CLIENT_PY, &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )
        .spawn()
        .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Makes `n` requests; returns the total made so far.
    pub fn requests(&mut self, n: usize) -> u64 {
        writeln!(self.stdin, "{n}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("client answered {line:?}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the plain HTTP test server on `port`.
pub fn http_server(port: u16) -> Bg {
    crate::http_server_with(port, None)
}

/// Starts the agent capturing `pid` with its status server on `status_port`,
/// with `config` if given.
pub fn start_agent(config: Option<&std::path::Path>, pid: u32, status_port: u16) -> Agent {
    start_agent_with(config, pid, status_port, &[])
}

/// [`start_agent`] with extra environment.
pub fn start_agent_with(
    config: Option<&std::path::Path>,
    pid: u32,
    status_port: u16,
    env: &[(&str, &str)],
) -> Agent {
    let mut args = vec![
        "--pid".to_owned(),
        pid.to_string(),
        "--httpd-listen".to_owned(),
        format!("127.0.0.1:{status_port}"),
    ];
    if let Some(config) = config {
        args.push("--config".to_owned());
        args.push(path_str(config).to_owned());
    }
    Agent::start_dataplane(&args, env)
}
