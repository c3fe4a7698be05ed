//! Medians over rounds, ratios to the untraced run of the same round, added CPU.

use crate::overhead::{Config, Results, Workload};

/// Objects one request yields when tapwire sees both ends (nginx and wrk): request
/// headers, response headers and response body on each side (GET, no request body).
pub const OBJECTS_PER_REQUEST: u64 = 6;

/// One configuration under one workload, over rounds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cell {
    /// Rounds measured.
    pub rounds: usize,
    /// Median requests/s.
    pub rps: f64,
    /// Median p50 latency, µs.
    pub p50_us: f64,
    /// Median p99 latency, µs.
    pub p99_us: f64,
    /// Median of the per-round ratio to untraced.
    pub ratio: Option<f64>,
    /// Smallest and largest per-round ratio.
    pub ratio_range: Option<(f64, f64)>,
    /// Median added CPU per request (nginx + wrk + tracer) over untraced, µs.
    pub added_cpu_us: Option<f64>,
    /// Median added CPU per request of the whole machine over untraced, µs.
    pub added_machine_us: Option<f64>,
    /// Median tracer CPU seconds per 1,000 requests.
    pub tracer_s_per_1k: f64,
    /// Smallest and largest per-round tracer CPU seconds per 1,000 requests.
    pub tracer_range: (f64, f64),
    /// wrk errors, summed.
    pub errors: u64,
}

/// A configuration's tracer instances, summed over rounds.
#[derive(Debug, Clone, Default)]
pub struct TracerSummary {
    /// Instances.
    pub runs: usize,
    /// Requests served while they ran.
    pub requests: u64,
    /// Records dropped.
    pub dropped: Option<u64>,
    /// Drop counters that were non-zero.
    pub drop_detail: Vec<String>,
    /// Objects the stores took.
    pub objects_stored: Option<u64>,
    /// Largest peak RSS, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Probe hits per request (bpftrace).
    pub hits_per_request: Option<f64>,
    /// CPU share by thread group over all runs, largest first (fraction of its CPU).
    pub threads: Vec<(String, f64)>,
    /// Notes: warnings logged, bucket sizes.
    pub notes: Vec<String>,
}

/// The smallest and largest of `v`, or `None` when empty.
pub fn range(v: &[f64]) -> Option<(f64, f64)> {
    v.iter().fold(None, |acc, &x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((f64::min(lo, x), f64::max(hi, x))),
    })
}

/// The median of `v` (NaN-free), or `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The cell of `config` under `workload`, or `None` if it never ran.
pub fn cell(results: &Results, config: Config, workload: Workload, tck: f64) -> Option<Cell> {
    let samples: Vec<_> = results
        .samples
        .iter()
        .filter(|s| s.config == config && s.workload == workload)
        .collect();
    if samples.is_empty() {
        return None;
    }
    let base = |round: u32| {
        results
            .samples
            .iter()
            .find(|s| s.config == Config::Untraced && s.workload == workload && s.round == round)
    };
    let per_req_us = |ticks: u64, requests: u64| ticks as f64 / tck * 1e6 / requests.max(1) as f64;
    let mut ratios = Vec::new();
    let mut added = Vec::new();
    let mut added_machine = Vec::new();
    for s in &samples {
        if let Some(b) = base(s.round) {
            ratios.push(s.wrk.rps / b.wrk.rps);
            let app = |x: &crate::overhead::Sample| {
                per_req_us(
                    x.server_ticks + x.wrk.cpu_ticks + x.tracer_ticks,
                    x.wrk.requests,
                )
            };
            added.push(app(s) - app(b));
            added_machine.push(
                per_req_us(s.machine_ticks, s.wrk.requests)
                    - per_req_us(b.machine_ticks, b.wrk.requests),
            );
        }
    }
    let ratio_range = range(&ratios);
    let tracer: Vec<f64> = samples
        .iter()
        .map(|s| s.tracer_ticks as f64 / tck / s.wrk.requests.max(1) as f64 * 1000.0)
        .collect();
    let tracer_range = range(&tracer)?;
    Some(Cell {
        rounds: samples.len(),
        rps: median(samples.iter().map(|s| s.wrk.rps).collect())?,
        p50_us: median(samples.iter().map(|s| s.wrk.p50_us).collect())?,
        p99_us: median(samples.iter().map(|s| s.wrk.p99_us).collect())?,
        ratio: median(ratios),
        ratio_range,
        added_cpu_us: median(added),
        added_machine_us: median(added_machine),
        tracer_s_per_1k: median(tracer)?,
        tracer_range,
        errors: samples.iter().map(|s| s.wrk.errors).sum(),
    })
}

/// The tracer instances of `config`, summed.
pub fn tracer(results: &Results, config: Config) -> Option<TracerSummary> {
    let runs: Vec<_> = results
        .tracers
        .iter()
        .filter(|t| t.config == config)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let sum_opt = |f: &dyn Fn(&crate::overhead::TracerRun) -> Option<u64>| {
        runs.iter()
            .map(|r| f(r))
            .try_fold(0u64, |acc, v| v.map(|v| acc + v))
    };
    let requests: u64 = runs.iter().map(|r| r.requests).sum();
    let mut notes: Vec<String> = Vec::new();
    let mut drop_detail = Vec::new();
    for r in &runs {
        for n in &r.totals.warnings {
            if !notes.contains(n) && notes.len() < 4 {
                notes.push(n.clone());
            }
        }
        drop_detail.extend(r.totals.drop_detail.iter().cloned());
    }
    let mut threads: Vec<(String, u64)> = Vec::new();
    for r in &runs {
        for (name, ticks) in &r.totals.threads {
            match threads.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += ticks,
                None => threads.push((name.clone(), *ticks)),
            }
        }
    }
    threads.sort_by_key(|t| std::cmp::Reverse(t.1));
    let all: u64 = threads.iter().map(|t| t.1).sum();
    Some(TracerSummary {
        threads: threads
            .into_iter()
            .map(|(n, t)| (n, t as f64 / all.max(1) as f64))
            .collect(),
        runs: runs.len(),
        requests,
        dropped: sum_opt(&|r| r.totals.dropped),
        drop_detail,
        objects_stored: sum_opt(&|r| r.totals.objects_stored),
        peak_rss_kib: runs.iter().filter_map(|r| r.totals.peak_rss_kib).max(),
        hits_per_request: sum_opt(&|r| r.totals.probe_hits)
            .map(|h| h as f64 / requests.max(1) as f64),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::{median, range};

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(vec![]), None);
        assert_eq!(range(&[]), None);
        assert_eq!(range(&[0.0102, 0.0166, 0.0143]), Some((0.0102, 0.0166)));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
