//! `GET /metrics`: every counter the agent keeps, in the Prometheus text
//! format (0.0.4), encoded by the `prometheus-client` crate. Names carry the
//! `tapwire_` prefix; `docs/metrics.md` lists each with its labels and the Qtap
//! metric it stands for.
//!
//! The agent's main thread gathers a [`Snapshot`] once a second (reading the
//! kernel's drop counters, the readers', shards' and stores' published
//! counters) and the status server encodes the latest one per scrape, so a
//! scrape never touches a pipeline thread.
//!
//! Shard and store counters are encoded from their `Serialize` form: a counter
//! added there appears here (`tapwire_shard_NAME_total`,
//! `tapwire_store_NAME_total`) without a change in this file.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{Status, http_metrics};

/// The counters at one moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Records the kernel could not deliver, by reason.
    pub kernel_drops: Vec<(&'static str, u64)>,
    /// Events the kernel left out on purpose (the agent's own traffic), by reason.
    pub kernel_excluded: Vec<(&'static str, u64)>,
    /// Kernel maps keyed by process: (map, entries reclaimed, entries held).
    pub kernel_maps: Vec<(String, u64, u64)>,
    /// Each ring reader's counters.
    pub readers: Vec<ReaderSnapshot>,
    /// Each shard's counters, by name.
    pub shards: Vec<Vec<(String, u64)>>,
    /// Each store's counters.
    pub stores: Vec<StoreSnapshot>,
    /// Bytes charged to the memory budget now (bodies, reorder windows).
    pub budget_used: u64,
    /// The memory budget's share for bodies and reorder windows.
    pub budget_limit: u64,
    /// What `tap.filters` left out.
    pub filtered: crate::capture::Filtered,
    /// Config reloads that took effect.
    pub reloads_ok: u64,
    /// Config reloads refused (the old config kept running).
    pub reloads_failed: u64,
    /// Files (libraries and executables) with TLS probes, per library kind:
    /// `(kind, files, probe points)`.
    pub tls_probed: Vec<(&'static str, u64, u64)>,
    /// TLS probe points on instructions the kernel single-steps.
    pub tls_placement_fallbacks: u64,
    /// TLS calls probed with uprobe sessions (else a uprobe and a uretprobe).
    pub tls_uprobe_sessions: bool,
}

/// One ring reader (one per CPU).
#[derive(Debug, Default, Clone)]
pub struct ReaderSnapshot {
    /// Its CPU.
    pub cpu: u32,
    /// Records read from the ring.
    pub records: u64,
    /// Ring bytes consumed.
    pub bytes: u64,
    /// Batches drained.
    pub batches: u64,
    /// Entries that did not decode.
    pub decode_errors: u64,
    /// Its routing counters (backpressure waits, …), by name.
    pub router: Vec<(String, u64)>,
}

/// One store.
#[derive(Debug, Default, Clone)]
pub struct StoreSnapshot {
    /// `event` or `object`.
    pub kind: &'static str,
    /// The store id from the config.
    pub id: String,
    /// Its counters (monotonic), by name.
    pub counters: Vec<(String, u64)>,
    /// Its gauges (current levels), by name.
    pub gauges: Vec<(String, u64)>,
}

/// The numeric fields of `value`'s serialized form, nested names joined with
/// `_` (`{"spool": {"bytes": 3}}` → `spool_bytes`).
pub fn numbers(value: &impl serde::Serialize) -> Vec<(String, u64)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, u64)>) {
        match value {
            serde_json::Value::Number(n) => {
                if let Some(n) = n.as_u64() {
                    out.push((prefix.to_owned(), n));
                }
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}_{k}")
                    };
                    walk(&name, v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(value) {
        walk("", &value, &mut out);
    }
    out
}

/// Encodes the latest snapshot and the `http_metrics` series.
pub fn render(status: &Arc<Status>) -> String {
    let mut registry = Registry::with_prefix("tapwire");
    registry.register_collector(Box::new(Collect(Arc::clone(status))));
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
        out.clear();
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

struct Collect(Arc<Status>);

impl std::fmt::Debug for Collect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collect")
    }
}

type Labels = Vec<(&'static str, String)>;

/// Shard fields that are levels, not counts: exported as gauges.
const SHARD_GAUGES: [&str; 1] = ["connections"];

/// A per-reader counter: name, help, and how to read it.
type ReaderCounter = (&'static str, &'static str, fn(&ReaderSnapshot) -> u64);

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, i64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `(name, labels, value)` grouped by name, in first-seen order.
fn grouped(samples: Vec<(String, Labels, u64)>) -> Vec<(String, Vec<(Labels, u64)>)> {
    let mut out: Vec<(String, Vec<(Labels, u64)>)> = Vec::new();
    for (name, labels, value) in samples {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, list)) => list.push((labels, value)),
            None => out.push((name, vec![(labels, value)])),
        }
    }
    out
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let snap = self.0.snapshot();
        gauge(
            &mut enc,
            "build_info",
            "Version and git commit of the running agent (always 1)",
            [(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("commit", env!("TAPWIRE_GIT_COMMIT").to_owned()),
                ],
                1,
            )],
        )?;
        counter(
            &mut enc,
            "kernel_drops",
            "Records the kernel side could not deliver, by reason",
            snap.kernel_drops
                .iter()
                .map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n)),
        )?;
        counter(
            &mut enc,
            "kernel_excluded",
            "Connections the probes left out (or kept without payload) on purpose, by reason",
            snap.kernel_excluded
                .iter()
                .map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n)),
        )?;
        counter(
            &mut enc,
            "kernel_reclaimed",
            "Kernel map entries of exited processes removed, by map",
            snap.kernel_maps
                .iter()
                .map(|(map, n, _)| (vec![("map", map.clone())], *n)),
        )?;
        gauge(
            &mut enc,
            "kernel_map_entries",
            "Entries held by each kernel map keyed by process, at the last sweep",
            snap.kernel_maps.iter().map(|(map, _, n)| {
                (
                    vec![("map", map.clone())],
                    i64::try_from(*n).unwrap_or(i64::MAX),
                )
            }),
        )?;
        let cpu = |r: &ReaderSnapshot| vec![("cpu", r.cpu.to_string())];
        let reader_counters: [ReaderCounter; 4] = [
            (
                "ring_records",
                "Records read from the CPU's ring buffer",
                |r| r.records,
            ),
            (
                "ring_bytes",
                "Bytes consumed from the CPU's ring buffer",
                |r| r.bytes,
            ),
            (
                "ring_batches",
                "Batches drained from the CPU's ring buffer",
                |r| r.batches,
            ),
            (
                "ring_decode_errors",
                "Ring entries that did not decode",
                |r| r.decode_errors,
            ),
        ];
        for (name, help, get) in reader_counters {
            counter(
                &mut enc,
                name,
                help,
                snap.readers.iter().map(|r| (cpu(r), get(r))),
            )?;
        }
        let router_samples = snap
            .readers
            .iter()
            .flat_map(|r| {
                r.router
                    .iter()
                    .map(move |(name, n)| (format!("router_{name}"), cpu(r), *n))
            })
            .collect();
        for (name, samples) in grouped(router_samples) {
            counter(
                &mut enc,
                &name,
                "Reader routing counter (see docs/metrics.md)",
                samples,
            )?;
        }
        gauge(
            &mut enc,
            "memory_budget_used_bytes",
            "Bytes of bodies and reorder windows charged to the memory budget now",
            [(
                Vec::new(),
                i64::try_from(snap.budget_used).unwrap_or(i64::MAX),
            )],
        )?;
        gauge(
            &mut enc,
            "memory_budget_limit_bytes",
            "The memory budget's share for bodies and reorder windows",
            [(
                Vec::new(),
                i64::try_from(snap.budget_limit).unwrap_or(i64::MAX),
            )],
        )?;
        let per_kind = |get: fn(&(&'static str, u64, u64)) -> u64| {
            snap.tls_probed.iter().map(move |k| {
                (
                    vec![("kind", k.0.to_owned())],
                    i64::try_from(get(k)).unwrap_or(i64::MAX),
                )
            })
        };
        gauge(
            &mut enc,
            "tls_files_probed",
            "Files (libraries and executables) with TLS probes attached, per library kind",
            per_kind(|k| k.1),
        )?;
        gauge(
            &mut enc,
            "tls_probe_points",
            "TLS probe points in those files, per library kind",
            per_kind(|k| k.2),
        )?;
        gauge(
            &mut enc,
            "tls_placement_fallbacks",
            "TLS probe points on an instruction the kernel single-steps (slow path)",
            [(
                Vec::new(),
                i64::try_from(snap.tls_placement_fallbacks).unwrap_or(i64::MAX),
            )],
        )?;
        gauge(
            &mut enc,
            "tls_uprobe_sessions",
            "1 if TLS calls are probed with uprobe sessions (one probe hit per call outside the selection), 0 if with a uprobe and a uretprobe",
            [(Vec::new(), i64::from(snap.tls_uprobe_sessions))],
        )?;
        let shard_samples = snap
            .shards
            .iter()
            .enumerate()
            .flat_map(|(i, fields)| {
                fields.iter().map(move |(name, n)| {
                    (format!("shard_{name}"), vec![("shard", i.to_string())], *n)
                })
            })
            .collect();
        for (name, samples) in grouped(shard_samples) {
            if SHARD_GAUGES.iter().any(|g| name == format!("shard_{g}")) {
                gauge(
                    &mut enc,
                    &name,
                    "Shard level (see docs/metrics.md)",
                    samples
                        .into_iter()
                        .map(|(l, n)| (l, i64::try_from(n).unwrap_or(i64::MAX))),
                )?;
            } else {
                counter(
                    &mut enc,
                    &name,
                    "Shard counter (see docs/metrics.md)",
                    samples,
                )?;
            }
        }
        let store_samples = snap
            .stores
            .iter()
            .flat_map(|s| {
                s.counters.iter().map(|(name, n)| {
                    (
                        format!("store_{name}"),
                        vec![("kind", s.kind.to_owned()), ("store", s.id.clone())],
                        *n,
                    )
                })
            })
            .collect();
        for (name, samples) in grouped(store_samples) {
            counter(
                &mut enc,
                &name,
                "Store counter (see docs/metrics.md)",
                samples,
            )?;
        }
        let store_levels = snap
            .stores
            .iter()
            .flat_map(|s| {
                s.gauges.iter().map(|(name, n)| {
                    (
                        format!("store_{name}"),
                        vec![("kind", s.kind.to_owned()), ("store", s.id.clone())],
                        *n,
                    )
                })
            })
            .collect();
        let store_levels = grouped(store_levels);
        for (name, samples) in store_levels {
            gauge(
                &mut enc,
                &name,
                "Store level (see docs/metrics.md)",
                samples
                    .into_iter()
                    .map(|(l, n)| (l, i64::try_from(n).unwrap_or(i64::MAX))),
            )?;
        }
        counter(
            &mut enc,
            "filtered_late_events",
            "Events dropped in user space because a tap.filters entry skips their process \
             (connections tracked before the filter decision reached the probes)",
            [(Vec::new(), snap.filtered.late_events)],
        )?;
        counter(
            &mut enc,
            "filtered_programs",
            "Programs a tap.filters entry skips whose decision reached the probes \
             (at their exec, or at agent start): left out in the kernel from then on",
            [(Vec::new(), snap.filtered.programs)],
        )?;
        counter(
            &mut enc,
            "reloads",
            "Config reloads, by result (`ok`: applied; `failed`: refused, old config kept)",
            [
                (vec![("result", "ok".to_owned())], snap.reloads_ok),
                (vec![("result", "failed".to_owned())], snap.reloads_failed),
            ],
        )?;
        counter(
            &mut enc,
            "log_lines_suppressed",
            "Repeated warning and error lines not written (rate limit)",
            [(Vec::new(), crate::logging::suppressed_total())],
        )?;
        counter(
            &mut enc,
            "access_log_entries",
            "access_logs entries, by result (`written` to stderr; `dropped`: writer queue full)",
            [
                (
                    vec![("result", "written".to_owned())],
                    crate::plugins::access_log::written_total(),
                ),
                (
                    vec![("result", "dropped".to_owned())],
                    crate::plugins::access_log::dropped_total(),
                ),
            ],
        )?;
        gauge(
            &mut enc,
            "pipeline_threads",
            "Pipeline threads watched by /healthz",
            [(Vec::new(), super::health::watched() as i64)],
        )?;
        counter(
            &mut enc,
            "http_requests",
            "HTTP requests seen, by method, status class, protocol and direction",
            http_metrics::requests().into_iter().map(|(l, n)| {
                (
                    vec![
                        ("method", l[0].to_owned()),
                        ("status_class", l[1].to_owned()),
                        ("protocol", l[2].to_owned()),
                        ("direction", l[3].to_owned()),
                    ],
                    n,
                )
            }),
        )?;
        let flows = http_metrics::flows();
        let flow_labels = |f: &http_metrics::Flow| {
            vec![
                ("protocol", f.labels[0].to_owned()),
                ("direction", f.labels[1].to_owned()),
            ]
        };
        {
            let mut metric = enc.encode_descriptor(
                "http_duration_ms",
                "Time from the first request byte to the last response byte, milliseconds",
                None,
                MetricType::Histogram,
            )?;
            for f in &flows {
                let labels = flow_labels(f);
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<Labels>(f.sum_ms, f.count, &f.buckets, None)?;
            }
        }
        counter(
            &mut enc,
            "http_request_body_bytes",
            "Request body bytes seen, by protocol and direction",
            flows.iter().map(|f| (flow_labels(f), f.request_body_bytes)),
        )?;
        counter(
            &mut enc,
            "http_response_body_bytes",
            "Response body bytes seen, by protocol and direction",
            flows
                .iter()
                .map(|f| (flow_labels(f), f.response_body_bytes)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_serialized_counters_become_flat_names() {
        #[derive(serde::Serialize)]
        struct Inner {
            bytes: u64,
        }
        #[derive(serde::Serialize)]
        struct Outer {
            stored: u64,
            spool: Inner,
            name: &'static str,
        }
        let n = numbers(&Outer {
            stored: 3,
            spool: Inner { bytes: 7 },
            name: "x",
        });
        assert_eq!(n, [("spool_bytes".to_owned(), 7), ("stored".to_owned(), 3)]);
    }

    #[test]
    fn snapshot_renders_with_prefix_labels_and_total_suffix() {
        let status = Arc::new(Status::default());
        status.publish(Snapshot {
            kernel_drops: vec![("ring_full", 4)],
            tls_probed: vec![("go", 2, 6)],
            shards: vec![vec![("records".into(), 9)]],
            stores: vec![StoreSnapshot {
                kind: "object",
                id: "s3".into(),
                counters: vec![("stored".into(), 2)],
                gauges: vec![("spooled".into(), 5)],
            }],
            ..Snapshot::default()
        });
        let text = render(&status);
        for line in [
            "tapwire_kernel_drops_total{reason=\"ring_full\"} 4",
            "tapwire_shard_records_total{shard=\"0\"} 9",
            "tapwire_tls_files_probed{kind=\"go\"} 2",
            "tapwire_tls_probe_points{kind=\"go\"} 6",
            "tapwire_store_stored_total{kind=\"object\",store=\"s3\"} 2",
            "tapwire_store_spooled{kind=\"object\",store=\"s3\"} 5",
            "# TYPE tapwire_reloads_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
