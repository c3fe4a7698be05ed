//! HPACK decoding throughput: Huffman strings, and whole header blocks of
//! literals and of indexed references.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire_http::hpack::{BlockState, Decoder, huffman};

/// Request fields a browser sends, as (name, value).
const FIELDS: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "www.example.com"),
    (":path", "/static/js/app.5f3c2a1b.js?v=20261128"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    ("accept-language", "en-US,en;q=0.9,fr;q=0.8"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    (
        "referer",
        "https://www.example.com/products/widgets?page=2&sort=price",
    ),
    (
        "cookie",
        "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; _ga=GA1.2.1234567890.1700000000",
    ),
    ("sec-fetch-dest", "script"),
    ("sec-fetch-mode", "no-cors"),
    ("sec-fetch-site", "same-origin"),
    ("priority", "u=1"),
];

/// A string literal, Huffman-coded (RFC 7541 §5.2); lengths < 127.
fn huff_string(out: &mut Vec<u8>, s: &str) {
    let mut enc = Vec::new();
    huffman::encode(s.as_bytes(), &mut enc);
    assert!(enc.len() < 127);
    out.push(0x80 | enc.len() as u8);
    out.extend_from_slice(&enc);
}

/// Every field as a literal with a new name; `first` is the representation
/// byte (0x00 without indexing, 0x40 with incremental indexing).
fn literal_block(first: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in FIELDS {
        b.push(first);
        huff_string(&mut b, n);
        huff_string(&mut b, v);
    }
    b
}

fn fields_len() -> usize {
    FIELDS.iter().map(|(n, v)| n.len() + v.len()).sum()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hpack");

    let text: String = FIELDS.iter().map(|(_, v)| *v).collect::<Vec<_>>().concat();
    let mut coded = Vec::new();
    huffman::encode(text.as_bytes(), &mut coded);
    g.throughput(Throughput::Bytes(coded.len() as u64));
    g.bench_function("huffman_decode", |b| {
        let mut out = Vec::with_capacity(text.len());
        b.iter(|| {
            out.clear();
            huffman::decode(black_box(&coded), &mut out).expect("valid");
            assert_eq!(out.len(), text.len());
        })
    });

    // Literals without indexing leave the table alone, so one decoder can
    // decode the block over and over.
    let literals = literal_block(0x00);
    g.throughput(Throughput::Bytes(literals.len() as u64));
    g.bench_function("block_literals_huffman", |b| {
        let mut d = Decoder::new();
        b.iter(|| {
            let mut n = 0usize;
            let state = d
                .decode(black_box(&literals), |f| n += f.name.len() + f.value.len())
                .expect("valid");
            assert_eq!((state, n), (BlockState::Complete, fields_len()));
        })
    });

    // A repeat request: every field indexed from the dynamic table.
    let mut d = Decoder::with_max_size(64 * 1024);
    d.decode(&literal_block(0x40), |_| {}).expect("valid");
    let indexed: Vec<u8> = (0..FIELDS.len())
        .rev()
        .map(|i| 0x80 | (62 + i) as u8)
        .collect();
    g.throughput(Throughput::Bytes(indexed.len() as u64));
    g.bench_function("block_indexed", |b| {
        b.iter(|| {
            let mut n = 0usize;
            let state = d
                .decode(black_box(&indexed), |f| n += f.name.len() + f.value.len())
                .expect("valid");
            assert_eq!((state, n), (BlockState::Complete, fields_len()));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
