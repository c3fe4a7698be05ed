//! One shard's work per HTTPS transaction, on one thread, without the kernel:
//! the records of an nginx-like keep-alive exchange (the capacity run's, in the
//! probes' wire format) decoded, parsed, turned into the `http_transaction`
//! event and the three objects, and handed to stores on this thread.
//!
//! The stores are the production layout's as the shard sees them: an event
//! store that counts, and an object store that already holds every object (as
//! S3 does on a busy node, where the same headers and bodies come again) and
//! so announces each one at once, writing its `artifact_record` with the
//! object's URL, as `S3Store` does for an object it has uploaded. Neither has
//! a thread: what is measured is the shard's own time, the same on every run.
//! As on a shard's thread, events are gathered and handed to the event store
//! as one block per round ([`tapwire::pipeline::batch`]); a round here is
//! [`ROUND`] transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire::pipeline::batch;
use tapwire::pipeline::output::{Deliver, Fanout};
use tapwire::pipeline::shard::Shard;
use tapwire_perf::capacity::frames::{self, Exchange};
use tapwire_store::announce::Announcer;
use tapwire_store::counters::Counters;
use tapwire_store::s3::AccessUrl;
use tapwire_store::{EventStore, Object, ObjectStore, StoreStats, Ticket};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts events, and of them the transactions'; keeps nothing.
#[derive(Default)]
struct Events {
    counters: Counters,
    transactions: AtomicU64,
    /// Whether blocks are searched for transaction events.
    inspect: AtomicBool,
}

impl EventStore for Events {
    fn id(&self) -> &str {
        "events"
    }
    fn emit(&self, event: Bytes) {
        Counters::add(&self.counters.here().accepted, 1);
        Counters::add(&self.counters.here().bytes, event.len() as u64);
        if event.starts_with(TRANSACTION) {
            Counters::add(&self.transactions, 1);
        }
    }
    fn emit_lines(&self, lines: Bytes, count: u64) {
        Counters::add(&self.counters.here().accepted, count);
        Counters::add(&self.counters.here().bytes, lines.len() as u64);
        // Looked into only after the measurement.
        if self.inspect.load(Ordering::Relaxed) {
            let transactions = lines
                .split(|&b| b == b'\n')
                .filter(|line| line.starts_with(TRANSACTION))
                .count();
            Counters::add(&self.transactions, transactions as u64);
        }
    }
    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }
    fn shutdown(&self, _: Duration) {}
}

/// How a transaction's event starts.
const TRANSACTION: &[u8] = br#"{"type":"http_transaction""#;

/// Holds every object already: announces it at once, as a deduplicated
/// upload, with its URL.
struct Uploaded {
    counters: Counters,
    announcer: Announcer,
    url: AccessUrl,
}

impl Uploaded {
    fn new() -> Self {
        let url = AccessUrl::new(
            "{{SCHEME}}://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}",
            "https",
            "s3.example.internal:9000",
            "tapwire-objects",
        );
        Self {
            counters: Counters::default(),
            announcer: Announcer::new("s3", Some(url.clone())),
            url,
        }
    }
}

impl ObjectStore for Uploaded {
    fn id(&self) -> &str {
        "s3"
    }
    fn put_with(&self, object: Object, ticket: Ticket) {
        // What `S3Store` does with an object it has uploaded before.
        self.announcer
            .settle_duplicate(&self.counters, &object, ticket);
    }
    fn access_url(&self) -> Option<&AccessUrl> {
        Some(&self.url)
    }
    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }
    fn shutdown(&self, _: Duration) {}
}

/// A shard following `CONNS` connections, fed whole exchanges in turn.
struct Feed {
    shard: Shard<Deliver>,
    exchange: Exchange,
    /// Next sequence number per connection.
    seqs: Vec<u64>,
    next_conn: usize,
    /// Transactions fed so far.
    fed: usize,
    ts: u64,
    frame: Vec<u8>,
}

/// Connections the shard follows at once (a busy server's keep-alive pool).
const CONNS: usize = 64;
/// Transactions per shard round.
const ROUND: usize = 16;

impl Feed {
    fn new(body: usize, objects: bool) -> (Self, Arc<Events>, Arc<Uploaded>) {
        let events = Arc::new(Events::default());
        let uploaded = Arc::new(Uploaded::new());
        let object_stores: Vec<Arc<dyn ObjectStore>> = if objects {
            vec![uploaded.clone()]
        } else {
            Vec::new()
        };
        let fanout = Fanout::new(
            vec![events.clone()],
            object_stores,
            Arc::default(),
            tapwire::plugins::HttpPlan::default_full(),
        );
        let mut shard = Shard::new(frames::decode, Deliver::new(fanout));
        for conn in 0..CONNS {
            shard.offer(&frames::open(conn as u64 + 1, 1), 1);
        }
        let feed = Feed {
            shard,
            exchange: Exchange::new(body),
            seqs: vec![1; CONNS],
            next_conn: 0,
            fed: 0,
            ts: 2,
            frame: Vec::new(),
        };
        (feed, events, uploaded)
    }

    /// One whole exchange on the next connection.
    fn exchange(&mut self) {
        let conn = self.next_conn;
        self.next_conn = (conn + 1) % CONNS;
        for (flow, payload) in self.exchange.records() {
            self.ts += 1;
            let seq = &mut self.seqs[conn];
            let head = frames::data(conn as u64 + 1, *seq, self.ts, flow, payload.len());
            *seq += 1;
            self.frame.clear();
            self.frame.extend_from_slice(&head);
            self.frame.extend_from_slice(payload);
            self.shard.offer(&self.frame, self.ts);
        }
        self.fed += 1;
        if self.fed.is_multiple_of(ROUND) {
            batch::flush();
        }
    }
}

fn transactions(c: &mut Criterion) {
    batch::start();
    let mut group = c.benchmark_group("shard_transaction");
    group.throughput(Throughput::Elements(1));
    for (name, body, objects) in [
        ("https_1k_s3", 1024, true),
        ("https_1k_events_only", 1024, false),
        ("https_64k_s3", 64 * 1024, true),
    ] {
        let (mut feed, events, uploaded) = Feed::new(body, objects);
        group.bench_function(name, |b| b.iter(|| feed.exchange()));
        events.inspect.store(true, Ordering::Relaxed);
        for _ in 0..ROUND {
            feed.exchange();
        }
        batch::flush();
        // The work measured is the work wanted: one event per transaction and,
        // with objects, three objects each announced with its own event.
        let (fed, made) = (feed.fed as u64, events.stats().accepted);
        let records = uploaded.counters.snapshot().artifact_records;
        let txns = events.transactions.load(Ordering::Relaxed);
        assert!(
            txns + 1 >= ROUND as u64,
            "{name}: {txns} transactions in a round"
        );
        let per = if objects { 4 } else { 1 };
        assert!(
            made + per >= fed * per,
            "{name}: {made} events for {fed} transactions"
        );
        if objects {
            assert!(
                records + 3 >= fed * 3,
                "{name}: {records} records for {fed} transactions"
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = transactions
}
criterion_main!(benches);
