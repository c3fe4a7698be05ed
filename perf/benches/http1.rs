//! HTTP/1 parsing throughput: heads alone, side by side with httparse on the
//! same bytes, and the streaming decoder over pipelined requests and large
//! bodies.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire_http::Status;
use tapwire_http::http1::{Decoder, EMPTY_HEADER, Event, MAX_HEADERS, Method, Request, Response};

/// A browser-like request head (~730 bytes).
const REQUEST: &[u8] = b"GET /wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg HTTP/1.1\r\n\
Host: www.kittyhell.com\r\n\
User-Agent: Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10.6; ja-JP-mac; rv:1.9.2.3) Gecko/20100401 Firefox/3.6.3 Pathtraq/0.9\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: ja,en-us;q=0.7,en;q=0.3\r\n\
Accept-Encoding: gzip,deflate\r\n\
Accept-Charset: Shift_JIS,utf-8;q=0.7,*;q=0.7\r\n\
Keep-Alive: 115\r\n\
Connection: keep-alive\r\n\
Cookie: wp_ozh_wsa_visits=2; wp_ozh_wsa_visit_lasttime=xxxxxxxxxx; __utma=xxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.x; __utmz=xxxxxxxxx.xxxxxxxxxx.x.x.utmccn=(referral)|utmcsr=reader.livedoor.com|utmcct=/reader/|utmcmd=referral\r\n\r\n";

/// A typical API response head.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n\
Server: nginx/1.26.0\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 0\r\n\
Connection: keep-alive\r\n\
Cache-Control: no-cache, no-store, must-revalidate\r\n\
Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n\
X-Request-Id: 3f2b8c1e-9d4a-4e6f-8b7a-2c1d0e9f8a7b\r\n\
Vary: Accept-Encoding\r\n\r\n";

/// Each head parsed by tapwire and by httparse in one group, so the report
/// shows them side by side; both assert the parse inside the timed closure.
fn heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("http1_head");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("request/tapwire", |b| {
        b.iter(|| {
            let mut h = [EMPTY_HEADER; MAX_HEADERS];
            let mut req = Request::new(&mut h);
            assert_eq!(
                req.parse(black_box(REQUEST)),
                Ok(Status::Complete(REQUEST.len()))
            );
            assert_eq!(req.headers.len(), 9);
        })
    });
    g.bench_function("request/httparse", |b| {
        b.iter(|| {
            let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut h);
            assert_eq!(
                req.parse(black_box(REQUEST)),
                Ok(httparse::Status::Complete(REQUEST.len()))
            );
            assert_eq!(req.headers.len(), 9);
        })
    });
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("response/tapwire", |b| {
        b.iter(|| {
            let mut h = [EMPTY_HEADER; MAX_HEADERS];
            let mut resp = Response::new(&mut h);
            assert_eq!(
                resp.parse(black_box(RESPONSE)),
                Ok(Status::Complete(RESPONSE.len()))
            );
            assert_eq!(resp.code, Some(200));
            assert_eq!(resp.headers.len(), 9);
        })
    });
    g.bench_function("response/httparse", |b| {
        b.iter(|| {
            let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut h);
            assert_eq!(
                resp.parse(black_box(RESPONSE)),
                Ok(httparse::Status::Complete(RESPONSE.len()))
            );
            assert_eq!(resp.code, Some(200));
            assert_eq!(resp.headers.len(), 9);
        })
    });
    g.finish();
}

fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("http1_stream");

    // 100 pipelined requests in one buffer, fed as 16 KiB records.
    let pipelined: Vec<u8> = REQUEST.repeat(100);
    g.throughput(Throughput::Bytes(pipelined.len() as u64));
    g.bench_function("pipelined_requests", |b| {
        let mut d = Decoder::request();
        b.iter(|| {
            let mut ends = 0;
            for rec in black_box(&pipelined).chunks(16 * 1024) {
                d.feed(rec, &mut |e| {
                    if let Event::End { .. } = e {
                        ends += 1;
                    }
                })
                .expect("valid");
            }
            assert_eq!(ends, 100);
        })
    });

    // A 1 MiB chunked body in 8 KiB chunks, fed as 16 KiB records.
    let chunk = vec![b'x'; 8192];
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..128 {
        chunked.extend_from_slice(b"2000\r\n");
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    g.throughput(Throughput::Bytes(chunked.len() as u64));
    g.bench_function("chunked_1mib", |b| {
        let mut d = Decoder::response();
        b.iter(|| {
            d.expect_response_to(Method::Get);
            let mut body = 0usize;
            for rec in black_box(&chunked).chunks(16 * 1024) {
                d.feed(rec, &mut |e| {
                    if let Event::Body(b) = e {
                        body += b.len();
                    }
                })
                .expect("valid");
            }
            assert_eq!(body, 1 << 20);
        })
    });

    // The same body with Content-Length.
    let mut sized = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    sized.resize(sized.len() + (1 << 20), b'y');
    g.throughput(Throughput::Bytes(sized.len() as u64));
    g.bench_function("content_length_1mib", |b| {
        let mut d = Decoder::response();
        b.iter(|| {
            d.expect_response_to(Method::Get);
            let mut body = 0usize;
            for rec in black_box(&sized).chunks(16 * 1024) {
                d.feed(rec, &mut |e| {
                    if let Event::Body(b) = e {
                        body += b.len();
                    }
                })
                .expect("valid");
            }
            assert_eq!(body, 1 << 20);
        })
    });
    g.finish();
}

criterion_group!(benches, heads, stream);
criterion_main!(benches);
