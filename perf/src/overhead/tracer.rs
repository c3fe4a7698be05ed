//! The configurations compared, and how each tracer is started, made ready and
//! stopped with its totals.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::process::{Guard, Lines};
use super::procfs;

/// Longest wait for a tracer to attach its probes (bcc compiles a C program).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Grace a tracer gets to print its totals and exit after SIGINT; tapwire's own
/// shutdown waits up to 10 s for its stores.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// Line a bpftrace script prints once its probes are attached (BEGIN runs after
/// attachment).
const BPFTRACE_READY: &str = "bench: attached";
/// Line the patched sslsniff prints on stderr once attached.
const SSLSNIFF_READY: &str = "sslsniff: attached";
/// The bcc tool.
const SSLSNIFF: &str = "/usr/sbin/sslsniff-bpfcc";
/// The comms whose calls the count-only and bcc tracers keep (nginx and wrk).
const TRACED_COMMS: [&str; 2] = ["nginx", "wrk"];

/// Recognizes the log line saying a tracer is attached.
type ReadyLine = Box<dyn Fn(&str) -> bool>;

/// One configuration of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Config {
    /// Nothing attached.
    Untraced,
    /// bpftrace count-only uprobes on the exported `SSL_read`/`SSL_write`.
    BpftraceExported,
    /// bpftrace count-only uprobes at the addresses tapwire attaches to.
    BpftraceTapwirePoints,
    /// bcc's sslsniff, output to /dev/null.
    Sslsniff,
    /// tapwire, default config (events and objects to stdout → /dev/null).
    TapwireStdout,
    /// tapwire with an event store only (stdout → /dev/null), no object store.
    TapwireEventsOnly,
    /// tapwire with the S3 object store (SeaweedFS).
    TapwireS3,
    /// tapwire selecting another program only: its probes fire in nginx and
    /// wrk and leave at the selection check (the cost an unselected process
    /// pays per TLS call and socket syscall).
    TapwireUnselected,
    /// Nothing attached, last in the round: drift.
    UntracedEnd,
}

impl Config {
    /// Every configuration, in the order a round runs them.
    pub const ALL: [Config; 9] = [
        Config::Untraced,
        Config::BpftraceExported,
        Config::BpftraceTapwirePoints,
        Config::Sslsniff,
        Config::TapwireStdout,
        Config::TapwireEventsOnly,
        Config::TapwireS3,
        Config::TapwireUnselected,
        Config::UntracedEnd,
    ];

    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::BpftraceExported => "bpftrace count-only, exported SSL_read/SSL_write",
            Config::BpftraceTapwirePoints => "bpftrace count-only, at tapwire's attach points",
            Config::Sslsniff => "bcc sslsniff (output to /dev/null)",
            Config::TapwireStdout => "tapwire, default config (stdout to /dev/null)",
            Config::TapwireEventsOnly => "tapwire, events only (stdout to /dev/null)",
            Config::TapwireS3 => "tapwire, S3 object store (SeaweedFS)",
            Config::TapwireUnselected => "tapwire, nginx and wrk not selected (`--exe /bin/true`)",
            Config::UntracedEnd => "untraced, end of round (drift)",
        }
    }

    /// Short name for the chart.
    pub fn short(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::BpftraceExported => "bpftrace exported",
            Config::BpftraceTapwirePoints => "bpftrace tapwire pts",
            Config::Sslsniff => "sslsniff",
            Config::TapwireStdout => "tapwire stdout",
            Config::TapwireEventsOnly => "tapwire events",
            Config::TapwireS3 => "tapwire S3",
            Config::TapwireUnselected => "tapwire unselected",
            Config::UntracedEnd => "untraced (end)",
        }
    }

    /// Whether it is a tapwire run.
    pub fn is_tapwire(self) -> bool {
        matches!(
            self,
            Config::TapwireStdout
                | Config::TapwireEventsOnly
                | Config::TapwireS3
                | Config::TapwireUnselected
        )
    }

    /// Whether it runs under `w`: the bpftrace and bcc configurations trace
    /// only OpenSSL, so neither plain HTTP nor the Go server; the workloads
    /// with a distinct body per response run for the S3 store (where
    /// deduplication would otherwise hide the per-object cost) and the
    /// untraced baseline.
    pub fn covers(self, w: super::Workload) -> bool {
        if w.distinct() {
            return matches!(
                self,
                Config::Untraced | Config::UntracedEnd | Config::TapwireS3
            );
        }
        !self.tls_only() || (w.tls() && w != super::Workload::GoHttps1K)
    }

    /// Whether it traces only OpenSSL (plain HTTP runs are pointless).
    pub fn tls_only(self) -> bool {
        matches!(
            self,
            Config::BpftraceExported | Config::BpftraceTapwirePoints | Config::Sslsniff
        )
    }
}

/// What a configuration needs to start.
pub struct Env<'a> {
    /// Scratch directory of this run.
    pub dir: &'a Path,
    /// The tapwire binary.
    pub tapwire: &'a Path,
    /// nginx's libssl.
    pub libssl: &'a Path,
    /// Pids whose descendants tapwire captures (nginx master, wrk launcher,
    /// the Go server).
    pub pids: &'a [u32],
    /// Where tapwire's TLS probes go: (file, offset).
    pub tapwire_points: Option<&'a [(PathBuf, u64)]>,
    /// The kernel headers directory for bcc, or why there is none.
    pub bcc_headers: Result<&'a Path, &'a str>,
    /// S3 endpoint, bucket and spool directory for the S3 configuration.
    pub s3: Option<(&'a str, &'a str, &'a Path)>,
}

/// A running tracer.
pub struct Tracer {
    config: Config,
    guard: Guard,
    stdout: Lines,
    stderr: Lines,
    /// Its threads' CPU once ready: start-up (loading and attaching probes,
    /// on the main thread) is not part of what its threads spend under load.
    threads_at_ready: Vec<(String, u64)>,
}

/// A tracer's totals after it stopped.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Its CPU time, ticks (sampled right before it was stopped).
    pub cpu_ticks: u64,
    /// Peak RSS, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Probe hits counted (bpftrace).
    pub probe_hits: Option<u64>,
    /// Records and items dropped, summed over every drop counter it logged.
    pub dropped: Option<u64>,
    /// The drop counters as logged (`name=value`).
    pub drop_detail: Vec<String>,
    /// Objects its object stores took (stored or deduplicated).
    pub objects_stored: Option<u64>,
    /// Its CPU by thread group from when it was ready to just before it
    /// stopped, largest first (ticks).
    pub threads: Vec<(String, u64)>,
    /// Warnings and errors it logged (first few).
    pub warnings: Vec<String>,
}

impl Tracer {
    /// Starts the tracer of `config` and waits until it is attached. `Ok(None)` for
    /// the untraced configurations.
    pub fn start(config: Config, env: &Env<'_>) -> Result<Option<Tracer>> {
        let (mut cmd, ready): (Command, ReadyLine) = match config {
            Config::Untraced | Config::UntracedEnd => return Ok(None),
            Config::BpftraceExported => {
                let probes = ["SSL_read", "SSL_write"]
                    .map(|s| format!("uprobe:{}:{s}", env.libssl.display()))
                    .join(",\n");
                (
                    bpftrace(env.dir, &probes)?,
                    Box::new(|l| l.contains(BPFTRACE_READY)),
                )
            }
            Config::BpftraceTapwirePoints => {
                let Some(points) = env.tapwire_points.filter(|p| !p.is_empty()) else {
                    bail!("not available: tapwire reported no TLS attach points");
                };
                let probes = points
                    .iter()
                    .map(|(path, off)| format!("uprobe:{}:{off:#x}", path.display()))
                    .collect::<Vec<_>>()
                    .join(",\n");
                (
                    bpftrace(env.dir, &probes)?,
                    Box::new(|l| l.contains(BPFTRACE_READY)),
                )
            }
            Config::Sslsniff => {
                let headers = env
                    .bcc_headers
                    .map_err(|why| anyhow::anyhow!("cannot run: {why}"))?;
                (
                    sslsniff(env.dir, headers)?,
                    Box::new(|l| l.contains(SSLSNIFF_READY)),
                )
            }
            Config::TapwireStdout
            | Config::TapwireEventsOnly
            | Config::TapwireS3
            | Config::TapwireUnselected => {
                let mut cmd = Command::new(env.tapwire);
                if config == Config::TapwireEventsOnly {
                    let path = env.dir.join("tapwire-events.yaml");
                    std::fs::write(&path, EVENTS_ONLY_CONFIG)?;
                    cmd.arg("--config").arg(path);
                }
                if config == Config::TapwireS3 {
                    let (endpoint, bucket, spool) =
                        env.s3.context("not available: no S3 server")?;
                    let path = env.dir.join("tapwire-s3.yaml");
                    std::fs::write(&path, s3_config(endpoint, bucket, spool))?;
                    cmd.arg("--config")
                        .arg(path)
                        .env("S3_ACCESS_KEY", tapwire_testkit::ACCESS_KEY)
                        .env("S3_SECRET_KEY", tapwire_testkit::SECRET_KEY);
                }
                if config == Config::TapwireUnselected {
                    // Probes are attached per file all the same; the kernel
                    // turns nginx's and wrk's hits away.
                    cmd.args(["--exe", "/bin/true"]);
                } else {
                    for pid in env.pids {
                        cmd.arg("--pid").arg(pid.to_string());
                    }
                }
                // Debug for the attach-point lines; console lines (the counters
                // line is read as `stopped counters=JSON`).
                cmd.arg("--log-encoding")
                    .arg("console")
                    .arg("--httpd-listen")
                    .arg("127.0.0.1:0")
                    .env("RUST_LOG", "info,tapwire::capture=debug")
                    .env("NO_COLOR", "1")
                    .env_remove("TAPWIRE_CONFIG")
                    .env_remove("TAPWIRE_LOG")
                    .env_remove("TAPWIRE_LOG_ENCODING")
                    .env_remove("LOG_ENCODING");
                (cmd, Box::new(tapwire_ready))
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(if config == Config::Sslsniff || config.is_tapwire() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(Stdio::piped());
        let mut guard = Guard::spawn(config.short(), &mut cmd, libc::SIGINT, STOP_GRACE)?;
        let child = guard.child_mut().context("tracer child")?;
        let stdout = child.stdout.take().map(Lines::collect).unwrap_or_default();
        let stderr = Lines::collect(child.stderr.take().context("tracer stderr")?);
        let mut tracer = Tracer {
            config,
            guard,
            stdout,
            stderr,
            threads_at_ready: Vec::new(),
        };
        let ready_in = match config {
            Config::BpftraceExported | Config::BpftraceTapwirePoints => tracer.stdout.clone(),
            _ => tracer.stderr.clone(),
        };
        if let Err(e) = ready_in.wait_for(&mut tracer.guard, READY_TIMEOUT, ready) {
            let text = format!("{e:#}");
            if text.contains("not available in this build") {
                bail!("not available: {}", last_error(&tracer.stderr.snapshot()));
            }
            return Err(e.context(format!("starting {}", config.label())));
        }
        if config.is_tapwire() {
            // Capture attaches TLS probes to processes after `capture started` only
            // through its control thread; give it a moment.
            std::thread::sleep(Duration::from_millis(300));
        }
        tracer.threads_at_ready = procfs::thread_ticks(tracer.pid());
        Ok(Some(tracer))
    }

    /// The tracer's pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Its CPU so far, ticks.
    pub fn cpu_ticks(&self) -> u64 {
        procfs::cpu_ticks(self.pid()).unwrap_or(0)
    }

    /// The (file, offset) of every TLS probe tapwire logged as attached.
    pub fn attach_points(&self) -> Vec<(PathBuf, u64)> {
        let mut points: Vec<(PathBuf, u64)> = self
            .stderr
            .snapshot()
            .iter()
            .filter(|l| l.contains("tls probe attached"))
            .filter_map(|l| {
                Some((
                    PathBuf::from(field(l, "path")?),
                    field(l, "offset")?.parse().ok()?,
                ))
            })
            .collect();
        points.sort();
        points.dedup();
        points
    }

    /// Whether tapwire said it started capturing.
    pub fn capturing(&self) -> bool {
        self.stderr
            .snapshot()
            .iter()
            .any(|l| l.contains("capture ready") || l.contains("capture started"))
    }

    /// Stops the tracer and collects its totals.
    pub fn stop(mut self) -> Totals {
        let mut totals = Totals {
            cpu_ticks: self.cpu_ticks(),
            peak_rss_kib: procfs::vm_hwm_kib(self.pid()),
            threads: procfs::ticks_since(procfs::thread_ticks(self.pid()), &self.threads_at_ready),
            ..Totals::default()
        };
        self.guard.stop();
        // Let the pipe readers take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let out = self.stdout.snapshot();
        let err = self.stderr.snapshot();
        match self.config {
            Config::BpftraceExported | Config::BpftraceTapwirePoints => {
                totals.probe_hits = Some(
                    out.iter()
                        .filter(|l| l.starts_with('@'))
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                        .sum(),
                );
            }
            Config::TapwireStdout
            | Config::TapwireEventsOnly
            | Config::TapwireS3
            | Config::TapwireUnselected => {
                let (sum, detail) = drop_counters(&err);
                totals.dropped = Some(sum);
                totals.drop_detail = detail;
                if let Some((records, txns)) = ring_records(&err) {
                    totals
                        .warnings
                        .push(format!("{records} ring records, {txns} transactions"));
                }
                totals.objects_stored = objects_stored(&err);
            }
            _ => {}
        }
        // Warnings worth a note: without the timestamp and the known-harmless
        // memlock notice (the kernel accounts BPF memory to the cgroup).
        let mut warnings: Vec<String> = err
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("Error"))
            .filter(|l| !l.contains("RLIMIT_MEMLOCK"))
            .map(|l| {
                let text = l.split_once("  ").map_or(l.as_str(), |(_, rest)| rest);
                text.chars().take(160).collect()
            })
            .take(3)
            .collect();
        warnings.append(&mut totals.warnings);
        totals.warnings = warnings;
        totals
    }
}

/// tapwire logs `capture ready` once probes, readers and shards run (`tapwire
/// started` in builds without capture).
fn tapwire_ready(line: &str) -> bool {
    line.contains("capture ready") || line.contains("tapwire started")
}

fn bpftrace(dir: &Path, probes: &str) -> Result<Command> {
    let filter = TRACED_COMMS
        .map(|c| format!("comm == \"{c}\""))
        .join(" || ");
    let script = format!(
        "BEGIN {{ printf(\"{BPFTRACE_READY}\\n\"); }}\n{probes}\n/{filter}/ {{ @hits = count(); }}\n"
    );
    let path = dir.join("count.bt");
    std::fs::write(&path, script)?;
    let mut cmd = Command::new("bpftrace");
    // `--unsafe`: addresses inside stripped code have no symbol to check against.
    cmd.arg("--unsafe").arg(path);
    Ok(cmd)
}

/// sslsniff with two changes, written beside the other scratch files: the
/// `min()` the kernel headers of another kernel version reject is spelled out,
/// and events are kept only for nginx and wrk in the kernel (stock sslsniff
/// filters by comm in Python, after copying every process's data), and it says on
/// stderr when its probes are attached.
fn sslsniff(dir: &Path, headers: &Path) -> Result<Command> {
    let stock = std::fs::read_to_string(SSLSNIFF).with_context(|| format!("read {SSLSNIFF}"))?;
    let comm_filter = {
        let cond = TRACED_COMMS
            .map(|c| {
                let mut bytes: Vec<String> = c
                    .bytes()
                    .enumerate()
                    .map(|(i, b)| format!("c[{i}] == {b}"))
                    .collect();
                bytes.push(format!("c[{}] == 0", c.len()));
                format!("({})", bytes.join(" && "))
            })
            .join(" || ");
        format!(
            "\n        {{ char c[16] = {{}}; bpf_get_current_comm(&c, sizeof(c)); if (!({cond})) {{ return 0; }} }}\n"
        )
    };
    let patched = stock
        .replace(
            "min((size_t)MAX_BUF_SIZE, (size_t)len)",
            "(((size_t)len) < ((size_t)MAX_BUF_SIZE) ? ((size_t)len) : ((size_t)MAX_BUF_SIZE))",
        )
        .replace("\n        PID_FILTER\n", &comm_filter)
        .replace(
            "b[\"perf_SSL_rw\"].open_perf_buffer(print_event_rw)",
            &format!(
                "b[\"perf_SSL_rw\"].open_perf_buffer(print_event_rw)\n__import__(\"sys\").stderr.write(\"{SSLSNIFF_READY}\\n\"); __import__(\"sys\").stderr.flush()"
            ),
        );
    if !patched.contains(SSLSNIFF_READY) {
        bail!("cannot run: {SSLSNIFF} differs from the version the harness patches");
    }
    let path = dir.join("sslsniff.py");
    std::fs::write(&path, patched)?;
    let mut cmd = Command::new("/usr/bin/python3");
    // OpenSSL only: nginx and wrk use it; GnuTLS/NSS probes would only cost others.
    cmd.arg(path)
        .args(["--no-gnutls", "--no-nss"])
        .env("BCC_KERNEL_SOURCE", headers);
    Ok(cmd)
}

/// Events to stdout, no object store: transactions are parsed and their
/// events written, no payload leaves the shards.
const EVENTS_ONLY_CONFIG: &str = "version: 2
services:
  event_stores:
    - id: out
      type: stdout
";

fn s3_config(endpoint: &str, bucket: &str, spool: &Path) -> String {
    format!(
        "version: 2
services:
  event_stores:
    - id: out
      type: stdout
  object_stores:
    - id: s3
      type: s3
      endpoint: {endpoint}
      bucket: {bucket}
      region: us-east-1
      insecure: true
      access_key: {{type: env, value: S3_ACCESS_KEY}}
      secret_key: {{type: env, value: S3_SECRET_KEY}}
      spool_dir: {spool}
",
        spool = spool.display()
    )
}

/// The number after ` name: ` in a store's stop line (`StoreStats { …,
/// name: 12, … }`): the whole field name, not a longer one ending with it.
fn stat(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}: ");
    let start = line.find(&pat)? + pat.len();
    let digits = &line[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The value of `name=value` in a log line (quotes removed).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("{name}=");
    let start = line
        .match_indices(&pat)
        .find(|(i, _)| *i == 0 || line.as_bytes()[i - 1] == b' ')?
        .0
        + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// Records lost anywhere in tapwire, from its last log line (`stopped
/// counters={json}`: kernel drops by reason, shard queue full, shard counters)
/// and the stores' stop lines (`dropped: N`). Returns the sum and each non-zero
/// counter.
fn drop_counters(lines: &[String]) -> (u64, Vec<String>) {
    let mut sum = 0;
    let mut detail = Vec::new();
    let mut gaps = Vec::new();
    let mut add = |name: String, v: u64| {
        sum += v;
        if v > 0 {
            detail.push(format!("{name}={v}"));
        }
    };
    let last = lines
        .iter()
        .rev()
        .find_map(|l| l.split_once(" stopped counters=").map(|(_, json)| json));
    if let Some(json) = last
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(json.trim())
    {
        if let Some(kernel) = v["kernel_drops"].as_object() {
            for (reason, n) in kernel {
                let n = n.as_u64().unwrap_or(0);
                if reason.starts_with("overload_") || reason.ends_with("_bytes") {
                    // Graceful overload: records sent with only a prefix,
                    // bytes left out. Nothing is lost whole; and bytes are
                    // not records: shown, not summed.
                    if n > 0 {
                        gaps.push(format!("kernel {reason}={n} (not summed)"));
                    }
                } else {
                    add(format!("kernel {reason}"), n);
                }
            }
        }
        add(
            "shard queue full".into(),
            v["queue_full"].as_u64().unwrap_or(0),
        );
        add(
            "shard gone".into(),
            v["routing"]["shard_gone"].as_u64().unwrap_or(0),
        );
        for key in ["output_full", "conn_table_full", "h2_streams_over_limit"] {
            add(
                format!("shard {key}"),
                v["shards"][key].as_u64().unwrap_or(0),
            );
        }
        // Gaps are the shards' view of records lost upstream (counted above):
        // shown, not added again.
        for key in ["gap_records", "late"] {
            let n = v["shards"][key].as_u64().unwrap_or(0);
            if n > 0 {
                gaps.push(format!("shard {key}={n} (not summed)"));
            }
        }
    }
    for line in lines.iter().filter(|l| l.contains("store stopped")) {
        let store = field(line, "store").unwrap_or("?");
        if let Some(n) = stat(line, "dropped") {
            add(format!("store {store}"), n);
        }
        // Announcements an object store could not make (`artifact_record`
        // events lost in user space).
        if let Some(n) = stat(line, "artifact_records_dropped") {
            add(format!("store {store} artifact_records_dropped"), n);
        }
        // The reasons, from `drops: Drops { queue_full: 2, ... }`.
        if let Some(i) = line.find("drops: Drops { ") {
            let rest = &line[i + "drops: Drops { ".len()..];
            let fields = &rest[..rest.find('}').unwrap_or(rest.len())];
            for (name, n) in fields.split(", ").filter_map(|f| f.trim().split_once(": ")) {
                if n.parse::<u64>().is_ok_and(|n| n > 0) {
                    gaps.push(format!("store {store} {name}={n} (not summed)"));
                }
            }
        }
    }
    detail.extend(gaps);
    (sum, detail)
}

/// Records tapwire's rings delivered and transactions its shards finished.
pub fn ring_records(lines: &[String]) -> Option<(u64, u64)> {
    let json = lines
        .iter()
        .rev()
        .find_map(|l| l.split_once(" stopped counters=").map(|(_, json)| json))?;
    let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    Some((
        v["ring_records"].as_u64()?,
        v["shards"]["transactions"].as_u64()?,
    ))
}

/// `stored` + `deduplicated` of the object stores' stop lines.
fn objects_stored(lines: &[String]) -> Option<u64> {
    let mut found = false;
    let mut total = 0;
    for line in lines.iter().filter(|l| l.contains("object store stopped")) {
        found = true;
        for key in ["stored", "deduplicated"] {
            total += stat(line, key).unwrap_or(0);
        }
    }
    found.then_some(total)
}

/// The last ERROR-ish line of a log, for "not available" notes.
fn last_error(lines: &[String]) -> String {
    lines
        .iter()
        .rev()
        .find(|l| l.contains("tapwire:") || l.contains("ERROR"))
        .or(lines.last())
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_point_fields_are_read() {
        let line = "2026-11-28T01:00:00Z DEBUG tapwire::capture::loader: tls probe attached path=/usr/lib/x86_64-linux-gnu/libssl.so.3 symbol=\"SSL_read\" offset=219456 pid=Some(12) placement=Internal";
        assert_eq!(
            field(line, "path"),
            Some("/usr/lib/x86_64-linux-gnu/libssl.so.3")
        );
        assert_eq!(field(line, "offset"), Some("219456"));
        assert_eq!(field(line, "symbol"), Some("SSL_read"));
    }

    #[test]
    fn drop_counters_and_stored_objects_are_summed() {
        let lines = vec![
            "INFO tapwire::agent: object store stopped store=\"s3\" stats=StoreStats { accepted: 30, stored: 3, deduplicated: 27, dropped: 1, drops: Drops { queue_full: 1, spool_full: 0 }, errors: 0, multipart: 0, bytes: 9, artifact_records: 20, artifact_records_dropped: 2 }".to_owned(),
            r#"INFO tapwire::agent: stopped counters={"kernel_drops":{"lost_bytes":70000,"overload_records":4,"ring_full":5,"too_big":0},"ring_records":100,"queue_full":2,"shards":{"records":98,"transactions":40,"output_full":0,"gap_records":3}}"#.to_owned(),
        ];
        let (sum, detail) = drop_counters(&lines);
        assert_eq!(sum, 10);
        assert_eq!(
            detail,
            [
                "kernel ring_full=5",
                "shard queue full=2",
                "store s3=1",
                "store s3 artifact_records_dropped=2",
                "kernel lost_bytes=70000 (not summed)",
                "kernel overload_records=4 (not summed)",
                "shard gap_records=3 (not summed)",
                "store s3 queue_full=1 (not summed)"
            ]
        );
        assert_eq!(objects_stored(&lines), Some(30));
        assert_eq!(ring_records(&lines), Some((100, 40)));
    }
}
