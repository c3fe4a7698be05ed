//! The agent under test: `tapwire` as a guarded child, its stdout JSON lines and
//! stderr collected in the background.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{cargo_bin, process::guard};

/// The running agent.
pub struct Agent {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<Value>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// While set, the agent's stdout is not read: its pipe fills and its
    /// writes block, as with a reader that stopped reading.
    pub hold_stdout: Arc<AtomicBool>,
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
        agent.wait_stderr("capture ready", Duration::from_secs(60));
        agent
    }

    /// Starts the agent with the config at `config`, capturing this test's
    /// process tree (`--pid` of the test), and waits until its probes are
    /// attached.
    pub fn capturing_this_test(config: &std::path::Path) -> Agent {
        Agent::start_dataplane(&Agent::this_test_args(config), &[])
    }

    /// [`Agent::capturing_this_test`], its status server (`/metrics`) on
    /// loopback port `status_port`.
    pub fn capturing_this_test_at(config: &std::path::Path, status_port: u16) -> Agent {
        let mut args = Agent::this_test_args(config);
        args.extend(["--httpd-listen".into(), format!("127.0.0.1:{status_port}")]);
        Agent::start_dataplane(&args, &[])
    }

    fn this_test_args(config: &std::path::Path) -> Vec<String> {
        vec![
            "--config".into(),
            config.to_str().expect("utf-8 path").into(),
            "--pid".into(),
            std::process::id().to_string(),
        ]
    }

    /// Starts the agent and returns at once.
    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(cargo_bin("tapwire"));
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
        let mut child = guard(&mut cmd).spawn().expect("spawn tapwire");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let l = Arc::clone(&lines);
        let hold_stdout = Arc::new(AtomicBool::new(false));
        let held = Arc::clone(&hold_stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                while held.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
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
            hold_stdout,
        }
    }

    /// Waits until a stderr line contains `text`; panics after `timeout`.
    pub fn wait_stderr(&self, text: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
            {
                return l.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "no stderr line with `{text}` within {timeout:?}; stderr:\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
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

    /// The counters of the agent's last `stopped` line on stderr (after
    /// [`Agent::stop_with`]); panics if there is none.
    pub fn stopped_counters(stderr: &[String]) -> Value {
        let plain: Vec<String> = stderr.iter().map(|l| without_ansi(l)).collect();
        // Console lines: `… stopped counters={…}`; JSON lines (stderr not a
        // terminal): `{"message":"stopped","counters":"{…}",…}`.
        let from_json = |l: &String| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["message"] == "stopped").then(|| v["counters"].as_str().map(str::to_owned))?
        };
        let json = plain
            .iter()
            .rev()
            .find_map(|l| {
                l.split_once(" stopped counters=")
                    .map(|(_, json)| json.to_owned())
                    .or_else(|| from_json(l))
            })
            .unwrap_or_else(|| panic!("no `stopped` line; stderr:\n{}", plain.join("\n")));
        serde_json::from_str(json.trim()).expect("stopped counters are JSON")
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

/// `line` without terminal colour sequences (`ESC [ … m`).
pub fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill of our child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = self.child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
