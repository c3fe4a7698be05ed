//! Shard tests on synthetic records: ordering, HTTP/1 transactions, gaps, TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use super::budget::Budget;
use super::input::{ConnInfo, Flow, Input, Role};
use super::shard::{Output, Shard};
use super::txn::Transaction;
use crate::attribution::{Attribution, Origin};

/// A node with no container attribution for the processes in these tests.
const ORIGIN: Origin<'static> = Origin {
    host: "node-1",
    place: &Attribution {
        cgroup: None,
        container_id: None,
        container_runtime: None,
        pod_uid: None,
        pod_qos: None,
    },
};

/// Test frame: kind u8, conn u64, seq u64, ts u64, flow u8, tls u8, payload.
/// Kinds: 0 open (client), 1 data, 2 close, 3 open of a socket already open
/// (role unknown), 4 exit of process 42 (conn and seq unused), 5 data whose
/// payload starts with a u64 count of bytes not copied (see [`shed_frame`]),
/// 6 a ClientHello copy.
fn frame(kind: u8, conn: u64, seq: u64, flow: Flow, tls: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&conn.to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&(seq * 1000).to_le_bytes());
    f.push(matches!(flow, Flow::Egress) as u8);
    f.push(tls as u8);
    f.extend_from_slice(payload);
    f
}

fn decode(f: &[u8]) -> Option<Input<'_>> {
    let u64_at = |i: usize| Some(u64::from_le_bytes(f.get(i..i + 8)?.try_into().ok()?));
    let (conn_id, seq, ts_ns) = (u64_at(1)?, u64_at(9)?, u64_at(17)?);
    let flow = if *f.get(25)? == 1 {
        Flow::Egress
    } else {
        Flow::Ingress
    };
    let tls = *f.get(26)? == 1;
    Some(match f[0] {
        0 | 3 => Input::Open(ConnInfo {
            conn_id,
            pid: 42,
            tid: 42,
            comm: "curl".into(),
            cgroup_id: 1,
            local: "127.0.0.1:50000".parse::<SocketAddr>().unwrap(),
            remote: "127.0.0.1:443".parse::<SocketAddr>().unwrap(),
            role: if f[0] == 0 {
                Role::Client
            } else {
                Role::Unknown
            },
            ts_ns,
        }),
        4 => Input::Exit { pid: 42 },
        6 => Input::Hello {
            conn_id,
            seq,
            pid: 42,
            payload: &f[27..],
        },
        1 | 5 => {
            let (payload, shed) = if f[0] == 5 {
                (f.get(35..)?, u64_at(27)?)
            } else {
                (&f[27..], 0)
            };
            Input::Data {
                conn_id,
                seq,
                ts_ns,
                pid: 42,
                tid: 42,
                flow,
                tls,
                payload,
                shed,
            }
        }
        _ => Input::Close {
            conn_id,
            seq,
            ts_ns,
            skipped_sent: 0,
            skipped_received: 0,
        },
    })
}

/// Records of one client connection: open, then each (flow, bytes), then close.
fn conversation(conn: u64, tls: bool, parts: &[(Flow, &[u8])]) -> Vec<Vec<u8>> {
    let mut frames = vec![frame(0, conn, 0, Flow::Egress, tls, b"")];
    for (i, (flow, bytes)) in parts.iter().enumerate() {
        frames.push(frame(1, conn, i as u64 + 1, *flow, tls, bytes));
    }
    frames.push(frame(
        2,
        conn,
        parts.len() as u64 + 1,
        Flow::Egress,
        tls,
        b"",
    ));
    frames
}

fn run(frames: &[Vec<u8>]) -> (Vec<Transaction>, Shard<Vec<Output>>) {
    let mut shard = Shard::new(decode, Vec::new());
    for f in frames {
        shard.offer(f, 0);
    }
    shard.tick(u64::MAX);
    let txns = take_txns(&mut shard);
    (txns, shard)
}

/// The transactions a shard has emitted so far.
fn take_txns(shard: &mut Shard<Vec<Output>>) -> Vec<Transaction> {
    std::mem::take(shard.sink_mut())
        .into_iter()
        .filter_map(|o| match o {
            Output::Txn(t) => Some(*t),
            Output::Opened(_) | Output::Closed(_) => None,
        })
        .collect()
}

const E: Flow = Flow::Egress;
const I: Flow = Flow::Ingress;

/// A sink like `Vec<Output>` behind which nothing reads header blocks or
/// bodies (events only).
#[derive(Default)]
struct EventsOnly(Vec<Output>);

impl super::shard::Sink for EventsOnly {
    fn send(&mut self, item: Output) {
        self.0.push(item);
    }
    fn keeps(&self) -> super::shard::Keeps {
        super::shard::Keeps {
            heads: false,
            bodies: false,
        }
    }
}

#[test]
fn heads_and_bodies_nothing_reads_are_counted_and_not_copied() {
    let body = vec![b'b'; 100_000];
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut parts: Vec<(Flow, &[u8])> = vec![
        (E, b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
        (I, head.as_bytes()),
    ];
    for chunk in body.chunks(16 * 1024) {
        parts.push((I, chunk));
    }
    let budget = Budget::new(1 << 20);
    let mut shard = Shard::with_budget(decode, EventsOnly::default(), budget.clone());
    for f in conversation(9, false, &parts) {
        shard.offer(&f, 0);
    }
    shard.tick(u64::MAX);
    let txns: Vec<Transaction> = std::mem::take(&mut shard.sink_mut().0)
        .into_iter()
        .filter_map(|o| match o {
            Output::Txn(t) => Some(*t),
            Output::Opened(_) | Output::Closed(_) => None,
        })
        .collect();
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert_eq!((t.request.body_bytes, t.response.body_bytes), (5, 100_000));
    assert!(t.request.body.is_empty() && t.response.body.is_empty());
    assert!(t.request.head.is_empty() && t.response.head.is_empty());
    // What the events say of the heads is still there.
    assert_eq!((t.request.head_bytes, t.response.head_bytes), (40, 43));
    assert_eq!(t.request.header("content-length"), Some("5"));
    assert_eq!((t.method.as_str(), t.status), ("POST", Some(200)));
    assert!(!t.truncated, "nothing was shed");
    assert_eq!(shard.stats.body_shed_bytes, 0);
    assert_eq!(budget.used(), 0, "nothing charged");
}

#[test]
fn keep_alive_connection_yields_one_transaction_per_request() {
    let big = vec![b'z'; 2 << 20];
    let big_head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len());
    let mut parts: Vec<(Flow, &[u8])> =
        vec![
        (E, b"GET /one HTTP/1.1\r\nHost: example.test\r\nAuthorization: Bearer s3cret\r\n\r\n"),
        (I, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"),
        (I, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        (E, b"POST /two HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc"),
        (I, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        (E, b"GET /three HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        (I, big_head.as_bytes()),
    ];
    for chunk in big.chunks(16 * 1024) {
        parts.push((I, chunk));
    }
    let (txns, shard) = run(&conversation(7, true, &parts));
    assert_eq!(shard.stats.parse_errors, 0);
    let summary: Vec<_> = txns
        .iter()
        .map(|t| (t.method.as_str(), t.path.as_str(), t.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/one", Some(200)),
            ("POST", "/two", Some(201)),
            ("GET", "/three", Some(200))
        ]
    );
    assert_eq!(&txns[0].response.body[..], b"hello world");
    assert_eq!(&txns[1].request.body[..], b"abc");
    assert_eq!(txns[2].response.body.len(), big.len());
    assert!(txns[2].response.body.iter().all(|&b| b == b'z'));
    assert_eq!(txns[0].authority.as_deref(), Some("example.test"));
    assert!(
        txns.iter()
            .all(|t| t.tls && t.egress && !t.gap && !t.truncated)
    );
    assert_eq!(
        &txns[0].request.head[..],
        b"GET /one HTTP/1.1\r\nHost: example.test\r\nAuthorization: Bearer s3cret\r\n\r\n"
    );
    let event = String::from_utf8(txns[0].event_json(&[], Some("/usr/bin/curl"), &ORIGIN)).unwrap();
    assert!(event.contains("\"exe\":\"/usr/bin/curl\""), "{event}");
    assert!(!event.contains("s3cret"), "{event}");
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["schema"], 2);
    assert_eq!(event["url"], "https://example.test/one");
    assert_eq!(event["auth_token_source"], "authorization");
    assert_eq!(event["auth_token_type"], "Bearer");
    assert_eq!(
        event["auth_token_mask"],
        serde_json::Value::Null,
        "short token"
    );
    assert_eq!(event["response_content_type"], "text/plain");
    assert!(event.get("request_headers").is_none(), "{event}");
}

#[test]
fn records_out_of_order_are_put_back_in_sequence() {
    let parts: Vec<(Flow, &[u8])> = vec![
        (E, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
        (I, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"),
        (I, b"abc"),
        (I, b"def"),
    ];
    let mut frames = conversation(9, false, &parts);
    frames[1..5].reverse();
    let (txns, shard) = run(&frames);
    assert_eq!(txns.len(), 1);
    assert_eq!(&txns[0].response.body[..], b"abcdef");
    assert_eq!((shard.stats.gap_records, shard.stats.late), (0, 0));
}

#[test]
fn a_lost_record_marks_the_transaction_with_a_gap() {
    let parts: Vec<(Flow, &[u8])> = vec![
        (E, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
        (I, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"),
        (I, b"abc"),
        (I, b"def"),
    ];
    let mut frames = conversation(3, false, &parts);
    frames.remove(3); // "abc" lost
    let (txns, shard) = run(&frames);
    assert_eq!(shard.stats.gap_records, 1);
    assert_eq!(txns.len(), 1);
    assert!(txns[0].gap && txns[0].truncated);
}

#[test]
fn plain_records_of_a_tls_connection_are_not_parsed() {
    let mut frames = vec![frame(0, 5, 0, E, false, b"")];
    frames.push(frame(1, 5, 1, E, false, b"\x16\x03\x01\x02\x00ciphertext"));
    frames.push(frame(
        1,
        5,
        2,
        E,
        true,
        b"GET /secret HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    frames.push(frame(1, 5, 3, I, false, b"\x17\x03\x03\x00\x10ciphertext"));
    frames.push(frame(1, 5, 4, I, true, b"HTTP/1.1 204 No Content\r\n\r\n"));
    frames.push(frame(2, 5, 5, E, false, b""));
    let (txns, shard) = run(&frames);
    assert_eq!(txns.len(), 1);
    assert_eq!(
        (txns[0].path.as_str(), txns[0].status, txns[0].tls),
        ("/secret", Some(204), true)
    );
    assert_eq!(shard.stats.ciphertext_skipped, 1);
}

/// A TLS ClientHello record naming `name` (one cipher suite, the
/// `server_name` extension only).
fn client_hello(name: &str) -> Vec<u8> {
    let mut sni = vec![0];
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name.as_bytes());
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(sni.len() as u16 + 2).to_be_bytes());
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    rec
}

#[test]
fn the_client_hello_names_the_transactions_of_its_connection() {
    let hello = client_hello("api.test");
    let unnamed = client_hello("a b");
    let (get_a, get_b): (&[u8], &[u8]) = (
        b"GET /a HTTP/1.1\r\nHost: other.test\r\n\r\n",
        b"GET /b HTTP/1.1\r\n\r\n",
    );
    let done: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
    // A copy in two pieces, as a server that reads the record header alone
    // makes it; the message arrives after the request and is put back in
    // order by its sequence number.
    let mut frames = vec![frame(0, 8, 0, I, false, b"")];
    frames.push(frame(6, 8, 1, I, false, &hello[..5]));
    frames.push(frame(1, 8, 3, E, true, get_a));
    frames.push(frame(6, 8, 2, I, false, &hello[5..]));
    frames.push(frame(1, 8, 4, I, true, done));
    frames.push(frame(2, 8, 5, E, false, b""));
    // A client's copy in one piece, naming nothing readable.
    frames.push(frame(0, 9, 0, E, false, b""));
    frames.push(frame(6, 9, 1, E, false, &unnamed));
    frames.push(frame(1, 9, 2, E, true, get_b));
    frames.push(frame(1, 9, 3, I, true, done));
    let (txns, shard) = run(&frames);
    let named: Vec<_> = txns
        .iter()
        .map(|t| (t.path.as_str(), t.tls_sni.as_deref(), t.domain()))
        .collect();
    assert_eq!(
        named,
        [
            ("/a", Some("api.test"), Some("api.test")),
            ("/b", None, None)
        ]
    );
    let s = shard.stats;
    assert_eq!(
        (
            s.tls_hello_records,
            s.tls_hello_bytes,
            s.tls_server_names,
            s.tls_hello_unnamed
        ),
        (3, (hello.len() + unnamed.len()) as u64, 1, 1)
    );
    // Not stream bytes.
    assert_eq!(s.bytes, (get_a.len() + get_b.len() + 2 * done.len()) as u64);
}

#[test]
fn non_http_connections_are_left_alone() {
    let parts: Vec<(Flow, &[u8])> = vec![(E, b"\x00\x01binary"), (I, b"GET / HTTP/1.1\r\n\r\n")];
    let (txns, shard) = run(&conversation(11, false, &parts));
    assert!(txns.is_empty());
    assert_eq!(shard.stats.not_http, 1);
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn http2_streams_become_transactions_with_decoded_headers() {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let mut client = tapwire_http::h2::PREFACE.to_vec();
    client.extend(h2_frame(SETTINGS, 0, 0, b""));
    // :method GET, :scheme https, :path /, :authority example.test (literal, indexed name 1).
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 12];
    block.extend_from_slice(b"example.test");
    client.extend(h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
    let mut server = h2_frame(SETTINGS, 0, 0, b"");
    // :status 200, then content-type: text/plain as a literal with a new name.
    let mut block = vec![0x88, 0x00, 12];
    block.extend_from_slice(b"content-type");
    block.push(10);
    block.extend_from_slice(b"text/plain");
    server.extend(h2_frame(HEADERS, END_HEADERS, 1, &block));
    server.extend(h2_frame(DATA, END_STREAM, 1, b"hello h2"));
    let (txns, shard) = run(&conversation(21, true, &[(E, &client), (I, &server)]));
    assert_eq!(shard.stats.parse_errors, 0);
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert_eq!(
        (
            t.method.as_str(),
            t.path.as_str(),
            t.authority.as_deref(),
            t.status
        ),
        ("GET", "/", Some("example.test"), Some(200))
    );
    assert_eq!(t.protocol, super::txn::Protocol::Http2);
    assert_eq!(t.stream_id, Some(1));
    assert_eq!(t.response.header("content-type"), Some("text/plain"));
    assert_eq!(&t.response.body[..], b"hello h2");
    assert!(!t.incomplete_headers && !t.truncated);
}

#[test]
fn an_http2_server_that_speaks_first_is_followed() {
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    // The server's SETTINGS arrives before the client's preface.
    let server_settings = h2_frame(SETTINGS, 0, 0, b"");
    let mut client = tapwire_http::h2::PREFACE.to_vec();
    client.extend(h2_frame(SETTINGS, 0, 0, b""));
    client.extend(h2_frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &[0x82, 0x87, 0x84],
    ));
    let response = h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, &[0x88]);
    let (txns, shard) = run(&conversation(
        22,
        true,
        &[(I, &server_settings), (E, &client), (I, &response)],
    ));
    assert_eq!((shard.stats.not_http, shard.stats.parse_errors), (0, 0));
    let got: Vec<_> = txns
        .iter()
        .map(|t| (t.method.as_str(), t.path.as_str(), t.status))
        .collect();
    assert_eq!(got, [("GET", "/", Some(200))]);
}

#[test]
fn connection_events_carry_the_documented_fields() {
    let Some(Input::Open(info)) = decode(&frame(0, 4, 0, E, false, b"")) else {
        panic!()
    };
    let open = String::from_utf8(super::txn::open_event_json(&info, &ORIGIN)).unwrap();
    assert_eq!(
        open,
        "{\"type\":\"connection\",\"event\":\"open\",\"conn_id\":4,\"pid\":42,\"comm\":\"curl\",\
         \"cgroup_id\":1,\"host\":\"node-1\",\"role\":\"client\",\"direction\":\"egress-internal\",\"local\":\"127.0.0.1:50000\",\
         \"remote\":\"127.0.0.1:443\"}"
    );
    let close = super::txn::ConnSummary {
        conn: info,
        tls: true,
        tls_sni: Some("api.test".into()),
        bytes_sent: 10,
        bytes_received: 20,
        close_ns: 2_500_000,
    };
    let close = String::from_utf8(close.event_json(&ORIGIN)).unwrap();
    assert_eq!(
        close,
        "{\"type\":\"connection\",\"event\":\"close\",\"conn_id\":4,\"pid\":42,\"comm\":\"curl\",\
         \"cgroup_id\":1,\"host\":\"node-1\",\"role\":\"client\",\"direction\":\"egress-internal\",\"local\":\"127.0.0.1:50000\",\
         \"remote\":\"127.0.0.1:443\",\"tls\":true,\"tls_sni\":\"api.test\",\"bytes_sent\":10,\"bytes_received\":20,\
         \"duration_ms\":2.5}"
    );
}

#[test]
fn bodies_past_the_memory_budget_are_shed_counted_and_marked_while_heads_are_kept() {
    let budget = Budget::new(10_000);
    let mut shard = Shard::with_budget(decode, Vec::new(), budget.clone());
    let body = vec![b'b'; 6_000];
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        3 * body.len()
    );
    let mut frames = vec![frame(0, 1, 0, E, false, b"")];
    frames.push(frame(1, 1, 1, E, false, head.as_bytes()));
    for i in 0..3 {
        frames.push(frame(1, 1, 2 + i, E, false, &body));
    }
    frames.push(frame(
        1,
        1,
        5,
        I,
        false,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    ));
    for f in &frames {
        shard.offer(f, 0);
    }
    let txns = take_txns(&mut shard);
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert_eq!(
        (t.method.as_str(), t.path.as_str(), t.status),
        ("POST", "/up", Some(201))
    );
    assert!(t.truncated && t.request.shed);
    // The first chunk fits; the second does not, and nothing after it is kept.
    assert_eq!(t.request.body.len(), 6_000);
    assert_eq!(t.request.body_bytes, 18_000);
    assert_eq!(shard.stats.body_shed_bytes, 12_000);
    assert_eq!(budget.used(), 6_000);
    drop(txns);
    assert_eq!(
        budget.used(),
        0,
        "the budget is given back with the transaction"
    );
}

/// A shard with a budget of 10,000 bytes, spent by an upload that is never
/// answered: 6,000 bytes of its body fit, the rest is shed and the
/// transaction stays open.
fn shard_with_an_unanswered_upload() -> (Arc<Budget>, Shard<Vec<Output>>) {
    let budget = Budget::new(10_000);
    let mut shard = Shard::with_budget(decode, Vec::new(), budget.clone());
    let upload: Vec<(Flow, &[u8])> = vec![
        (
            E,
            b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 20000\r\n\r\n",
        ),
        (E, &[b'u'; 6_000]),
        (E, &[b'u'; 4_000]),
        (E, &[b'u'; 10_000]),
    ];
    let mut frames = conversation(1, false, &upload);
    frames.pop(); // still open
    for f in &frames {
        shard.offer(f, 0);
    }
    assert_eq!(shard.stats.body_shed_bytes, 14_000, "{:?}", shard.stats);
    (budget, shard)
}

#[test]
fn a_connection_opened_once_bodies_spent_the_budget_is_still_put_back_in_sequence() {
    let (_budget, mut shard) = shard_with_an_unanswered_upload();
    // Another connection's response reaches the shard before its request
    // (another CPU's ring): it is held, not taken as the request's loss.
    let parts: Vec<(Flow, &[u8])> = vec![
        (E, b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n"),
        (I, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ];
    let mut frames = conversation(2, false, &parts);
    frames.swap(1, 2);
    for f in &frames {
        shard.offer(f, 1);
    }
    let txns = take_txns(&mut shard);
    let summary: Vec<_> = txns
        .iter()
        .map(|t| (t.method.as_str(), t.path.as_str(), t.status, t.gap))
        .collect();
    assert_eq!(summary, [("GET", "/after", Some(204), false)]);
    assert_eq!(shard.stats.gap_records, 0);
}

/// Offers a GET on connection 2 whose response, with a body of `body`
/// bytes, reaches the shard before the request (another CPU's ring).
fn offer_a_response_before_its_request(shard: &mut Shard<Vec<Output>>, body: usize) {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n{}",
        "r".repeat(body)
    );
    let parts: Vec<(Flow, &[u8])> = vec![
        (E, b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n"),
        (I, response.as_bytes()),
    ];
    let mut frames = conversation(2, false, &parts);
    frames.swap(1, 2);
    for f in &frames {
        shard.offer(f, 1);
    }
}

#[test]
fn kept_bodies_give_their_room_to_a_record_that_must_wait_for_its_turn() {
    let (budget, mut shard) = shard_with_an_unanswered_upload();
    assert_eq!(budget.used(), 6_000);
    // Another connection's response, larger than what is left, reaches the
    // shard before its request: the upload's body makes room for it rather
    // than the request being given up.
    offer_a_response_before_its_request(&mut shard, 5_000);
    assert_eq!(
        (
            shard.stats.gap_records,
            shard.stats.body_dropped_to_hold_bytes
        ),
        (0, 6_000)
    );
    let txns = take_txns(&mut shard);
    let summary: Vec<_> = txns
        .iter()
        .map(|t| (t.path.as_str(), t.status, t.gap, t.response.body.len()))
        .collect();
    assert_eq!(summary, [("/after", Some(200), false, 5_000)]);
    drop(txns);
    shard.stop();
    let txns = take_txns(&mut shard);
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert_eq!(t.path, "/up");
    assert!(t.truncated && t.request.shed && t.request.body.is_empty());
    assert_eq!(t.request.body_bytes, 20_000);
    drop(txns);
    assert_eq!(budget.used(), 0);
}

#[test]
fn kept_bodies_stay_when_dropping_them_would_not_make_room() {
    let (budget, mut shard) = shard_with_an_unanswered_upload();
    // A held record larger than the whole budget: dropping the upload's
    // body would lose it and still not make room, so the hole is given up.
    offer_a_response_before_its_request(&mut shard, 12_000);
    assert_eq!(shard.stats.body_dropped_to_hold_bytes, 0);
    assert_eq!(shard.stats.gap_records_over_budget, 1);
    shard.stop();
    let txns = take_txns(&mut shard);
    let upload = txns.iter().find(|t| t.path == "/up").expect("the upload");
    assert_eq!(upload.request.body.len(), 6_000);
    drop(txns);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_body_cut_short_gives_back_the_room_made_for_its_announced_length() {
    let budget = Budget::new(64 << 20);
    let mut msg = super::txn::Message::default();
    // A 1 MiB upload of which the probes copied only a 4 KiB prefix.
    msg.expect_body(1 << 20);
    assert!(msg.push_body(&[b'x'; 4096], &budget).none());
    assert!(budget.used() >= 1 << 20, "room for the announced length");
    msg.skip_body((1 << 20) - 4096);
    let body = msg.take_body();
    assert_eq!(&body[..], &[b'x'; 4096][..]);
    assert!(
        budget.used() < 8192,
        "{} bytes held for 4 KiB waiting in a store's queue",
        budget.used()
    );
    drop(body);
    assert_eq!(budget.used(), 0);
    // A whole body keeps its buffer: no reallocation.
    let mut msg = super::txn::Message::default();
    msg.expect_body(100_000);
    assert!(msg.push_body(&[b'y'; 100_000], &budget).none());
    let ptr = msg.body.as_ptr();
    let body = msg.take_body();
    assert_eq!((body.as_ptr(), body.len()), (ptr, 100_000));
}

#[test]
fn a_body_taken_for_its_object_holds_its_budget_until_its_last_holder_drops_it() {
    let budget = Budget::new(10_000);
    let mut msg = super::txn::Message::default();
    assert!(msg.push_body(&[b'x'; 3_000], &budget).none());
    let held = budget.used();
    assert!(held >= 3_000);
    let body = msg.take_body();
    let queued = body.clone();
    drop(msg);
    assert_eq!(budget.used(), held, "taking the body keeps its charge");
    drop(body);
    assert_eq!(budget.used(), held, "a store's queue still holds the bytes");
    assert_eq!(&queued[..], &[b'x'; 3_000][..]);
    drop(queued);
    assert_eq!(budget.used(), 0);
}

#[test]
fn connections_of_an_exited_process_are_released_with_their_open_transactions() {
    let mut shard = Shard::new(decode, Vec::new());
    for conn in 1..=100 {
        shard.offer(&frame(0, conn, 0, E, false, b""), 0);
        shard.offer(
            &frame(1, conn, 1, E, false, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"),
            0,
        );
    }
    assert_eq!((shard.connections(), shard.processes()), (100, 1));
    shard.offer(&frame(4, 0, 0, E, false, b""), 1_000);
    // Records of the process may still arrive from other rings for a while.
    shard.tick(999 + super::reorder::REORDER_TIMEOUT_NS);
    assert_eq!(shard.connections(), 100);
    shard.tick(2_000 + super::reorder::REORDER_TIMEOUT_NS);
    assert_eq!((shard.connections(), shard.processes()), (0, 0));
    assert_eq!(shard.stats.released_on_exit, 100);
    let txns = take_txns(&mut shard);
    assert_eq!(txns.len(), 100);
    assert!(
        txns.iter()
            .all(|t| t.truncated && t.path == "/x" && t.status.is_none())
    );
    // A later connection is followed as usual.
    let (txns, _) = run(&conversation(
        500,
        false,
        &[
            (E, b"GET /after HTTP/1.1\r\n\r\n"),
            (I, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ],
    ));
    assert_eq!(txns[0].status, Some(200));
}

#[test]
fn an_idle_connection_gives_up_its_transactions_but_keeps_its_parser() {
    let mut shard = Shard::new(decode, Vec::new());
    shard.set_idle_timeout(std::time::Duration::from_secs(1));
    shard.offer(&frame(0, 1, 0, E, false, b""), 0);
    shard.offer(&frame(1, 1, 1, E, false, b"GET /slow HTTP/1.1\r\n\r\n"), 0);
    shard.tick(500_000_000);
    assert!(take_txns(&mut shard).is_empty());
    shard.tick(2_000_000_000);
    let txns = take_txns(&mut shard);
    assert_eq!(txns.len(), 1);
    assert!(txns[0].truncated && txns[0].path == "/slow");
    assert_eq!((shard.stats.idle_flushed, shard.connections()), (1, 1));
    // The connection goes on: its next exchange is a whole transaction.
    shard.offer(
        &frame(1, 1, 2, E, false, b"GET /next HTTP/1.1\r\n\r\n"),
        3_000_000_000,
    );
    shard.offer(
        &frame(
            1,
            1,
            3,
            I,
            false,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        3_000_000_000,
    );
    let txns = take_txns(&mut shard);
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].status, Some(200));
}

#[test]
fn stopping_emits_the_transactions_of_open_connections_marked() {
    let mut shard = Shard::new(decode, Vec::new());
    shard.offer(&frame(0, 1, 0, E, false, b""), 0);
    shard.offer(&frame(1, 1, 1, E, false, b"GET /open HTTP/1.1\r\n\r\n"), 0);
    shard.stop();
    let txns = take_txns(&mut shard);
    assert_eq!(txns.len(), 1);
    assert!(txns[0].truncated);
    assert_eq!(shard.stats.open_at_stop, 1);
}

#[test]
fn an_http1_connection_joined_mid_body_is_followed_from_the_next_request() {
    let mut frames = vec![frame(3, 1, 0, E, false, b"")];
    frames.push(frame(
        1,
        1,
        1,
        I,
        false,
        b"tail of a body sent before capture began",
    ));
    frames.push(frame(
        1,
        1,
        2,
        E,
        false,
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    frames.push(frame(
        1,
        1,
        3,
        I,
        false,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let (txns, shard) = run(&frames);
    assert_eq!(shard.stats.not_http, 0);
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert_eq!(
        (t.method.as_str(), t.path.as_str(), t.status),
        ("GET", "/next", Some(200))
    );
    assert_eq!(&t.response.body[..], b"ok");
}

#[test]
fn a_gap_rejoins_http1_at_the_next_request() {
    let parts: Vec<(Flow, &[u8])> = vec![
        (E, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
        (I, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"),
        (I, b"abc"),
        (I, b"def"),
        (E, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
        (I, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ];
    let mut frames = conversation(3, false, &parts);
    frames.remove(3); // "abc" lost
    let (txns, shard) = run(&frames);
    assert_eq!(shard.stats.gap_records, 1);
    let summary: Vec<_> = txns
        .iter()
        .map(|t| (t.path.as_str(), t.status, t.gap))
        .collect();
    assert_eq!(summary, [("/a", Some(200), true), ("/b", Some(204), false)]);
}

/// Records of a client connection pipelining two POSTs: open, head, body,
/// head, body.
fn two_posts(conn: u64) -> Vec<Vec<u8>> {
    vec![
        frame(0, conn, 0, E, false, b""),
        plain(
            conn,
            1,
            E,
            b"POST /first HTTP/1.1\r\nContent-Length: 8\r\n\r\n",
        ),
        plain(conn, 2, E, b"12345678"),
        plain(
            conn,
            3,
            E,
            b"POST /second HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
        ),
        plain(conn, 4, E, b"ok"),
    ]
}

#[test]
fn a_connection_whose_first_record_was_lost_is_followed_from_the_next_request() {
    // The first head was lost (its hole given up) and the body that follows
    // is the middle of a message: before the protocol was known, it is
    // judged as on a connection joined mid-way, not as the connection's
    // first bytes (which would make it not HTTP).
    let mut frames = two_posts(7);
    frames.remove(1);
    let (txns, shard) = run(&frames);
    assert_eq!((shard.stats.gap_records, shard.stats.not_http), (1, 0));
    let summary: Vec<_> = txns.iter().map(|t| (t.path.as_str(), t.gap)).collect();
    assert_eq!(summary, [("/second", true)]);
    assert_eq!(&txns[0].request.body[..], b"ok");
}

#[test]
fn a_first_record_without_payload_does_not_decide_the_protocol() {
    // Under overload the head's record was lost and the next one, the rest
    // of its write, came without payload: nothing to judge by, and what
    // comes after it is mid-message.
    let frames = vec![
        frame(0, 8, 0, E, false, b""),
        shed_frame(8, 1, E, b"", 16 << 10),
        plain(8, 2, E, b"tail of the body"),
        plain(8, 3, E, b"GET /next HTTP/1.1\r\n\r\n"),
        plain(8, 4, I, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ];
    let (txns, shard) = run(&frames);
    assert_eq!(shard.stats.not_http, 0);
    assert_eq!(shard.stats.overload_unparsed_bytes, 16 << 10);
    let summary: Vec<_> = txns.iter().map(|t| (t.path.as_str(), t.status)).collect();
    assert_eq!(summary, [("/next", Some(200))]);
}

#[test]
fn an_http2_connection_joined_mid_stream_yields_transactions_with_missing_fields_flagged() {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    // Stream 5: :method GET, :scheme http, :path /later (literal, indexed name 4),
    // then a field from the dynamic table built before the join (index 62).
    let mut block = vec![0x82, 0x86, 0x44, 6];
    block.extend_from_slice(b"/later");
    block.push(0x80 | 62);
    let client = h2_frame(HEADERS, END_STREAM | END_HEADERS, 5, &block);
    // :status 200 (static), then DATA.
    let mut server = h2_frame(HEADERS, END_HEADERS, 5, &[0x88]);
    server.extend(h2_frame(DATA, END_STREAM, 5, b"late"));
    let frames = vec![
        frame(3, 1, 0, E, false, b""),
        frame(1, 1, 1, E, false, &client),
        frame(1, 1, 2, I, false, &server),
    ];
    let (txns, shard) = run(&frames);
    assert_eq!((shard.stats.parse_errors, shard.stats.not_http), (0, 0));
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert_eq!(
        (t.method.as_str(), t.path.as_str(), t.status),
        ("GET", "/later", Some(200))
    );
    assert_eq!(t.protocol, super::txn::Protocol::Http2);
    assert!(t.incomplete_headers);
    assert_eq!(&t.response.body[..], b"late");
}

#[test]
fn a_connection_whose_exit_record_came_first_is_released_too() {
    let mut shard = Shard::new(decode, Vec::new());
    // The exit travelled in another CPU's ring and overtook the connection.
    shard.offer(&frame(4, 0, 0, E, false, b""), 1_000);
    shard.offer(&frame(0, 9, 0, E, false, b""), 2_000);
    shard.offer(
        &frame(1, 9, 1, E, false, b"GET /late HTTP/1.1\r\n\r\n"),
        2_000,
    );
    // Released a grace period after it showed up (its records may trail).
    shard.tick(1_999 + super::reorder::REORDER_TIMEOUT_NS);
    assert_eq!(shard.connections(), 1);
    shard.tick(2_000 + super::reorder::REORDER_TIMEOUT_NS);
    assert_eq!(shard.connections(), 0);
    assert_eq!(shard.stats.released_on_exit, 1);
    let txns = take_txns(&mut shard);
    assert_eq!(txns.len(), 1);
    assert!(txns[0].truncated && txns[0].path == "/late");
}

/// A plain data record of `payload` on client connection `conn`.
fn plain(conn: u64, seq: u64, flow: Flow, payload: &[u8]) -> Vec<u8> {
    frame(1, conn, seq, flow, false, payload)
}

/// A data record of `payload` followed by `shed` bytes the probes did not
/// copy (graceful overload).
fn shed_frame(conn: u64, seq: u64, flow: Flow, payload: &[u8], shed: u64) -> Vec<u8> {
    let mut body = shed.to_le_bytes().to_vec();
    body.extend_from_slice(payload);
    frame(5, conn, seq, flow, false, &body)
}

#[test]
fn bodies_not_copied_under_overload_are_skipped_by_their_length_and_later_requests_parsed() {
    // Each request is one write: the probes kept its first bytes (the head
    // and the start of the body) and counted the rest.
    let mut frames = vec![frame(0, 8, 0, E, false, b"")];
    let head = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n").into_bytes()
    };
    let mut seq = 1;
    for path in ["/one", "/two"] {
        let mut prefix = head(path);
        let copied_body = 4096 - prefix.len();
        prefix.resize(4096, b'b');
        frames.push(shed_frame(
            8,
            seq,
            E,
            &prefix,
            (100_000 - copied_body) as u64,
        ));
        frames.push(plain(
            8,
            seq + 1,
            I,
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ));
        seq += 2;
    }
    // A chunked response whose chunk data was not copied past its start.
    frames.push(plain(8, seq, E, b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n"));
    frames.push(shed_frame(
        8,
        seq + 1,
        I,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\nxy",
        0x4000 - 2,
    ));
    frames.push(plain(8, seq + 2, I, b"\r\n0\r\n\r\n"));
    frames.push(plain(
        8,
        seq + 3,
        E,
        b"GET /four HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    frames.push(plain(8, seq + 4, I, b"HTTP/1.1 204 No Content\r\n\r\n"));
    let (txns, shard) = run(&frames);
    let summary: Vec<_> = txns
        .iter()
        .map(|t| {
            (
                t.method.as_str(),
                t.path.as_str(),
                t.status,
                t.truncated,
                t.gap,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "/one", Some(201), true, false),
            ("POST", "/two", Some(201), true, false),
            ("GET", "/three", Some(200), true, false),
            ("GET", "/four", Some(204), false, false),
        ]
    );
    // The body's size is the true one; only the copied prefix is kept.
    assert_eq!(txns[0].request.body_bytes, 100_000);
    assert_eq!(txns[0].request.body.len(), 4096 - head("/one").len());
    assert_eq!(&txns[0].response.body[..], b"ok");
    assert_eq!(txns[2].response.body_bytes, 0x4000);
    assert_eq!(&txns[2].response.body[..], b"xy");
    let s = shard.stats;
    let shed_total = 2 * (100_000 - (4096 - head("/one").len()) as u64) + 0x4000 - 2;
    assert_eq!(s.overload_records, 3);
    assert_eq!(s.overload_body_bytes, shed_total);
    assert_eq!(
        (
            s.overload_resync_bytes,
            s.overload_unparsed_bytes,
            s.parse_errors,
            s.gap_records
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn bytes_not_copied_over_a_head_rejoin_at_the_next_request() {
    let mut frames = vec![frame(0, 6, 0, E, false, b"")];
    // A head cut short by the prefix: its end and the body were not copied.
    frames.push(shed_frame(
        6,
        1,
        E,
        b"POST /lost HTTP/1.1\r\nHost: h\r\nX-Long: aaaa",
        9000,
    ));
    frames.push(plain(
        6,
        2,
        I,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ));
    frames.push(plain(6, 3, E, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"));
    frames.push(plain(
        6,
        4,
        I,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ));
    let (txns, shard) = run(&frames);
    assert_eq!(shard.stats.overload_resync_bytes, 9000);
    assert_eq!(shard.stats.overload_body_bytes, 0);
    let paths: Vec<_> = txns.iter().map(|t| (t.path.as_str(), t.status)).collect();
    assert!(paths.contains(&("/next", Some(200))), "{paths:?}");
}

#[test]
fn http2_data_not_copied_is_skipped_by_the_frame_length() {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let mut client = tapwire_http::h2::PREFACE.to_vec();
    client.extend(h2_frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &[0x82, 0x87, 0x84],
    ));
    let mut first = h2_frame(HEADERS, END_HEADERS, 1, &[0x88]);
    let data = vec![b'd'; 10_000];
    let mut data_frame = h2_frame(DATA, END_STREAM, 1, &data);
    data_frame.truncate(9 + 100);
    first.extend(data_frame);
    let mut frames = vec![frame(0, 21, 0, E, true, b"")];
    frames.push(frame(1, 21, 1, E, true, &client));
    let mut with_shed = shed_frame(21, 2, I, &first, 9_900);
    with_shed[26] = 1; // TLS
    frames.push(with_shed);
    // Stream 3 after the skipped bytes parses whole.
    let mut later = h2_frame(HEADERS, END_STREAM | END_HEADERS, 3, &[0x82, 0x87, 0x84]);
    frames.push(frame(1, 21, 3, E, true, &later));
    later = h2_frame(HEADERS, END_STREAM | END_HEADERS, 3, &[0x89]);
    frames.push(frame(1, 21, 4, I, true, &later));
    let (txns, shard) = run(&frames);
    let summary: Vec<_> = txns
        .iter()
        .map(|t| (t.stream_id, t.status, t.truncated, t.response.body_bytes))
        .collect();
    assert_eq!(
        summary,
        [
            (Some(1), Some(200), true, 10_000),
            (Some(3), Some(204), false, 0)
        ]
    );
    assert_eq!(txns[0].response.body.len(), 100);
    assert_eq!(shard.stats.overload_body_bytes, 9_900);
}

#[test]
fn transaction_events_are_written_as_serde_writes_the_same_fields() {
    let long_token = "Bearer abcdefghijklmnopqrstuvwxyz0123456789";
    let first = format!(
        "GET /a/b?token=s3cret&q=%22x%22 HTTP/1.1\r\nHost: example.test:8443\r\n\
         Authorization: {long_token}\r\nUser-Agent: ua \"quoted\" \\ back\tslash\r\n\
         Content-Type: text/plain; charset=\"utf-8\"\r\n\r\n"
    );
    let parts: Vec<(Flow, &[u8])> = vec![
        (E, first.as_bytes()),
        (
            I,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
        ),
        (
            E,
            b"POST /two HTTP/1.1\r\nX-Api-Key: short\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (I, b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"),
        (
            E,
            b"GET http://proxy.example/abs?sig=1 HTTP/1.1\r\nHost: proxy.example\r\n\r\n",
        ),
        (I, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ];
    let (mut txns, _) = run(&conversation(9, true, &parts));
    assert_eq!(txns.len(), 3);
    txns[1].tls = false;
    txns[1].stream_id = Some(7);
    txns[1].grpc_status = Some(14);
    txns[1].protocol = super::txn::Protocol::Grpc;
    txns[1].tls_sni = Some("sni.example".into());
    txns[1].end_ns = txns[1].start_ns + 1_234_567;
    txns[2].egress = false;
    txns[2].gap = true;
    txns[2].truncated = true;
    txns[2].incomplete_headers = true;
    txns[2].authority = None;
    let container = Attribution {
        cgroup: Some("/kubepods.slice/pod\"x\".slice".into()),
        container_id: Some("4c2b1e8a".into()),
        container_runtime: Some("containerd"),
        pod_uid: Some("0f5a6b2c".into()),
        pod_qos: Some("burstable"),
    };
    let in_pod = Origin {
        host: "node-\u{1}2",
        place: &container,
    };
    let objects = [
        super::txn::ObjectRef {
            role: super::txn::ObjectRole::RequestHeaders,
            digest: blake3::hash(b"request headers"),
            size: 78,
            content_type: "application/http-headers".into(),
            url: Some(Arc::new(tapwire_store::s3::AccessUrl::new(
                "https://s3.example/b/{{DIGEST}}?x=\"1\"",
                "https",
                "s3.example",
                "b",
            ))),
            kept: true,
        },
        super::txn::ObjectRef {
            role: super::txn::ObjectRole::ResponseBody,
            digest: blake3::hash(b""),
            size: 0,
            content_type: "text/plain".into(),
            url: None,
            kept: false,
        },
    ];
    for txn in &txns {
        for (objects, exe, origin) in [
            (&objects[..], Some("/usr/bin/curl"), &ORIGIN),
            (&[][..], None, &in_pod),
            (&objects[1..], Some("/opt/\"odd\"\\name"), &in_pod),
        ] {
            let ours = String::from_utf8(txn.event_json(objects, exe, origin)).unwrap();
            let reference =
                String::from_utf8(txn.event_json_reference(objects, exe, origin)).unwrap();
            // The timestamp is taken when each is written.
            let strip = |s: &str| {
                let at = s.find("\"timestamp\":\"").unwrap() + 13;
                format!("{}{}", &s[..at], &s[at + 27..])
            };
            assert_eq!(strip(&ours), strip(&reference));
            assert!(ours.contains("\"timestamp\":\""), "{ours}");
        }
    }
    // The cases above reach the fields' less common forms.
    let first = String::from_utf8(txns[0].event_json(&objects, None, &in_pod)).unwrap();
    for part in [
        r#""auth_token_mask":"...6789""#,
        r#""user_agent":"ua \"quoted\" \\ back\tslash""#,
        r#""path":"/a/b?token=REDACTED&q=%22x%22""#,
        r#""pod_qos":"burstable""#,
        r#""host":"node-\u00012""#,
    ] {
        assert!(first.contains(part), "{part} in {first}");
    }
}
