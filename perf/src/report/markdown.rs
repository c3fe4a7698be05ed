//! The results as markdown.

use std::fmt::Write as _;

use super::machine::Machine;
use super::summary::{self, OBJECTS_PER_REQUEST};
use crate::capacity::CapacityResults;
use crate::overhead::{Config, Results, Workload, wrk};

/// Everything a results file says.
pub struct Report<'a> {
    /// Where it ran.
    pub machine: &'a Machine,
    /// The overhead runs, if made.
    pub overhead: Option<&'a Results>,
    /// The capacity runs, if made.
    pub capacity: Option<&'a CapacityResults>,
    /// The late-files run, if made (or why it failed).
    pub late_files: Option<&'a Result<crate::late_files::LateFilesResult, String>>,
    /// The per-TLS-call cost, if measured (or why it failed).
    pub tls_calls: Option<&'a Result<crate::tls_calls::TlsCallsResult, String>>,
    /// The idle and memory runs, if made.
    pub footprint: Option<&'a crate::footprint::FootprintResults>,
    /// `--quick`.
    pub quick: bool,
    /// The command line.
    pub command: &'a str,
    /// Clock ticks per second of /proc CPU times.
    pub tck: f64,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

impl Report<'_> {
    /// The whole markdown document.
    pub fn markdown(&self) -> String {
        let m = self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# tapwire overhead benchmark — {} {} UTC, {}\n",
            m.date, m.time, m.host
        );
        let _ = writeln!(
            s,
            "Machine: {} ({} cores), kernel {}. Command: `{}`{}.\n",
            m.cpu,
            m.cores,
            m.kernel,
            self.command,
            if self.quick {
                " (quick: few, short rounds; indicative only)"
            } else {
                ""
            }
        );
        if let Some(r) = self.overhead {
            self.overhead_tables(&mut s, r);
        }
        if let Some(c) = self.capacity {
            capacity_table(&mut s, c);
        }
        if let Some(r) = self.tls_calls {
            tls_calls_section(&mut s, r);
        }
        if let Some(r) = self.late_files {
            late_files_section(&mut s, r);
        }
        if let Some(f) = self.footprint {
            footprint_section(&mut s, f);
        }
        s
    }

    fn overhead_tables(&self, s: &mut String, r: &Results) {
        let _ = writeln!(
            s,
            "nginx (1 worker) and a Go `net/http` server (`GOMAXPROCS=1`, Go's `crypto/tls`) serving \
             HTTP/1.1 keep-alive on loopback; wrk -t{} -c{} -d{}s --latency; \
             {} interleaved rounds, configurations in the order below within each round. \
             Ratio = requests/s with the configuration ÷ untraced in the same round (median over rounds, \
             range in brackets).\n",
            wrk::THREADS,
            wrk::CONNECTIONS,
            r.secs,
            r.rounds
        );
        let _ = writeln!(s, "## Throughput ratio to untraced\n");
        let _ = writeln!(
            s,
            "| configuration | {} |",
            Workload::ALL.map(Workload::label).join(" | ")
        );
        let _ = writeln!(s, "| --- |{}", " --- |".repeat(Workload::ALL.len()));
        for config in Config::ALL {
            let mut row = format!("| {} |", config.label());
            if let Some(why) = r.unavailable.get(&config) {
                let _ = writeln!(s, "{row} {} |", why.replace('|', "/"));
                continue;
            }
            for w in Workload::ALL {
                let cell = summary::cell(r, config, w, self.tck);
                let text = match cell {
                    Some(c) => match (c.ratio, c.ratio_range) {
                        (Some(x), Some((lo, hi))) if c.rounds > 1 => {
                            format!("{x:.2} [{lo:.2}–{hi:.2}]")
                        }
                        (Some(x), _) => format!("{x:.2}"),
                        _ => "–".into(),
                    },
                    None if !config.covers(w) && config.tls_only() => "n/a (OpenSSL only)".into(),
                    None if !config.covers(w) => "n/a".into(),
                    None => "–".into(),
                };
                let _ = write!(row, " {text} |");
            }
            let _ = writeln!(s, "{row}");
        }
        for w in Workload::ALL {
            if !r.samples.iter().any(|x| x.workload == w) {
                // Not run (`--workloads`).
                continue;
            }
            let _ = writeln!(s, "\n## {}\n", w.label());
            let _ = writeln!(
                s,
                "| configuration | req/s | ratio | p50 µs | p99 µs | added CPU µs/req (server+wrk+tracer) | added CPU µs/req (machine) | tracer CPU s per 1k req | wrk errors |"
            );
            let _ = writeln!(
                s,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for config in Config::ALL {
                let Some(c) = summary::cell(r, config, w, self.tck) else {
                    continue;
                };
                // Tracer CPU varies more between rounds than most changes
                // move it: its range is shown beside the median.
                let tracer = if c.rounds > 1 && c.tracer_range.1 > 0.0 {
                    format!(
                        "{:.4} [{:.4}–{:.4}]",
                        c.tracer_s_per_1k, c.tracer_range.0, c.tracer_range.1
                    )
                } else {
                    format!("{:.4}", c.tracer_s_per_1k)
                };
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {} | {:.0} | {:.0} | {} | {} | {tracer} | {} |",
                    config.label(),
                    c.rps,
                    opt(c.ratio, 2),
                    c.p50_us,
                    c.p99_us,
                    opt(c.added_cpu_us, 1),
                    opt(c.added_machine_us, 1),
                    c.errors
                );
            }
        }
        let _ = writeln!(s, "\n## Tracers\n");
        let _ = writeln!(
            s,
            "Summed over rounds. Expected objects = requests × {OBJECTS_PER_REQUEST} (request headers, \
             response headers, response body, on both nginx's and wrk's side). Records dropped: \
             whole ring records lost in the kernel, records and objects dropped in user space, and \
             `artifact_record` events an object store could not make (notes name each). Probe hits \
             counted by bpftrace, per request.\n"
        );
        let _ = writeln!(
            s,
            "| configuration | runs | requests | records dropped | objects stored / expected | peak RSS MiB | probe hits/req | notes |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for config in Config::ALL {
            let Some(t) = summary::tracer(r, config) else {
                continue;
            };
            let objects = match t.objects_stored {
                Some(n) => format!("{n} / {}", t.requests * OBJECTS_PER_REQUEST),
                None => "–".into(),
            };
            let mut notes = t.notes.clone();
            if !t.drop_detail.is_empty() {
                notes.insert(0, t.drop_detail.join(", "));
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                config.label(),
                t.runs,
                t.requests,
                t.dropped.map_or("–".into(), |d| d.to_string()),
                objects,
                opt(t.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
                opt(t.hits_per_request, 2),
                notes.join("; ").replace('|', "/")
            );
        }
        let _ = writeln!(
            s,
            "\nWhere each tracer's CPU went, by thread (share of its CPU over all rounds, start-up left out; the top three \
             name its largest costs by pipeline stage):\n"
        );
        for config in Config::ALL {
            let Some(t) = summary::tracer(r, config) else {
                continue;
            };
            if t.threads.is_empty() {
                continue;
            }
            let top: Vec<String> = t
                .threads
                .iter()
                .take(5)
                .map(|(n, f)| format!("`{n}` {:.0}%", f * 100.0))
                .collect();
            let _ = writeln!(s, "- {}: {}", config.label(), top.join(", "));
        }
        for (config, workload, profile) in &r.profiles {
            let _ = writeln!(
                s,
                "\nProfile of {} under the {} load, `perf record -g` on its threads, \
                 self time by thread, library and symbol; then its probe programs' run time \
                 (a separate run from the rounds above, with the kernel's BPF statistics on):\n\n```text\n{profile}\n```",
                config.label(),
                workload.label()
            );
        }
        let _ = writeln!(s, "\n## Go probes\n");
        if let Some(why) = &r.go_unavailable {
            let _ = writeln!(s, "No Go server: {}\n", why.replace('|', "/"));
        }
        if let Some(pid) = r.go_server_pid {
            let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
            let n = r.tapwire_points.iter().filter(|p| p.0 == exe).count();
            if n > 0 {
                let _ = writeln!(
                    s,
                    "The Go server (`{}`) carried {n} tapwire TLS probe points: its rows \
                     above include the Go probes.\n",
                    exe.display()
                );
            } else {
                let _ = writeln!(
                    s,
                    "The Go server (`{}`) was **not** probed: its rows above measure the \
                     syscall path only.\n",
                    exe.display()
                );
            }
        }
        match &r.go_probe_cost {
            Some(Ok(c)) => {
                let _ = writeln!(
                    s,
                    "`gotls calls` (one thread: a TLS client's 64-byte `Write`s, each read by a TLS \
                     server's `Read` on loopback; {} probe hits per message): {:.0} ns per message \
                     untraced, {:.0} ns with tapwire: **{:.2} µs per probe hit** (median of 3 runs; \
                     the whole capture per hit, records and their processing included).\n",
                    crate::overhead::gotls::PROBES_PER_MESSAGE,
                    c.untraced_ns,
                    c.traced_ns,
                    c.per_call_us()
                );
                let _ = writeln!(
                    s,
                    "Go probe placements (an emulated instruction costs the kernel about \
                     0.5–0.8 µs per hit, a single-stepped one about 11.5 µs):\n"
                );
                for p in &c.placements {
                    let _ = writeln!(s, "- {p}");
                }
                let _ = writeln!(s);
            }
            Some(Err(why)) => {
                let _ = writeln!(s, "Go probe cost not measured: {}\n", why.replace('|', "/"));
            }
            None => {}
        }
        let _ = writeln!(s, "\ntapwire's TLS attach points (from its log):");
        if r.tapwire_points.is_empty() {
            let _ = writeln!(
                s,
                "none reported{}.",
                if r.tapwire_capturing {
                    ""
                } else {
                    " — this build of tapwire does not capture yet"
                }
            );
        } else {
            for (path, off) in &r.tapwire_points {
                let _ = writeln!(s, "- `{}` + {off:#x}", path.display());
            }
        }
        s.push('\n');
    }
}

fn footprint_section(s: &mut String, f: &crate::footprint::FootprintResults) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        s,
        "## Idle agent
"
    );
    match &f.idle {
        Ok(i) => {
            let _ = writeln!(
                s,
                "Default config, selecting a process that makes no traffic, {:.0} s after start-up: \
                 **{:.2}% of a core**, **{:.1} MiB resident**, {} threads.\n",
                i.secs,
                i.cpu_percent,
                mib(i.rss_kib),
                i.threads
            );
        }
        Err(why) => {
            let _ = writeln!(
                s,
                "Not measured: {}
",
                why.replace('|', "/")
            );
        }
    }
    let _ = writeln!(
        s,
        "## Memory under uploads
"
    );
    match &f.memory {
        Ok(m) => {
            let (conns, posts, body) = m.uploads;
            let sent = (conns * posts * body) as f64 / f64::from(1u32 << 30);
            let not_kept: Vec<String> = m
                .not_kept
                .iter()
                .map(|(k, v)| format!("`{k}` {v}"))
                .collect();
            let _ = writeln!(
                s,
                "{conns} plaintext loopback connections, each pipelining {posts} POSTs of {} MiB \
                 ({sent:.1} GiB in {:.1} s) to a server that reads every byte and never answers; \
                 default config and memory budget. tapwire's resident memory: {:.1} MiB before \
                 the load, **peak {:.1} MiB**. Not kept, counted: {}.\n",
                body >> 20,
                m.secs,
                mib(m.idle_rss_kib),
                mib(m.peak_rss_kib),
                if not_kept.is_empty() {
                    "nothing".to_owned()
                } else {
                    not_kept.join(", ")
                }
            );
        }
        Err(why) => {
            let _ = writeln!(
                s,
                "Not measured: {}
",
                why.replace('|', "/")
            );
        }
    }
}

fn capacity_table(s: &mut String, c: &CapacityResults) {
    let _ = writeln!(
        s,
        "## Capacity without the kernel\n\nHTTP/1.1 keep-alive exchanges (512 connections per \
         reader), encoded in the probes' record format and decoded by the agent's own decoder, through {} reader(s) → {} shard(s) → parser → output → counting stores. Per core = \
         per CPU second of shards, output and stores (readers excluded). Offered loads rise by \
         ×1.5 from 8 MB/s of payload until records drop, then the gap is narrowed.\n",
        c.readers, c.shards
    );
    let _ = writeln!(
        s,
        "| body | offered rec/s | taken rec/s | MB/s | txn/s | pipeline cores | rec/s per core | MB/s per core | shard cores | output cores | dropped: shard gone | pushback waits |"
    );
    let _ = writeln!(
        s,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for p in &c.points {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {:.0} | {:.1} | {:.2} | {:.2} | {} | {} |",
            size(p.body),
            p.offered,
            p.records_per_s,
            p.bytes_per_s / 1e6,
            p.txns_per_s,
            p.pipeline_cores,
            p.records_per_core(),
            p.bytes_per_core() / 1e6,
            p.shard_cores,
            p.output_cores,
            p.shard_gone,
            p.pushback_waits
        );
    }
    let mut bodies: Vec<usize> = c.points.iter().map(|p| p.body).collect();
    bodies.dedup();
    for body in bodies {
        let paced: Vec<_> = c.points.iter().filter(|p| p.body == body).collect();
        let clean = paced
            .iter()
            .filter(|p| p.dropped() == 0)
            .max_by(|a, b| a.offered.total_cmp(&b.offered));
        let first_drop = paced
            .iter()
            .filter(|p| p.dropped() > 0)
            .map(|p| p.offered)
            .fold(None, |a: Option<f64>, o| Some(a.map_or(o, |a| a.min(o))));
        let clean_text = clean.map_or("no tested load is free of drops".into(), |p| {
            format!(
                "no drops up to {:.0} records/s ({:.1} MB/s) offered, where the pipeline used {:.2} cores: \
                 {:.0} records/s and {:.1} MB/s per core",
                p.offered,
                p.bytes_per_s / 1e6,
                p.pipeline_cores,
                p.records_per_core(),
                p.bytes_per_core() / 1e6
            )
        });
        let _ = writeln!(
            s,
            "\n**{} bodies**: {clean_text}; drops begin at {}.",
            size(body),
            first_drop.map_or("no tested load".into(), |v| format!(
                "{v:.0} records/s offered"
            ))
        );
    }
    s.push('\n');
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// The per-TLS-call cost, selected beside unselected.
fn tls_calls_section(s: &mut String, r: &Result<crate::tls_calls::TlsCallsResult, String>) {
    let _ = writeln!(s, "## Cost of a TLS call, selected and unselected\n");
    match r {
        Ok(c) => {
            let _ = writeln!(
                s,
                "`tls_calls` (one thread, the system libssl: 64-byte `SSL_write`s on a loopback \
                 TCP connection to itself, each read by an `SSL_read`; thread CPU time, median of \
                 runs). tapwire selects one copy of the program by executable; a second copy \
                 (another inode) runs unselected beside it, so its probe hits exit early in the \
                 kernel. A third copy, not selected either, loads a private copy of libssl that \
                 tapwire never probes (no selected process maps it): it pays the syscall \
                 tracepoints of its `write`s and `read`s alone, so the difference between the \
                 two unselected rows is what the TLS probe itself costs. {} ring records read \
                 while they ran.\n\n\
                 | process | ns per message (2 TLS calls) | added µs per TLS call |\n\
                 | --- | ---: | ---: |\n\
                 | untraced | {:.0} | – |\n\
                 | selected (captured) | {:.0} | {:.2} |\n\
                 | not selected | {:.0} | **{:.2}** |\n\
                 | not selected, libssl not probed (syscall tracepoints only) | {:.0} | {:.2} |\n\n\
                 The TLS probe's share of an unselected call: **{:.2} µs** (one probe hit that \
                 exits early, with uprobe sessions; a uprobe and a uretprobe on kernels before \
                 6.13 or with `--uprobe-sessions off`).\n",
                c.ring_records,
                c.untraced_ns,
                c.selected_ns,
                c.added_us(c.selected_ns),
                c.unselected_ns,
                c.added_us(c.unselected_ns),
                c.unprobed_ns,
                c.added_us(c.unprobed_ns),
                (c.unselected_ns - c.unprobed_ns)
                    / f64::from(crate::tls_calls::CALLS_PER_MESSAGE)
                    / 1000.0,
            );
            if !c.unselected_programs.is_empty() {
                let total: f64 = c.unselected_programs.iter().map(|p| p.1).sum();
                let each = c
                    .unselected_programs
                    .iter()
                    .map(|(name, ns)| format!("`{name}` {ns:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    s,
                    "Of that, the probes' own programs in the unselected process (the kernel's \
                     run-time statistics, one more run): **{:.2} µs per TLS call** ({each} ns \
                     per message); the rest is the kernel's work around them: the trap at each \
                     function entry (and, without uprobe sessions, the return probe armed at \
                     every entry and taken at every return), and the syscall tracepoints' slow \
                     path.\n",
                    total / f64::from(crate::tls_calls::CALLS_PER_MESSAGE) / 1000.0,
                );
            }
        }
        Err(why) => {
            let _ = writeln!(s, "Not measured: {}\n", why.replace('|', "/"));
        }
    }
}

/// The exec/map-to-probes-live windows of files first seen after start.
fn late_files_section(s: &mut String, r: &Result<crate::late_files::LateFilesResult, String>) {
    let _ = writeln!(s, "## TLS files first seen after start\n");
    let l = match r {
        Ok(l) => l,
        Err(why) => {
            let _ = writeln!(s, "Not measured: {}\n", why.replace('|', "/"));
            return;
        }
    };
    let _ = writeln!(
        s,
        "Programs started in a cgroup tapwire selects, each bringing a file tapwire has not \
         seen (a new inode): {} python processes loading a new copy of libssl \
         (`LD_LIBRARY_PATH`), {} new copies of a Go TLS program (`crypto/tls` linked in). \
         Time from the exec or mapping (kernel timestamp) to the file's probes being live, as \
         tapwire measures it. A program's TLS calls inside that window are not captured; files \
         known at start have none.\n\n\
         | file first seen at | runs | files probed | p50 µs | p99 µs | max µs |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |",
        l.library_runs, l.exec_runs
    );
    for (what, runs, w) in [
        ("mapping (library)", l.library_runs, &l.after_map),
        ("exec (executable)", l.exec_runs, &l.after_exec),
    ] {
        let _ = writeln!(
            s,
            "| {what} | {runs} | {} | {} | {} | {} |",
            w.files, w.p50_us, w.p99_us, w.max_us
        );
    }
    let _ = writeln!(s);
}
