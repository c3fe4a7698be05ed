//! One shard fed whole HTTPS exchanges on the calling thread, without the
//! kernel: the records of an nginx-like keep-alive exchange (the capacity
//! run's, in the probes' wire format) decoded, parsed, turned into the
//! `http_transaction` event and the three objects, and handed to stores on
//! this thread. Used by the shard criterion bench (`benches/shard.rs`) and by
//! the test that counts a transaction's allocations (`tests/shard_allocations.rs`).
//!
//! The stores are the production layout's as the shard sees them: an event
//! store that counts, and an object store that already holds every object (as
//! S3 does on a busy node, where the same headers and bodies come again) and
//! so announces each one at once, writing its `artifact_record` with the
//! object's URL, as `S3Store` does for an object it has uploaded. Neither has
//! a thread: what is measured is the shard's own work, the same on every run.
//! As on a shard's thread, events are gathered and handed to the event store
//! as one block per round ([`tapwire::pipeline::batch`]); a round here is
//! [`ROUND`] transactions. After the first round the feed itself allocates
//! nothing: what allocates is the shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tapwire::pipeline::batch;
use tapwire::pipeline::input::Flow;
use tapwire::pipeline::output::{Deliver, Fanout};
use tapwire::pipeline::shard::Shard;
use tapwire_store::announce::Announcer;
use tapwire_store::counters::Counters;
use tapwire_store::s3::AccessUrl;
use tapwire_store::{EventStore, Object, ObjectStore, StoreStats, Ticket};

use crate::capacity::frames::{self, Exchange};

/// Counts events, and of them the transactions'; keeps nothing.
#[derive(Default)]
pub struct Events {
    counters: Counters,
    transactions: AtomicU64,
    /// Whether blocks are searched for transaction events.
    inspect: AtomicBool,
}

impl Events {
    /// From now on, look into each block for transaction events (a cost the
    /// measurement leaves out).
    pub fn inspect(&self) {
        self.inspect.store(true, Ordering::Relaxed);
    }

    /// Transaction events seen while inspecting.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }
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
pub struct Uploaded {
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

    /// `artifact_record` events announced so far.
    pub fn artifact_records(&self) -> u64 {
        self.counters.snapshot().artifact_records
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

/// Connections the shard follows at once (a busy server's keep-alive pool).
pub const CONNS: usize = 64;
/// Transactions per shard round.
pub const ROUND: usize = 16;

/// A shard following [`CONNS`] connections, fed whole exchanges in turn.
/// Call [`batch::start`] on the thread first.
pub struct Feed {
    shard: Shard<Deliver>,
    /// The exchange's records, in order, with their flows.
    records: Vec<(Flow, Vec<u8>)>,
    /// Next sequence number per connection.
    seqs: Vec<u64>,
    next_conn: usize,
    fed: usize,
    ts: u64,
    /// The record being offered, reused.
    frame: Vec<u8>,
    /// The stores.
    pub events: Arc<Events>,
    pub uploaded: Arc<Uploaded>,
}

impl Feed {
    /// Exchanges answered with `body` bytes; objects go to the store that
    /// holds them all if `objects`, else only events are made.
    pub fn new(body: usize, objects: bool) -> Self {
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
        let exchange = Exchange::new(body);
        let records: Vec<_> = exchange
            .records()
            .into_iter()
            .map(|(flow, payload)| (flow, payload.to_vec()))
            .collect();
        let largest = records.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
        Feed {
            shard,
            records,
            seqs: vec![1; CONNS],
            next_conn: 0,
            fed: 0,
            ts: 2,
            frame: Vec::with_capacity(size_of::<tapwire_common::Data>() + largest),
            events,
            uploaded,
        }
    }

    /// One whole exchange on the next connection; every [`ROUND`]th ends
    /// the shard's round.
    pub fn exchange(&mut self) {
        let conn = self.next_conn;
        self.next_conn = (conn + 1) % CONNS;
        for (flow, payload) in &self.records {
            self.ts += 1;
            let seq = &mut self.seqs[conn];
            let head = frames::data(conn as u64 + 1, *seq, self.ts, *flow, payload.len());
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

    /// Exchanges fed so far.
    pub fn fed(&self) -> u64 {
        self.fed as u64
    }
}
