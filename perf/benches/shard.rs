//! One shard's work per HTTPS transaction, on one thread, without the kernel
//! ([`tapwire_perf::shard_feed`]): records in the probes' wire format decoded,
//! parsed, turned into the `http_transaction` event and the three objects, and
//! handed to stores that keep nothing and have no thread, so what is measured
//! is the shard's own time.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire::pipeline::batch;
use tapwire_perf::shard_feed::{Feed, ROUND};
use tapwire_store::EventStore as _;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn transactions(c: &mut Criterion) {
    batch::start();
    let mut group = c.benchmark_group("shard_transaction");
    group.throughput(Throughput::Elements(1));
    for (name, body, objects) in [
        ("https_1k_s3", 1024, true),
        ("https_1k_events_only", 1024, false),
        ("https_64k_s3", 64 * 1024, true),
    ] {
        let mut feed = Feed::new(body, objects);
        group.bench_function(name, |b| b.iter(|| feed.exchange()));
        feed.events.inspect();
        for _ in 0..ROUND {
            feed.exchange();
        }
        batch::flush();
        // The work measured is the work wanted: one event per transaction and,
        // with objects, three objects each announced with its own event.
        let (fed, made) = (feed.fed(), feed.events.stats().accepted);
        let records = feed.uploaded.artifact_records();
        let txns = feed.events.transactions();
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
