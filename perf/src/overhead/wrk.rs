//! The load: wrk at fixed concurrency for a fixed time, started from one
//! long-lived shell (the launcher) so that every wrk is a descendant of one pid
//! that tapwire's `--pid` selection can name before wrk exists.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::process::Guard;
use super::procfs;

/// wrk threads.
pub const THREADS: u32 = 1;
/// wrk connections (concurrency), all kept alive.
pub const CONNECTIONS: u32 = 16;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Seconds the run lasted.
    pub secs: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
    /// wrk's own CPU, ticks.
    pub cpu_ticks: u64,
}

/// A shell that runs wrk on request.
pub struct Launcher {
    guard: Guard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Launcher {
    /// Starts the shell.
    pub fn start() -> Result<Self> {
        let mut cmd = Command::new("/bin/sh");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut guard = Guard::spawn("wrk launcher", &mut cmd, libc::SIGKILL, Duration::ZERO)?;
        let child = guard.child_mut().context("launcher child")?;
        let stdin = child.stdin.take().context("launcher stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("launcher stdout")?);
        Ok(Self {
            guard,
            stdin,
            stdout,
        })
    }

    /// The shell's pid: every wrk is its child.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Runs wrk against `url` for `secs` seconds; its output goes to `out`.
    pub fn run(&mut self, url: &str, secs: u32, out: &Path) -> Result<WrkResult> {
        let before = procfs::children_ticks(self.pid()).unwrap_or(0);
        let line = format!(
            "wrk -t{THREADS} -c{CONNECTIONS} -d{secs}s --latency '{url}' > '{}' 2>&1; echo \"done $?\"\n",
            out.display()
        );
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.flush()?;
        let mut reply = String::new();
        self.stdout.read_line(&mut reply)?;
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if reply.trim() != "done 0" {
            bail!("wrk failed ({}): {text}", reply.trim());
        }
        let mut result = parse(&text).with_context(|| format!("wrk output: {text}"))?;
        result.cpu_ticks = procfs::children_ticks(self.pid())
            .unwrap_or(0)
            .saturating_sub(before);
        Ok(result)
    }
}

/// Parses wrk's report (with `--latency`).
pub fn parse(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_us = duration_us(v)?,
            ["99%", v] => r.p99_us = duration_us(v)?,
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse()?;
                r.secs = duration_us(secs.trim_end_matches(','))? / 1e6;
            }
            ["Requests/sec:", v] => r.rps = v.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if r.requests == 0 || r.rps == 0.0 {
        bail!("no requests completed");
    }
    Ok(r)
}

/// `350.12us`, `1.20ms`, `2.00s`, `1.5m` → µs.
fn duration_us(v: &str) -> Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in `{v}`"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    Ok(n * match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown unit in `{v}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 2s test @ https://127.0.0.1:8443/1k.bin
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   641.22us  312.09us   9.93ms   93.10%
    Req/Sec    25.45k     1.22k   27.36k    75.00%
  Latency Distribution
     50%  596.00us
     75%  662.00us
     90%  747.00us
     99%    1.65ms
  50623 requests in 2.00s, 62.04MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  25306.11
Transfer/sec:     31.01MB
";

    #[test]
    fn parses_a_latency_report() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.requests, 50623);
        assert!((r.secs - 2.0).abs() < 1e-9);
        assert!((r.rps - 25306.11).abs() < 1e-6);
        assert!((r.p50_us - 596.0).abs() < 1e-9);
        assert!((r.p99_us - 1650.0).abs() < 1e-6);
        assert_eq!(r.errors, 3);
    }

    #[test]
    fn a_run_without_requests_is_an_error() {
        assert!(parse("Running 1s test\n  0 requests in 1.00s, 0B read\n").is_err());
    }
}
