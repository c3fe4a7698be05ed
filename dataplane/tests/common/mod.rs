//! Shared helpers for the capture tests: root check, the agent process, test
//! certificates, a gated launcher whose pid is selected before it runs the
//! real client, and record queries.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::Value;

/// True if the test may run: root. Without root, panics under CI, else says why
/// and skips.
pub fn can_run(name: &str) -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name}: needs root (eBPF probes); CI must run it as root");
    }
    eprintln!("{name}: skipped: needs root to load eBPF probes");
    false
}

/// The running agent: its stdout lines collected in the background.
pub struct Agent {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<Value>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts `tapwire` printing raw records (`TAPWIRE_DEBUG_CAPTURE`) with
    /// `args` and waits for its `ready` line.
    pub fn start(args: &[String], env: &[(&str, &str)]) -> Agent {
        let mut env = env.to_vec();
        env.push(("TAPWIRE_DEBUG_CAPTURE", "1"));
        let agent = Agent::spawn(args, &env);
        agent.wait_for("agent ready", Duration::from_secs(60), |v| {
            v["type"] == "ready"
        });
        agent
    }

    /// Starts the agent as a user runs it (data plane and stores) and waits until
    /// its probes are attached (`capture ready` on stderr).
    pub fn start_dataplane(args: &[String], env: &[(&str, &str)]) -> Agent {
        let agent = Agent::spawn(args, env);
        let start = Instant::now();
        while !agent
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("capture ready"))
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "agent not ready; stderr:\n{}",
                agent.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn spawn(args: &[String], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapwire"));
        cmd.args(args)
            .env_remove("TAPWIRE_DEBUG_CAPTURE")
            .env_remove("TAPWIRE_CONFIG")
            // Agents of tests running at once each take a free status port.
            .env("TAPWIRE_HTTPD_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tapwire");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => l.lock().unwrap().push(v),
                    Err(e) => panic!("agent printed a non-JSON line ({e}): {line}"),
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let e = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                eprintln!("agent: {line}");
                e.lock().unwrap().push(line);
            }
        });
        Agent {
            child,
            lines,
            stderr,
        }
    }

    /// Waits until some line satisfies `pred`; panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.lines.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            if start.elapsed() > timeout {
                let errs = self.stderr.lock().unwrap().join("\n");
                panic!("timed out waiting for {what}; agent stderr:\n{errs}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A snapshot of the lines so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends `sig` and waits for exit; panics if it does not exit in time or
    /// fails.
    pub fn stop_with(mut self, sig: i32) -> Vec<Value> {
        // SAFETY: plain kill of our child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait agent") {
                assert!(status.success(), "agent exited with {status}");
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("agent did not exit within 30 s of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        self.lines()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill of our child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// A self-signed certificate and key for `localhost` in a temp dir.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certs() -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(status.success(), "openssl req failed");
    Certs { dir, cert, key }
}

/// A process started as `sh` waiting for a go-file, then `exec`ing the real
/// command: its pid can be given to the agent before the command runs.
pub struct Gated {
    pub child: Child,
}

impl Gated {
    /// Prepares `program args…` behind a gate. stdout/stderr are piped.
    pub fn new(program: &str, args: &[&str]) -> Gated {
        // `read` is a shell builtin: the gate forks nothing, so the selected pid
        // is the command's own once it runs.
        let mut script = String::from("read _gate; exec");
        for a in std::iter::once(&program).chain(args) {
            script.push_str(" '");
            script.push_str(&a.replace('\'', "'\\''"));
            script.push('\'');
        }
        let child = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gated sh");
        Gated { child }
    }

    /// Runs `program args…` at once with its stdin as the gate: for programs that
    /// read their work from stdin (`curl -K -`), so the process has exec'd and
    /// mapped its TLS library before the agent starts, with no exec race.
    pub fn stdin(program: &str, args: &[&str]) -> Gated {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stdin-gated program");
        Gated { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `input` to the program's stdin and closes it.
    pub fn go_with(&mut self, input: &[u8]) {
        use std::io::Write as _;
        let mut stdin = self.child.stdin.take().expect("gate stdin");
        stdin.write_all(input).expect("write to the gate");
    }

    /// Lets the command run.
    pub fn go(&mut self) {
        use std::io::Write as _;
        let mut stdin = self.child.stdin.take().expect("gate stdin");
        stdin.write_all(b"go\n").expect("open the gate");
    }

    /// Runs to completion; returns stdout, panics on failure.
    pub fn finish(self, timeout: Duration) -> Vec<u8> {
        let mut child = self.child;
        let start = Instant::now();
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!("gated command did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        assert!(
            out.status.success(),
            "gated command failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Waits until something listens on `127.0.0.1:port`.
pub fn wait_listening(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listening on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Data lines of one connection and direction, in sequence order, payloads
/// concatenated.
pub fn stream(lines: &[Value], conn: u64, direction: &str) -> Vec<u8> {
    let mut recs: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "data" && v["conn"] == conn && v["direction"] == direction)
        .collect();
    recs.sort_by_key(|v| v["seq"].as_u64().unwrap());
    let mut out = Vec::new();
    for r in recs {
        out.extend(payload(r));
    }
    out
}

pub fn payload(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v["payload"].as_str().expect("payload"))
        .expect("base64")
}

/// Open lines of processes `pids`.
pub fn opens_of(lines: &[Value], pids: &[u32]) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "open" && pids.iter().any(|p| v["pid"] == *p))
        .cloned()
        .collect()
}

/// The last drops line.
pub fn last_drops(lines: &[Value]) -> Value {
    lines
        .iter()
        .rev()
        .find(|v| v["type"] == "drops")
        .cloned()
        .expect("a drops line")
}

pub fn python() -> String {
    which("python3")
}

pub fn which(name: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .expect("sh");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!s.is_empty(), "{name} not found");
    s
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Path of `servers.py`.
pub fn servers_py() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/servers.py").to_owned()
}

/// A background process killed on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the python HTTPS server on `port`.
pub fn https_server(port: u16, certs: &Certs) -> Bg {
    let child = Command::new(python())
        .arg(servers_py())
        .args([
            "https",
            &port.to_string(),
            path_str(&certs.cert),
            path_str(&certs.key),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn https server");
    wait_listening(port, Duration::from_secs(20));
    Bg(child)
}

/// Serialises the capture tests of one binary: each starts its own agent and
/// the machine has two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection (open line) of `pid` whose remote port is `port`.
pub fn conn_of(lines: &[Value], pid: u32, remote_port: u16) -> Option<Value> {
    lines
        .iter()
        .find(|v| {
            v["type"] == "open"
                && v["pid"] == pid
                && v["remote"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&format!(":{remote_port}")))
        })
        .cloned()
}

/// The connection (open line) of `pid` whose local port is `port`.
pub fn conn_at(lines: &[Value], pid: u32, local_port: u16) -> Option<Value> {
    lines
        .iter()
        .find(|v| {
            v["type"] == "open"
                && v["pid"] == pid
                && v["local"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&format!(":{local_port}")))
        })
        .cloned()
}

/// All data lines of a connection.
pub fn data_of(lines: &[Value], conn: u64) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "data" && v["conn"] == conn)
        .cloned()
        .collect()
}

/// Port of an `ip:port` / `[ip]:port` string.
pub fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .and_then(|s| s.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("port")
}
