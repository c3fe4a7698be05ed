//! The probes' own cost: run count and run time of each of tapwire's BPF
//! programs, from the kernel's BPF statistics (`kernel.bpf_stats_enabled`,
//! Linux 5.1), read from the `fdinfo` of the agent's program descriptors.
//! That time is spent in the traced programs (nginx, wrk), not in the agent,
//! so the agent's CPU per request does not show it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Keeps the kernel's BPF statistics on while it lives; restores the
/// setting found.
pub struct StatsOn {
    before: String,
}

impl StatsOn {
    /// Turns the statistics on (they cost two clock reads per program run).
    pub fn new() -> std::io::Result<Self> {
        let before = std::fs::read_to_string(SYSCTL)?;
        std::fs::write(SYSCTL, "1")?;
        Ok(StatsOn { before })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, self.before.trim());
    }
}

/// One program's totals so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgStats {
    pub runs: u64,
    pub run_ns: u64,
}

/// Totals per program name of the BPF programs `pid` holds descriptors of
/// (programs of one name are summed), read as the TLS-call bench reads them.
pub fn read(pid: u32) -> BTreeMap<String, ProgStats> {
    let mut out: BTreeMap<String, ProgStats> = BTreeMap::new();
    for (id, (runs, run_ns)) in crate::tls_calls::program_stats(pid) {
        let name = crate::tls_calls::program_name(id).unwrap_or_else(|| format!("prog {id}"));
        let s = out.entry(name).or_default();
        s.runs += runs;
        s.run_ns += run_ns;
    }
    out
}

/// The programs that ran, by time per request, as a text table.
pub fn table(stats: &BTreeMap<String, ProgStats>, requests: u64) -> String {
    let requests = requests.max(1) as f64;
    let mut rows: Vec<(&String, &ProgStats)> = stats.iter().filter(|(_, s)| s.runs > 0).collect();
    rows.sort_by_key(|(_, s)| std::cmp::Reverse(s.run_ns));
    let mut s = format!(
        "{:<24} {:>12} {:>10} {:>12}\n",
        "program", "runs/request", "ns/run", "µs/request"
    );
    let mut total = 0.0;
    for (name, p) in rows {
        let per_request = p.run_ns as f64 / requests / 1e3;
        total += per_request;
        let _ = writeln!(
            s,
            "{name:<24} {:>12.2} {:>10.0} {per_request:>12.2}",
            p.runs as f64 / requests,
            p.run_ns as f64 / p.runs as f64
        );
    }
    let _ = write!(s, "{:<24} {:>12} {:>10} {total:>12.2}", "total", "", "");
    s
}
