//! Record decode: raw ring bytes → the shard's `Input` (records/s), for a data
//! record carrying a 1 KiB payload.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire::pipeline::input::Input;
use tapwire::pipeline::wire;

/// A `Data` record as the probes write it: header, fixed part, payload.
fn data_record(payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(80 + payload.len());
    for v in [2u32, 0] {
        r.extend_from_slice(&v.to_le_bytes()); // kind = Data, cpu
    }
    r.extend_from_slice(&123_456_789u64.to_le_bytes()); // ts_ns
    for v in [4242u32, 4243] {
        r.extend_from_slice(&v.to_le_bytes()); // pid, tid
    }
    for v in [7u64, 1, payload.len() as u64, 0] {
        r.extend_from_slice(&v.to_le_bytes()); // conn_id, seq, call_len, offset
    }
    for v in [payload.len() as u32, 1, 2] {
        r.extend_from_slice(&v.to_le_bytes()); // cap_len, direction, source
    }
    r.extend_from_slice(&5i32.to_le_bytes()); // fd
    r.extend_from_slice(&0u64.to_le_bytes()); // shed_len
    r.extend_from_slice(payload);
    r
}

fn decode(c: &mut Criterion) {
    let record = data_record(&[b'x'; 1024]);
    let mut group = c.benchmark_group("record_decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("data_1k", |b| {
        b.iter(|| {
            let input = wire::decode(std::hint::black_box(&record));
            assert!(matches!(input, Some(Input::Data { payload, .. }) if payload.len() == 1024));
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = decode
}
criterion_main!(benches);
