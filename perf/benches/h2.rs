//! HTTP/2 decoder throughput over a server stream: many small responses
//! (HEADERS + DATA), and one large body in 16 KiB DATA frames.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire_http::h2::{Decoder, Event, FrameHeader, FrameType, Side};

fn frame(out: &mut Vec<u8>, kind: FrameType, flags: u8, stream_id: u32, payload: &[u8]) {
    let h = FrameHeader {
        len: payload.len() as u32,
        kind,
        flags,
        stream_id,
    };
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(payload);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("h2");

    // 200 responses: :status 200 + content-type (indexed after the first)
    // and a 1 KiB body each.
    let mut small = Vec::new();
    frame(&mut small, FrameType::Settings, 0, 0, b"");
    let body = vec![b'z'; 1024];
    for i in 0..200u32 {
        let block: &[u8] = if i == 0 {
            b"\x88\x5f\x10application/json"
        } else {
            b"\x88\xbe"
        };
        frame(&mut small, FrameType::Headers, 0x4, 2 * i + 1, block);
        frame(&mut small, FrameType::Data, 0x1, 2 * i + 1, &body);
    }
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("small_responses", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Side::Server);
            let (mut heads, mut bytes) = (0, 0);
            for rec in black_box(&small).chunks(16 * 1024) {
                d.feed(rec, &mut |e| match e {
                    Event::Headers(_) => heads += 1,
                    Event::Data { data, .. } => bytes += data.len(),
                    _ => {}
                })
                .expect("valid");
            }
            assert_eq!((heads, bytes), (200, 200 * 1024));
        })
    });

    // A 1 MiB body in 64 maximum-size DATA frames.
    let mut large = Vec::new();
    frame(&mut large, FrameType::Headers, 0x4, 1, b"\x88");
    let chunk = vec![b'q'; 16 * 1024];
    for i in 0..64 {
        frame(&mut large, FrameType::Data, u8::from(i == 63), 1, &chunk);
    }
    g.throughput(Throughput::Bytes(large.len() as u64));
    g.bench_function("large_body", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Side::Server);
            let mut bytes = 0;
            for rec in black_box(&large).chunks(16 * 1024) {
                d.feed(rec, &mut |e| {
                    if let Event::Data { data, .. } = e {
                        bytes += data.len();
                    }
                })
                .expect("valid");
            }
            assert_eq!(bytes, 1 << 20);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
