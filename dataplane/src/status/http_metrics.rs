//! The `http_metrics` series: requests counted by method, status class,
//! protocol and direction, durations and body sizes by protocol and direction.
//! Every label takes a value from a fixed list, so the series are bounded
//! (360 request counters, whatever the traffic); no label carries an address,
//! host, path or pid.
//!
//! Each shard calls [`observe`] once per transaction it delivers: a few relaxed
//! atomic adds into fixed arrays, no allocation, no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pipeline::txn::{Protocol, Transaction};

/// Method label values; anything else is `OTHER`.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];
/// Status class label values; `none` when no response was seen.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Protocol label values.
pub const PROTOCOLS: [&str; 3] = ["http1", "http2", "grpc"];
/// Direction label values: `egress` when the traced process sent the request.
pub const DIRECTIONS: [&str; 2] = ["egress", "ingress"];
/// Upper bounds of the duration histogram's buckets, in milliseconds.
pub const DURATION_BUCKETS_MS: [f64; 12] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

const REQUEST_CELLS: usize =
    METHODS.len() * STATUS_CLASSES.len() * PROTOCOLS.len() * DIRECTIONS.len();
const FLOWS: usize = PROTOCOLS.len() * DIRECTIONS.len();

#[expect(
    clippy::declare_interior_mutable_const,
    reason = "only used to initialise the static arrays below"
)]
const ZERO: AtomicU64 = AtomicU64::new(0);

static REQUESTS: [AtomicU64; REQUEST_CELLS] = [ZERO; REQUEST_CELLS];
static DURATION_BUCKETS: [AtomicU64; FLOWS * DURATION_BUCKETS_MS.len()] =
    [ZERO; FLOWS * DURATION_BUCKETS_MS.len()];
static DURATION_COUNT: [AtomicU64; FLOWS] = [ZERO; FLOWS];
static DURATION_SUM_US: [AtomicU64; FLOWS] = [ZERO; FLOWS];
static REQUEST_BODY_BYTES: [AtomicU64; FLOWS] = [ZERO; FLOWS];
static RESPONSE_BODY_BYTES: [AtomicU64; FLOWS] = [ZERO; FLOWS];

/// Counts one finished transaction.
pub fn observe(txn: &Transaction) {
    let method = METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| *m == txn.method)
        .unwrap_or(METHODS.len() - 1);
    let status = match txn.status {
        Some(s @ 100..=599) => usize::from(s / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    };
    let protocol = match txn.protocol {
        Protocol::Http1 => 0,
        Protocol::Http2 => 1,
        Protocol::Grpc => 2,
    };
    let direction = usize::from(!txn.egress);
    let flow = protocol * DIRECTIONS.len() + direction;
    let cell = ((method * STATUS_CLASSES.len() + status) * PROTOCOLS.len() + protocol)
        * DIRECTIONS.len()
        + direction;
    REQUESTS[cell].fetch_add(1, Ordering::Relaxed);
    let micros = txn.end_ns.saturating_sub(txn.start_ns) / 1_000;
    let ms = micros as f64 / 1_000.0;
    if let Some(bucket) = DURATION_BUCKETS_MS.iter().position(|b| ms <= *b) {
        DURATION_BUCKETS[flow * DURATION_BUCKETS_MS.len() + bucket].fetch_add(1, Ordering::Relaxed);
    }
    DURATION_COUNT[flow].fetch_add(1, Ordering::Relaxed);
    DURATION_SUM_US[flow].fetch_add(micros, Ordering::Relaxed);
    REQUEST_BODY_BYTES[flow].fetch_add(txn.request.body_bytes, Ordering::Relaxed);
    RESPONSE_BODY_BYTES[flow].fetch_add(txn.response.body_bytes, Ordering::Relaxed);
}

/// Non-zero request counters: `(method, status_class, protocol, direction, count)`.
pub fn requests() -> Vec<([&'static str; 4], u64)> {
    let mut out = Vec::new();
    for (m, method) in METHODS.iter().enumerate() {
        for (s, status) in STATUS_CLASSES.iter().enumerate() {
            for (p, protocol) in PROTOCOLS.iter().enumerate() {
                for (d, direction) in DIRECTIONS.iter().enumerate() {
                    let cell = ((m * STATUS_CLASSES.len() + s) * PROTOCOLS.len() + p)
                        * DIRECTIONS.len()
                        + d;
                    let n = REQUESTS[cell].load(Ordering::Relaxed);
                    if n > 0 {
                        out.push(([*method, *status, *protocol, *direction], n));
                    }
                }
            }
        }
    }
    out
}

/// One (protocol, direction) pair's duration histogram and body bytes.
pub struct Flow {
    /// `[protocol, direction]` label values.
    pub labels: [&'static str; 2],
    /// Cumulative counts per [`DURATION_BUCKETS_MS`] bound.
    pub buckets: Vec<(f64, u64)>,
    /// Transactions observed.
    pub count: u64,
    /// Sum of durations, milliseconds.
    pub sum_ms: f64,
    /// Request body bytes.
    pub request_body_bytes: u64,
    /// Response body bytes.
    pub response_body_bytes: u64,
}

/// Pairs that have seen a transaction.
pub fn flows() -> Vec<Flow> {
    let mut out = Vec::new();
    for (p, protocol) in PROTOCOLS.iter().enumerate() {
        for (d, direction) in DIRECTIONS.iter().enumerate() {
            let flow = p * DIRECTIONS.len() + d;
            let count = DURATION_COUNT[flow].load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS_MS
                .iter()
                .enumerate()
                .map(|(i, bound)| {
                    cumulative += DURATION_BUCKETS[flow * DURATION_BUCKETS_MS.len() + i]
                        .load(Ordering::Relaxed);
                    (*bound, cumulative)
                })
                .collect();
            buckets.push((f64::INFINITY, count.max(cumulative)));
            out.push(Flow {
                labels: [*protocol, *direction],
                buckets,
                count: count.max(cumulative),
                sum_ms: DURATION_SUM_US[flow].load(Ordering::Relaxed) as f64 / 1_000.0,
                request_body_bytes: REQUEST_BODY_BYTES[flow].load(Ordering::Relaxed),
                response_body_bytes: RESPONSE_BODY_BYTES[flow].load(Ordering::Relaxed),
            });
        }
    }
    out
}
