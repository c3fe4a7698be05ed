//! The reader → shard hop: frames through one framed SPSC queue across two threads
//! (records/s), measured like rtrb's own `push_pop` bench.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire::pipeline::queue::frame_queue;

/// Payload of a typical small record: a 1 KiB response and its record header.
const RECORD_BYTES: usize = 72 + 1024;

fn hop(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_hop");
    group.throughput(Throughput::Elements(1));
    group.bench_function("frame_1k", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = frame_queue(4 << 20);
            let barrier = Barrier::new(2);
            let record = vec![0xA5u8; RECORD_BYTES];
            std::thread::scope(|s| {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..iters {
                        while tx.push(&[&record]).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                });
                barrier.wait();
                let start = Instant::now();
                let mut got = 0u64;
                while got < iters {
                    if let Some(len) = rx.pop(|f| f.len()) {
                        assert_eq!(len, RECORD_BYTES);
                        got += 1;
                    }
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = hop
}
criterion_main!(benches);
