//! Processes the harness starts: each guarded as the tests' are
//! (`tapwire_testkit::guard`: its own process group, killed by the kernel if the
//! harness dies), and stopped on drop (the stop signal to the whole group, then
//! `SIGKILL` after a grace period), so nothing outlives the harness, also when
//! it fails half-way.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How often waits poll a child or its log.
const POLL: Duration = Duration::from_millis(50);

/// A started process, stopped when dropped.
pub struct Guard {
    name: String,
    child: Option<Child>,
    stop_signal: i32,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl Guard {
    /// Starts `cmd` in a new process group. `stop_signal` is what asks it to end
    /// (`SIGINT` for tracers that print their totals on exit); after `grace` it is
    /// killed.
    pub fn spawn(name: &str, cmd: &mut Command, stop_signal: i32, grace: Duration) -> Result<Self> {
        let child = tapwire_testkit::guard(cmd)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            stop_signal,
            grace,
            status: None,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child, for its pipes.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// The exit status if it has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.status = child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.exited() {
            Some(status) => bail!("{} exited ({status})", self.name),
            None => Ok(()),
        }
    }

    /// Asks the process group to stop, waits up to the grace period, then kills it.
    /// Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pgid = child.id() as libc::pid_t;
        if self.status.is_none() {
            self.status = child.try_wait().ok().flatten();
        }
        if self.status.is_none() {
            // SAFETY: kill(2) with a negative pid signals the process group we
            // created at spawn (`process_group(0)`); it has no memory effects.
            unsafe { libc::kill(-pgid, self.stop_signal) };
            let until = Instant::now() + self.grace;
            while Instant::now() < until {
                if let Ok(Some(status)) = child.try_wait() {
                    self.status = Some(status);
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        // SAFETY: as above; SIGKILL whatever is left of the group (children that
        // outlive their parent keep the group id).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if self.status.is_none() {
            self.status = child.wait().ok();
        }
        self.status
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts tapwire with `args` as the bench runs it: stdin and stdout closed,
/// uncoloured console logs on stderr (collected), any free status port (another
/// agent may hold the default), no config or log filter from the environment
/// but `env`. Waits up to `ready` for `capture ready`; stopped with SIGINT and
/// `grace` to exit.
pub fn start_tapwire(
    tapwire: &std::path::Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    grace: Duration,
    ready: Duration,
) -> Result<(Guard, Lines)> {
    let mut cmd = Command::new(tapwire);
    cmd.args(args)
        .args(["--log-encoding", "console", "--httpd-listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .env_remove("TAPWIRE_CONFIG")
        .env_remove("TAPWIRE_LOG")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut guard = Guard::spawn("tapwire", &mut cmd, libc::SIGINT, grace)?;
    let lines = Lines::collect(
        guard
            .child_mut()
            .and_then(|c| c.stderr.take())
            .context("tapwire stderr")?,
    );
    lines.wait_for(&mut guard, ready, |l| l.contains("capture ready"))?;
    Ok((guard, lines))
}

/// Stops tapwire and reads the counters of its `stopped` line. Without them,
/// fails naming how it ended (its exit status, or that it had to be killed)
/// and its last log lines.
pub fn stop_tapwire(guard: &mut Guard, lines: &Lines) -> Result<serde_json::Value> {
    let status = guard.stop();
    // The pipe closes when the process group is gone: every line is in.
    let closed = lines.wait_closed(Duration::from_secs(2));
    if let Some(counters) = crate::tapwire_log::stopped_counters(&lines.snapshot()) {
        return Ok(counters);
    }
    let ended = match status {
        Some(status) => status.to_string(),
        None => "no exit status".to_owned(),
    };
    bail!(
        "no `stopped` counters from tapwire ({ended}{}); its last lines: {}",
        if closed { "" } else { ", its log still open" },
        lines.tail(8)
    )
}

/// Lines a child writes to a pipe, collected by a thread as they come.
#[derive(Clone, Default)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    /// The pipe has closed (the writer and every process sharing it ended).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Lines {
    /// Collects the lines of `pipe` until it closes.
    pub fn collect(pipe: impl Read + Send + 'static) -> Self {
        let lines = Self::default();
        let sink = lines.lines.clone();
        let closed = lines.closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .expect("lines lock")
                    .push(tapwire_testkit::without_ansi(&line));
            }
            closed.store(true, std::sync::atomic::Ordering::Release);
        });
        lines
    }

    /// Waits up to `timeout` for the pipe to close; true if it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Waits until a line satisfies `pred`; fails if `guard` exits first or after
    /// `timeout`.
    pub fn wait_for(
        &self,
        guard: &mut Guard,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(line) = self.snapshot().into_iter().find(|l| pred(l)) {
                return Ok(line);
            }
            if let Some(status) = guard.exited() {
                // Give the reader thread a moment to take the last lines.
                std::thread::sleep(POLL);
                bail!("{} exited ({status}): {}", guard.name, self.tail(6));
            }
            if Instant::now() > until {
                bail!(
                    "{} not ready after {timeout:?}: {}",
                    guard.name,
                    self.tail(6)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last `n` lines, joined with ` | `.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.snapshot();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}
