//! The `http_metrics` series: requests counted by method, status class,
//! protocol and direction, durations and body sizes by protocol and direction.
//! Every label takes a value from a fixed list, so the series are bounded
//! (360 request counters, whatever the traffic); no label carries an address,
//! host, path or pid.
//!
//! Each shard calls [`observe`] once per transaction it delivers: a few relaxed
//! atomic adds into fixed arrays of its own stripe, no allocation, no lock,
//! no cache line shared with another shard.

use std::sync::atomic::{AtomicU64, Ordering};

use tapwire_store::counters::{STRIPES, stripe};

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
const BUCKET_CELLS: usize = FLOWS * DURATION_BUCKETS_MS.len();

/// Copies of the counters, one per stripe ([`STRIPES`]): each thread adds
/// into its own ([`tapwire_store::counters::stripe`]), so shards on different
/// cores do not write the same cache lines; with one shared set, every shard's
/// adds would move the same lines between cores, once per transaction each, on
/// a node with many shards. A scrape sums the stripes.
///
/// One stripe, on cache lines of its own.
#[repr(align(128))]
struct Stripe {
    requests: [AtomicU64; REQUEST_CELLS],
    duration_buckets: [AtomicU64; BUCKET_CELLS],
    duration_count: [AtomicU64; FLOWS],
    duration_sum_us: [AtomicU64; FLOWS],
    request_body_bytes: [AtomicU64; FLOWS],
    response_body_bytes: [AtomicU64; FLOWS],
}

impl Stripe {
    const fn new() -> Self {
        Stripe {
            requests: [const { AtomicU64::new(0) }; REQUEST_CELLS],
            duration_buckets: [const { AtomicU64::new(0) }; BUCKET_CELLS],
            duration_count: [const { AtomicU64::new(0) }; FLOWS],
            duration_sum_us: [const { AtomicU64::new(0) }; FLOWS],
            request_body_bytes: [const { AtomicU64::new(0) }; FLOWS],
            response_body_bytes: [const { AtomicU64::new(0) }; FLOWS],
        }
    }
}

/// The counters: the agent's one set is [`COUNTERS`].
struct Counters([Stripe; STRIPES]);

static COUNTERS: Counters = Counters::new();
/// Counts one finished transaction.
pub fn observe(txn: &Transaction) {
    COUNTERS.observe(txn);
}

/// Non-zero request counters: `(method, status_class, protocol, direction, count)`.
pub fn requests() -> Vec<([&'static str; 4], u64)> {
    COUNTERS.requests()
}

/// Pairs that have seen a transaction.
pub fn flows() -> Vec<Flow> {
    COUNTERS.flows()
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

impl Counters {
    const fn new() -> Self {
        Counters([const { Stripe::new() }; STRIPES])
    }

    /// The sum over the stripes of the counter `pick` chooses.
    fn total(&self, pick: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.0.iter().map(|s| pick(s).load(Ordering::Relaxed)).sum()
    }

    fn observe(&self, txn: &Transaction) {
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
        let stripe = &self.0[stripe()];
        stripe.requests[cell].fetch_add(1, Ordering::Relaxed);
        let micros = txn.end_ns.saturating_sub(txn.start_ns) / 1_000;
        let ms = micros as f64 / 1_000.0;
        if let Some(bucket) = DURATION_BUCKETS_MS.iter().position(|b| ms <= *b) {
            stripe.duration_buckets[flow * DURATION_BUCKETS_MS.len() + bucket]
                .fetch_add(1, Ordering::Relaxed);
        }
        stripe.duration_count[flow].fetch_add(1, Ordering::Relaxed);
        stripe.duration_sum_us[flow].fetch_add(micros, Ordering::Relaxed);
        stripe.request_body_bytes[flow].fetch_add(txn.request.body_bytes, Ordering::Relaxed);
        stripe.response_body_bytes[flow].fetch_add(txn.response.body_bytes, Ordering::Relaxed);
    }

    fn requests(&self) -> Vec<([&'static str; 4], u64)> {
        let mut out = Vec::new();
        for (m, method) in METHODS.iter().enumerate() {
            for (s, status) in STATUS_CLASSES.iter().enumerate() {
                for (p, protocol) in PROTOCOLS.iter().enumerate() {
                    for (d, direction) in DIRECTIONS.iter().enumerate() {
                        let cell = ((m * STATUS_CLASSES.len() + s) * PROTOCOLS.len() + p)
                            * DIRECTIONS.len()
                            + d;
                        let n = self.total(|s| &s.requests[cell]);
                        if n > 0 {
                            out.push(([*method, *status, *protocol, *direction], n));
                        }
                    }
                }
            }
        }
        out
    }

    fn flows(&self) -> Vec<Flow> {
        let mut out = Vec::new();
        for (p, protocol) in PROTOCOLS.iter().enumerate() {
            for (d, direction) in DIRECTIONS.iter().enumerate() {
                let flow = p * DIRECTIONS.len() + d;
                let count = self.total(|s| &s.duration_count[flow]);
                if count == 0 {
                    continue;
                }
                let mut cumulative = 0;
                let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS_MS
                    .iter()
                    .enumerate()
                    .map(|(i, bound)| {
                        cumulative += self
                            .total(|s| &s.duration_buckets[flow * DURATION_BUCKETS_MS.len() + i]);
                        (*bound, cumulative)
                    })
                    .collect();
                buckets.push((f64::INFINITY, count.max(cumulative)));
                out.push(Flow {
                    labels: [*protocol, *direction],
                    buckets,
                    count: count.max(cumulative),
                    sum_ms: self.total(|s| &s.duration_sum_us[flow]) as f64 / 1_000.0,
                    request_body_bytes: self.total(|s| &s.request_body_bytes[flow]),
                    response_body_bytes: self.total(|s| &s.response_body_bytes[flow]),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::input::Role;
    use crate::pipeline::txn::Message;

    fn body_of(bytes: u64) -> Message {
        let mut m = Message::default();
        m.body_bytes = bytes;
        m
    }

    /// A `TRACE` over gRPC answered 1xx, ingress.
    fn txn(ms: u64) -> Transaction {
        let mut t = Transaction::for_test();
        (t.conn.pid, t.conn.tid, t.tid, t.conn.comm) = (2, 2, 2, "t".into());
        (t.conn.local, t.conn.remote) = (
            "127.0.0.1:80".parse().unwrap(),
            "127.0.0.1:50000".parse().unwrap(),
        );
        (t.conn.conn_id, t.conn.role, t.egress) = (1, Role::Server, false);
        (t.stream_id, t.protocol, t.method, t.authority, t.path) =
            (Some(1), Protocol::Grpc, "TRACE".into(), None, "/".into());
        (t.status, t.request, t.response) = (Some(101), body_of(3), body_of(5));
        (t.start_ns, t.end_ns) = (0, ms * 1_000_000);
        t
    }

    #[test]
    fn counts_from_more_threads_than_stripes_add_up_exactly() {
        const LABELS: [&str; 4] = ["TRACE", "1xx", "grpc", "ingress"];
        // A set of this test's own, so that other tests' counts do not mix in.
        let counters = Box::new(Counters::new());
        let (threads, each) = (2 * STRIPES + 3, 1000);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let counters = &counters;
                scope.spawn(move || {
                    // Half of them 3 ms, half 700 ms.
                    let txn = txn(if t % 2 == 0 { 3 } else { 700 });
                    for _ in 0..each {
                        counters.observe(&txn);
                    }
                });
            }
        });
        let n = (threads * each) as u64;
        assert_eq!(counters.requests(), [(LABELS, n)]);
        let flows = counters.flows();
        assert_eq!(flows.len(), 1);
        let flow = &flows[0];
        assert_eq!(flow.labels, ["grpc", "ingress"]);
        assert_eq!(flow.count, n);
        assert_eq!(
            (flow.request_body_bytes, flow.response_body_bytes),
            (3 * n, 5 * n)
        );
        let fast = (threads.div_ceil(2) * each) as u64;
        let at = |bound: f64| flow.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(
            (at(1.0), at(5.0), at(500.0), at(1000.0)),
            (0, fast, fast, n)
        );
        assert_eq!(flow.sum_ms, (fast * 3 + (n - fast) * 700) as f64);
    }
}
