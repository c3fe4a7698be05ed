//! Stream-level tests: every HTTP/1 case the data plane relies on, each fed
//! whole and in every split down to one byte at a time.

use super::*;
use crate::Headers;

/// An owned copy of an [`Event`], with adjacent body pieces merged so that
/// differently split feeds compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Req(String, String, Vec<(String, String)>),
    Info(u16),
    Resp(u16, Vec<(String, String)>),
    Body(Vec<u8>),
    End(Vec<(String, String)>),
    Upgraded,
    Tunnel(Vec<u8>),
}

fn fields(h: Headers<'_>) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn push(out: &mut Vec<Ev>, ev: Event<'_>) {
    let e = match ev {
        Event::Request(h) => Ev::Req(
            h.method.to_owned(),
            String::from_utf8_lossy(h.target).into_owned(),
            fields(h.headers),
        ),
        Event::Informational(h) => Ev::Info(h.status),
        Event::Response(h) => Ev::Resp(h.status, fields(h.headers)),
        Event::Body(b) => {
            if let Some(Ev::Body(prev)) = out.last_mut() {
                prev.extend_from_slice(b);
                return;
            }
            Ev::Body(b.to_vec())
        }
        Event::End { trailers } => Ev::End(fields(trailers)),
        Event::Upgraded => Ev::Upgraded,
        Event::Tunnel(b) => {
            if let Some(Ev::Tunnel(prev)) = out.last_mut() {
                prev.extend_from_slice(b);
                return;
            }
            Ev::Tunnel(b.to_vec())
        }
    };
    out.push(e);
}

/// Feeds `input` in pieces of `step` bytes, then closes if `eof`.
fn run(
    kind: Kind,
    input: &[u8],
    step: usize,
    methods: &[Method],
    eof: bool,
) -> Result<Vec<Ev>, Error> {
    let mut d = Decoder::new(kind);
    for &m in methods {
        d.expect_response_to(m);
    }
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        d.feed(piece, &mut |ev| push(&mut out, ev))?;
    }
    if eof {
        d.eof(&mut |ev| push(&mut out, ev))?;
    }
    Ok(out)
}

/// Runs every split from one byte at a time to all at once and checks they
/// agree; returns the events.
fn run_all_splits(
    kind: Kind,
    input: &[u8],
    methods: &[Method],
    eof: bool,
) -> Result<Vec<Ev>, Error> {
    let whole = run(kind, input, input.len().max(1), methods, eof);
    for step in 1..input.len() {
        assert_eq!(run(kind, input, step, methods, eof), whole, "step {step}");
    }
    whole
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Ev {
    Ev::Req(method.into(), target.into(), h(headers))
}

fn body(b: &[u8]) -> Ev {
    Ev::Body(b.to_vec())
}

fn end() -> Ev {
    Ev::End(Vec::new())
}

#[test]
fn pipelined_requests_with_every_framing() {
    let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
\r\nDELETE /d HTTP/1.0\r\n\r\n";
    let evs = run_all_splits(Kind::Request, input, &[], false).expect("valid");
    assert_eq!(
        evs,
        vec![
            req("GET", "/a", &[("Host", "x")]),
            end(),
            req("POST", "/b", &[("Host", "x"), ("Content-Length", "5")]),
            body(b"hello"),
            end(),
            req("PUT", "/c", &[("Transfer-Encoding", "chunked")]),
            body(b"abc"),
            end(),
            req("DELETE", "/d", &[]),
            end(),
        ]
    );
}

#[test]
fn chunked_response_with_extensions_and_trailers() {
    let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nTrailer: Checksum\r\n\r\n\
4;ext=1\r\nWiki\r\n5 ; a=\"b c\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nChecksum: abc\r\nX-Other:  1 \r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n";
    let evs = run_all_splits(Kind::Response, input, &[], false).expect("valid");
    assert_eq!(
        evs,
        vec![
            Ev::Resp(
                200,
                h(&[
                    ("Transfer-Encoding", "gzip, chunked"),
                    ("Trailer", "Checksum")
                ])
            ),
            body(b"Wikipedia in\r\n\r\nchunks."),
            Ev::End(h(&[("Checksum", "abc"), ("X-Other", "1")])),
            Ev::Resp(204, vec![]),
            end(),
        ]
    );
}

#[test]
fn interim_responses_then_final() {
    let input = b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let evs = run_all_splits(Kind::Response, input, &[Method::Post], false).expect("valid");
    assert_eq!(
        evs,
        vec![
            Ev::Info(100),
            Ev::Info(103),
            Ev::Resp(201, h(&[("Content-Length", "2")])),
            body(b"ok"),
            end(),
        ]
    );
}

#[test]
fn head_204_304_have_no_body() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz";
    let methods = [Method::Head, Method::Get, Method::Get, Method::Get];
    let evs = run_all_splits(Kind::Response, input, &methods, false).expect("valid");
    assert_eq!(
        evs,
        vec![
            Ev::Resp(200, h(&[("Content-Length", "1000")])),
            end(),
            Ev::Resp(204, h(&[("Content-Length", "7")])),
            end(),
            Ev::Resp(304, h(&[("Transfer-Encoding", "chunked")])),
            end(),
            Ev::Resp(200, h(&[("Content-Length", "3")])),
            body(b"xyz"),
            end(),
        ]
    );
}

#[test]
fn close_delimited_body_ends_at_eof() {
    let input = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of this until close";
    let evs = run_all_splits(Kind::Response, input, &[], true).expect("valid");
    assert_eq!(
        evs,
        vec![
            Ev::Resp(200, h(&[("Server", "old")])),
            body(b"all of this until close"),
            end(),
        ]
    );
    // Without eof the message is still open.
    let evs = run(Kind::Response, input, 5, &[], false).expect("valid");
    assert_eq!(evs.last(), Some(&body(b"all of this until close")));
}

#[test]
fn eof_inside_a_message_is_an_error() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
    assert_eq!(
        run(Kind::Response, input, 3, &[], true),
        Err(Error::UnexpectedEof)
    );
    let input = b"HTTP/1.1 200 OK\r\nContent-Le";
    assert_eq!(
        run(Kind::Response, input, 3, &[], true),
        Err(Error::UnexpectedEof)
    );
    // A clean close between messages is fine.
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert!(run(Kind::Response, input, 3, &[], true).is_ok());
}

#[test]
fn switching_protocols_stops_parsing() {
    let input = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
    let evs = run_all_splits(Kind::Response, input, &[Method::Get], false).expect("valid");
    assert_eq!(
        evs,
        vec![
            Ev::Resp(
                101,
                h(&[("Upgrade", "websocket"), ("Connection", "Upgrade")])
            ),
            end(),
            Ev::Upgraded,
            Ev::Tunnel(b"\x81\x05hello".to_vec()),
        ]
    );
}

#[test]
fn connect_2xx_is_a_tunnel() {
    let input = b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01";
    let evs = run_all_splits(Kind::Response, input, &[Method::Connect], false).expect("valid");
    assert_eq!(
        evs,
        vec![
            Ev::Resp(200, vec![]),
            end(),
            Ev::Upgraded,
            Ev::Tunnel(b"\x16\x03\x01".to_vec())
        ]
    );
    // A refused CONNECT has an ordinary body.
    let input = b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 1\r\n\r\nx";
    let evs = run(Kind::Response, input, 4, &[Method::Connect], false).expect("valid");
    assert_eq!(evs[1..], [body(b"x"), end()]);
}

/// Feeds a whole connection through [`Connection`], in the given order of
/// (direction, bytes), each piece split into `step`-byte feeds.
fn run_conn(parts: &[(Direction, &[u8])], step: usize) -> Result<Vec<(Direction, Ev)>, ConnError> {
    let mut c = Connection::new();
    let mut out: Vec<(Direction, Vec<Ev>)> = Vec::new();
    for &(dir, bytes) in parts {
        for piece in bytes.chunks(step) {
            c.feed(dir, piece, &mut |d, ev| {
                if out.last().is_none_or(|(ld, _)| *ld != d) {
                    out.push((d, Vec::new()));
                }
                push(&mut out.last_mut().expect("pushed").1, ev);
            })?;
        }
    }
    Ok(out
        .into_iter()
        .flat_map(|(d, evs)| evs.into_iter().map(move |e| (d, e)))
        .collect())
}

#[test]
fn connection_pairs_head_requests_with_responses() {
    use Direction::{Request as Q, Response as R};
    let parts: [(Direction, &[u8]); 2] = [
        (Q, b"HEAD /big HTTP/1.1\r\n\r\nGET /small HTTP/1.1\r\n\r\n"),
        (
            R,
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
    ];
    let whole = run_conn(&parts, 1 << 20).expect("valid");
    assert_eq!(run_conn(&parts, 1).expect("valid"), whole);
    let responses: Vec<_> = whole
        .iter()
        .filter(|(d, _)| *d == R)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(
        responses,
        vec![
            Ev::Resp(200, h(&[("Content-Length", "99")])),
            end(),
            Ev::Resp(200, h(&[("Content-Length", "2")])),
            body(b"hi"),
            end(),
        ]
    );
}

fn one_direction(evs: &[(Direction, Ev)], d: Direction) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    for (_, e) in evs.iter().filter(|(x, _)| *x == d) {
        match (out.last_mut(), e) {
            (Some(Ev::Body(a)), Ev::Body(b)) | (Some(Ev::Tunnel(a)), Ev::Tunnel(b)) => {
                a.extend_from_slice(b)
            }
            _ => out.push(e.clone()),
        }
    }
    out
}

#[test]
fn connection_follows_an_accepted_upgrade() {
    use Direction::{Request as Q, Response as R};
    let parts: [(Direction, &[u8]); 2] = [
        (
            Q,
            b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi",
        ),
        (
            R,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02yo",
        ),
    ];
    for step in [1, 3, 1 << 20] {
        let evs = run_conn(&parts, step).expect("valid");
        assert_eq!(
            one_direction(&evs, Q),
            vec![
                req(
                    "GET",
                    "/chat",
                    &[("Upgrade", "websocket"), ("Connection", "Upgrade")]
                ),
                end(),
                Ev::Upgraded,
                Ev::Tunnel(b"\x81\x02hi".to_vec()),
            ],
            "step {step}"
        );
        assert_eq!(
            one_direction(&evs, R),
            vec![
                Ev::Resp(101, h(&[("Upgrade", "websocket")])),
                end(),
                Ev::Upgraded,
                Ev::Tunnel(b"\x81\x02yo".to_vec()),
            ],
            "step {step}"
        );
    }
}

#[test]
fn connection_goes_on_after_a_refused_upgrade() {
    use Direction::{Request as Q, Response as R};
    let parts: [(Direction, &[u8]); 3] = [
        (
            Q,
            b"GET /a HTTP/1.1\r\nUpgrade: h2c\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        ),
        (R, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        (Q, b"GET /c HTTP/1.1\r\n\r\n"),
    ];
    for step in [1, 5, 1 << 20] {
        let evs = run_conn(&parts, step).expect("valid");
        assert_eq!(
            one_direction(&evs, Q),
            vec![
                req("GET", "/a", &[("Upgrade", "h2c")]),
                end(),
                req("GET", "/b", &[]),
                end(),
                req("GET", "/c", &[]),
                end(),
            ],
            "step {step}"
        );
    }
}

#[test]
fn connection_tunnels_after_connect() {
    use Direction::{Request as Q, Response as R};
    // The client sent its TLS hello right behind the CONNECT, before the
    // proxy answered: those bytes are held until the answer is known.
    let parts: [(Direction, &[u8]); 2] = [
        (
            Q,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03",
        ),
        (R, b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x03"),
    ];
    for step in [1, 2, 1 << 20] {
        let evs = run_conn(&parts, step).expect("valid");
        assert_eq!(
            one_direction(&evs, Q)[1..],
            [end(), Ev::Upgraded, Ev::Tunnel(b"\x16\x03".to_vec())]
        );
        assert_eq!(
            one_direction(&evs, R),
            [
                Ev::Resp(200, vec![]),
                end(),
                Ev::Upgraded,
                Ev::Tunnel(b"\x16\x03\x03".to_vec())
            ]
        );
    }
}

#[test]
fn large_bodies_stream_without_buffering() {
    let len = 4 << 20;
    let mut d = Decoder::response();
    let mut seen = 0usize;
    let mut ended = false;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
    d.feed(head.as_bytes(), &mut |_| {}).expect("head");
    let block = vec![7u8; 16 * 1024];
    for _ in 0..len / block.len() {
        d.feed(&block, &mut |ev| match ev {
            Event::Body(b) => seen += b.len(),
            Event::End { .. } => ended = true,
            _ => {}
        })
        .expect("body");
    }
    assert_eq!(seen, len);
    assert!(ended);
    assert!(d.buf_capacity() < 1024, "body bytes were buffered");
}

#[test]
fn gaps_inside_known_lengths_keep_step() {
    let mut d = Decoder::response();
    let mut out = Vec::new();
    d.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
        &mut |e| push(&mut out, e),
    )
    .expect("valid");
    d.gap(6, &mut |e| push(&mut out, e))
        .expect("inside the body");
    d.feed(b"ijHTTP/1.1 204 No\r\n\r\n", &mut |e| push(&mut out, e))
        .expect("valid");
    assert_eq!(
        out,
        vec![
            Ev::Resp(200, h(&[("Content-Length", "10")])),
            body(b"abij"),
            end(),
            Ev::Resp(204, vec![]),
            end(),
        ]
    );
    assert_eq!(d.gap(1, &mut |_| {}), Err(Error::Gap));
    assert_eq!(d.feed(b"x", &mut |_| {}), Err(Error::Gap));
}

#[test]
fn framing_errors() {
    let cases: &[(&[u8], Error)] = &[
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            Error::TransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Error::ContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            Error::ContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Error::ChunkSize,
        ),
    ];
    for (input, err) in cases {
        assert_eq!(run(Kind::Request, input, 1, &[], false), Err(*err));
        assert_eq!(
            run(Kind::Request, input, input.len(), &[], false),
            Err(*err)
        );
    }
    // Identical repeated lengths are one length.
    let input = b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx";
    assert!(run(Kind::Request, input, 1, &[], false).is_ok());
}

#[test]
fn head_limits_apply_when_streaming() {
    let mut big = b"GET / HTTP/1.1\r\nA: ".to_vec();
    big.resize(MAX_HEADER_BYTES + 1, b'a');
    assert_eq!(
        run(Kind::Request, &big, 1000, &[], false),
        Err(Error::HeadTooLarge)
    );
    assert_eq!(
        run(Kind::Request, &big, big.len(), &[], false),
        Err(Error::HeadTooLarge)
    );
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        run(Kind::Request, &many, 7, &[], false),
        Err(Error::TooManyHeaders)
    );
}

/// Found by the `http1_request` and `http1_response` fuzz targets: an
/// invalid start line was refused when fed whole but held as a partial head
/// when fed in pieces. Errors must not depend on the split.
#[test]
fn errors_do_not_depend_on_the_split() {
    assert_eq!(
        run_all_splits(Kind::Request, b"\nA\n", &[], false),
        Err(Error::Token)
    );
    assert_eq!(
        run_all_splits(Kind::Response, b"HT\n", &[Method::Connect], false),
        Err(Error::Version)
    );
    assert_eq!(
        run_all_splits(Kind::Request, b"GET / HTTP/1.1\r\nA\x01", &[], false),
        Err(Error::HeaderName)
    );
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    assert_eq!(
        run_all_splits(Kind::Request, &many, &[], false),
        Err(Error::TooManyHeaders)
    );
}

fn run_mid(kind: Kind, input: &[u8], step: usize) -> Result<(Vec<Ev>, u64), Error> {
    let mut d = Decoder::new_mid_stream(kind);
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        d.feed(piece, &mut |ev| push(&mut out, ev))?;
    }
    Ok((out, d.skipped()))
}

#[test]
fn joined_mid_body_finds_the_next_response() {
    let input =
        b"lo world\r\nmore HTTP/1.1 200 body\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    let whole = run_mid(Kind::Response, input, input.len()).expect("valid");
    for step in 1..input.len() {
        assert_eq!(
            run_mid(Kind::Response, input, step),
            Ok(whole.clone()),
            "step {step}"
        );
    }
    assert_eq!(
        whole,
        (
            vec![
                Ev::Resp(200, h(&[("Content-Length", "2")])),
                body(b"hi"),
                end()
            ],
            34
        )
    );
}

#[test]
fn joined_mid_stream_requests() {
    // Joined at a message start: nothing is skipped.
    let input = b"GET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        run_mid(Kind::Request, input, 3),
        Ok((vec![req("GET", "/", &[]), end()], 0))
    );
    // Joined inside a request line.
    let input = b"ET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nz";
    for step in [1, 2, 5, input.len()] {
        let (evs, skipped) = run_mid(Kind::Request, input, step).expect("valid");
        assert_eq!(
            evs,
            vec![
                req("POST", "/a", &[("Content-Length", "1")]),
                body(b"z"),
                end()
            ],
            "step {step}"
        );
        assert_eq!(skipped, 26);
    }
}

#[test]
fn resync_after_an_error() {
    let mut d = Decoder::response();
    let mut out = Vec::new();
    assert_eq!(
        d.feed(b"garbage\r\n", &mut |e| push(&mut out, e)),
        Err(Error::Version)
    );
    d.resync();
    d.feed(
        b"more garbage\r\nHTTP/1.1 204 No Content\r\n\r\n",
        &mut |e| push(&mut out, e),
    )
    .expect("resynced");
    assert_eq!(out, vec![Ev::Resp(204, vec![]), end()]);
}

/// A request head of `lines` fields of 500 bytes each.
fn long_head(lines: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..lines {
        let line = format!("X-Field-{i:03}: ");
        head.extend_from_slice(line.as_bytes());
        head.resize(head.len() + 498 - line.len(), b'v');
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Fastest of three runs feeding `head` one byte per call.
fn bytewise_time(head: &[u8], fields: usize) -> std::time::Duration {
    (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            let mut d = Decoder::request();
            let mut seen = 0;
            for b in head.chunks(1) {
                d.feed(b, &mut |e| {
                    if let Event::Request(h) = e {
                        seen = h.headers.iter().count();
                    }
                })
                .expect("valid");
            }
            assert_eq!(seen, fields);
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// A head arriving one byte per record is parsed in time linear in its
/// length: each record resumes in the field line cut short, where its check
/// stopped; it does not rescan the fields before. 4× the bytes must cost well under the 16× a
/// rescan of the whole head would.
#[test]
fn a_head_fed_byte_by_byte_costs_linear_time() {
    let small = long_head(MAX_HEADERS / 4);
    let large = long_head(MAX_HEADERS - 1);
    assert!(small.len() > 16_000 && large.len() > 63_000);
    assert!(large.len() <= MAX_HEADER_BYTES);
    let t_small = bytewise_time(&small, MAX_HEADERS / 4);
    let t_large = bytewise_time(&large, MAX_HEADERS - 1);
    assert!(
        t_large < t_small * 8,
        "16 KiB: {t_small:?}, 64 KiB: {t_large:?}"
    );
    // One long value: resumed where its check stopped, not at its line.
    let one_line = |len: usize| {
        let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        head.resize(head.len() + len, b'v');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    let t_small = bytewise_time(&one_line(15 * 1024), 1);
    let t_large = bytewise_time(&one_line(60 * 1024), 1);
    assert!(
        t_large < t_small * 8,
        "15 KiB value: {t_small:?}, 60 KiB value: {t_large:?}"
    );
}
