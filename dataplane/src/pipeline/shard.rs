//! A shard: owns a set of connections (by conn-id hash), puts their records back
//! in order, follows each as HTTP and hands finished transactions to the output.
//!
//! Per record the shard does a hash-map lookup and feeds the parser; it allocates
//! only for what outlives the record (a new connection, a transaction's headers
//! and body, a record that arrived early and must wait), takes no lock and makes
//! no syscall. Counters are plain integers in [`ShardStats`].

use std::collections::{HashMap, VecDeque};

use tapwire_http::{Direction, h2, hpack, http1};

use super::input::{ConnInfo, Flow, Input, Role};
use super::reorder::{Offer, Reorder};
use super::txn::{ConnSummary, Message, Protocol, Transaction};

/// Connections one shard follows at most; past it new ones are not followed and
/// are counted. 64 Ki connections per shard is far above a busy node's load.
pub const MAX_CONNS_PER_SHARD: usize = 64 * 1024;

/// Requests waiting for responses on one HTTP/1 connection (pipelining depth).
const MAX_PENDING_TXNS: usize = 64;

/// What leaves a shard.
#[derive(Debug)]
pub enum Output {
    /// A finished (or abandoned) transaction.
    Txn(Box<Transaction>),
    /// A connection was opened.
    Opened(Box<ConnInfo>),
    /// A connection closed.
    Closed(Box<ConnSummary>),
}

/// Where a shard's output goes; a full sink refuses the item, which is counted.
pub trait Sink {
    /// Tries to hand over `item`; gives it back when full.
    fn try_send(&mut self, item: Output) -> Result<(), Output>;
}

impl Sink for rtrb::Producer<Output> {
    fn try_send(&mut self, item: Output) -> Result<(), Output> {
        self.push(item).map_err(|rtrb::PushError::Full(item)| item)
    }
}

impl Sink for Vec<Output> {
    fn try_send(&mut self, item: Output) -> Result<(), Output> {
        self.push(item);
        Ok(())
    }
}

/// A shard's counters; plain integers, published by the shard thread.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ShardStats {
    /// Records offered.
    pub records: u64,
    /// Payload bytes offered.
    pub bytes: u64,
    /// Frames that did not decode.
    pub undecodable: u64,
    /// Records that arrived after their place was given up.
    pub late: u64,
    /// Records declared lost (sequence gaps).
    pub gap_records: u64,
    /// Connections not followed because the table was full.
    pub conn_table_full: u64,
    /// Transactions finished.
    pub transactions: u64,
    /// Outputs dropped because the output queue was full.
    pub output_full: u64,
    /// HTTP parse errors (the connection is no longer parsed).
    pub parse_errors: u64,
    /// Connections that carried something other than HTTP.
    pub not_http: u64,
    /// Plain records dropped because the connection carries TLS.
    pub ciphertext_skipped: u64,
}

impl ShardStats {
    /// The sum of two shards' counters.
    pub fn sum(self, o: &ShardStats) -> ShardStats {
        ShardStats {
            records: self.records + o.records,
            bytes: self.bytes + o.bytes,
            undecodable: self.undecodable + o.undecodable,
            late: self.late + o.late,
            gap_records: self.gap_records + o.gap_records,
            conn_table_full: self.conn_table_full + o.conn_table_full,
            transactions: self.transactions + o.transactions,
            output_full: self.output_full + o.output_full,
            parse_errors: self.parse_errors + o.parse_errors,
            not_http: self.not_http + o.not_http,
            ciphertext_skipped: self.ciphertext_skipped + o.ciphertext_skipped,
        }
    }
}

/// Decodes one frame into an [`Input`].
pub type Decode = for<'a> fn(&'a [u8]) -> Option<Input<'a>>;

/// One shard's state.
pub struct Shard<S: Sink> {
    conns: HashMap<u64, Conn>,
    decode: Decode,
    sink: S,
    /// Counters.
    pub stats: ShardStats,
}

#[derive(Debug)]
enum Mode {
    /// No payload yet.
    Detect,
    /// HTTP/1.x.
    Http1(Box<http1::Connection>),
    /// HTTP/2: the decoders and the transactions of open streams.
    Http2(Box<H2>),
    /// Something this shard does not parse (or no longer can).
    Opaque,
}

#[derive(Debug, Default)]
struct H2 {
    conn: h2::Connection,
    streams: HashMap<u32, Transaction>,
}

/// Streams followed at once on one HTTP/2 connection; more are not recorded.
const MAX_H2_STREAMS: usize = 1024;

struct Conn {
    info: Option<ConnInfo>,
    reorder: Reorder,
    mode: Mode,
    /// Source being followed: `Some(true)` TLS plaintext, `Some(false)` plain.
    tls: Option<bool>,
    /// Direction the requests travel in (from the process's view).
    request_flow: Option<Flow>,
    pending: VecDeque<Transaction>,
    bytes_sent: u64,
    bytes_received: u64,
    /// A gap was seen and no transaction carries it yet.
    gap: bool,
}

impl Conn {
    /// The parser state and a follower for its events, borrowed apart so the
    /// parser's callback can update the connection's transactions.
    fn follow(&mut self, conn_id: u64, ts_ns: u64, tid: u32, tls: bool) -> (&mut Mode, Follow<'_>) {
        let follow = Follow {
            info: self.info.as_ref(),
            conn_id,
            pending: &mut self.pending,
            done: Vec::new(),
            ts_ns,
            tid,
            tls,
            egress: self.request_flow.unwrap_or(Flow::Egress) == Flow::Egress,
            gap: &mut self.gap,
        };
        (&mut self.mode, follow)
    }

    /// Stops parsing: open HTTP/2 streams join the pending transactions, which
    /// the caller flushes.
    fn stop_parsing(&mut self) {
        if let Mode::Http2(h2) = &mut self.mode {
            self.pending.extend(h2.streams.drain().map(|(_, t)| t));
        }
        self.mode = Mode::Opaque;
    }

    fn new() -> Self {
        Conn {
            info: None,
            reorder: Reorder::starting_at(0),
            mode: Mode::Detect,
            tls: None,
            request_flow: None,
            pending: VecDeque::new(),
            bytes_sent: 0,
            bytes_received: 0,
            gap: false,
        }
    }
}

impl<S: Sink> Shard<S> {
    /// A shard decoding frames with `decode` and sending output to `sink`.
    pub fn new(decode: Decode, sink: S) -> Self {
        Shard {
            conns: HashMap::new(),
            decode,
            sink,
            stats: ShardStats::default(),
        }
    }

    /// The output sink.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Connections followed.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Takes one frame (a raw record) at time `now_ns`.
    pub fn offer(&mut self, frame: &[u8], now_ns: u64) {
        self.stats.records += 1;
        let Some(input) = (self.decode)(frame) else {
            self.stats.undecodable += 1;
            return;
        };
        let Some((conn_id, seq)) = input.conn_seq() else {
            return;
        };
        if !self.conns.contains_key(&conn_id) {
            if self.conns.len() >= MAX_CONNS_PER_SHARD {
                self.stats.conn_table_full += 1;
                return;
            }
            self.conns.insert(conn_id, Conn::new());
        }
        let conn = self.conns.get_mut(&conn_id).expect("inserted above");
        match conn.reorder.offer(seq, frame, now_ns) {
            Offer::Deliver => self.process(conn_id, input),
            Offer::Held => {}
            Offer::Late => self.stats.late += 1,
        }
        self.drain_ready(conn_id, now_ns);
    }

    /// Delivers held records whose turn has come (or whose hole timed out).
    fn drain_ready(&mut self, conn_id: u64, now_ns: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(&conn_id) else {
                return;
            };
            let Some((_, bytes, skipped)) = conn.reorder.pop_ready(now_ns) else {
                return;
            };
            if skipped > 0 {
                self.stats.gap_records += skipped;
                conn.gap = true;
                for txn in &mut conn.pending {
                    txn.gap = true;
                }
                // The byte stream has a hole of unknown length: HTTP framing cannot
                // be trusted past it.
                if matches!(conn.mode, Mode::Http1(_) | Mode::Http2(_)) {
                    conn.stop_parsing();
                    self.flush_pending(conn_id);
                }
            }
            match (self.decode)(&bytes) {
                Some(input) => self.process(conn_id, input),
                None => self.stats.undecodable += 1,
            }
        }
    }

    /// Gives up on holes older than the reorder timeout, on every connection.
    pub fn tick(&mut self, now_ns: u64) {
        let waiting: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.reorder.held() > 0)
            .map(|(&id, _)| id)
            .collect();
        for conn_id in waiting {
            self.drain_ready(conn_id, now_ns);
        }
    }

    fn process(&mut self, conn_id: u64, input: Input<'_>) {
        match input {
            Input::Open(info) => {
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    conn.info = Some(info.clone());
                    self.emit(Output::Opened(Box::new(info)));
                }
            }
            Input::Data {
                ts_ns,
                tid,
                flow,
                tls,
                payload,
                ..
            } => {
                self.stats.bytes += payload.len() as u64;
                self.data(conn_id, ts_ns, tid, flow, tls, payload);
            }
            Input::Close { ts_ns, .. } => self.close(conn_id, ts_ns),
            Input::Other => {}
        }
    }

    fn data(&mut self, conn_id: u64, ts_ns: u64, tid: u32, flow: Flow, tls: bool, payload: &[u8]) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        match conn.tls {
            Some(true) if !tls => {
                self.stats.ciphertext_skipped += 1;
                return;
            }
            Some(false) if tls => {
                // TLS plaintext for a connection first seen as plain: the plain bytes
                // were ciphertext. Follow the plaintext from here.
                conn.mode = Mode::Detect;
                conn.request_flow = None;
                conn.pending.clear();
                conn.bytes_sent = 0;
                conn.bytes_received = 0;
            }
            _ => {}
        }
        conn.tls = Some(tls);
        match flow {
            Flow::Egress => conn.bytes_sent += payload.len() as u64,
            Flow::Ingress => conn.bytes_received += payload.len() as u64,
        }
        if matches!(conn.mode, Mode::Detect) {
            conn.mode = detect(conn, flow, payload);
            if matches!(conn.mode, Mode::Opaque) {
                self.stats.not_http += 1;
            }
        }
        let direction = if flow == conn.request_flow.unwrap_or(Flow::Egress) {
            Direction::Request
        } else {
            Direction::Response
        };
        let (mode, mut follow) = conn.follow(conn_id, ts_ns, tid, tls);
        let failed = match mode {
            Mode::Http1(parser) => parser
                .feed(direction, payload, &mut |d, ev| follow.event(d, ev))
                .is_err(),
            Mode::Http2(h2) => {
                let streams = &mut h2.streams;
                h2.conn
                    .feed(direction, payload, &mut |d, ev| {
                        follow.h2_event(streams, d, ev)
                    })
                    .is_err()
            }
            Mode::Detect | Mode::Opaque => return,
        };
        let done = std::mem::take(&mut follow.done);
        if failed {
            self.stats.parse_errors += 1;
            conn.stop_parsing();
        }
        for txn in done {
            self.emit(Output::Txn(Box::new(txn)));
        }
        if failed {
            self.flush_pending(conn_id);
        }
    }

    fn close(&mut self, conn_id: u64, ts_ns: u64) {
        let Some(mut conn) = self.conns.remove(&conn_id) else {
            return;
        };
        let tls = conn.tls.unwrap_or(false);
        if let (Mode::Http1(parser), mut follow) = conn.follow(conn_id, ts_ns, 0, tls) {
            let _ = parser.eof(Direction::Response, &mut |d, ev| follow.event(d, ev));
            for txn in follow.done {
                self.emit(Output::Txn(Box::new(txn)));
            }
        }
        conn.stop_parsing();
        for mut txn in conn.pending.drain(..) {
            txn.truncated |= !txn.response.complete;
            self.emit(Output::Txn(Box::new(txn)));
        }
        if let Some(info) = conn.info {
            let summary = ConnSummary {
                conn: info,
                tls: conn.tls.unwrap_or(false),
                bytes_sent: conn.bytes_sent,
                bytes_received: conn.bytes_received,
                close_ns: ts_ns,
            };
            self.emit(Output::Closed(Box::new(summary)));
        }
    }

    /// Sends every pending transaction of a connection that can no longer be
    /// parsed, marked as truncated.
    fn flush_pending(&mut self, conn_id: u64) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let pending: Vec<Transaction> = conn.pending.drain(..).collect();
        for mut txn in pending {
            txn.truncated = true;
            self.emit(Output::Txn(Box::new(txn)));
        }
    }

    fn emit(&mut self, item: Output) {
        if matches!(item, Output::Txn(_)) {
            self.stats.transactions += 1;
        }
        if self.sink.try_send(item).is_err() {
            self.stats.output_full += 1;
        }
    }
}

/// Decides what a connection carries from its first payload.
fn detect(conn: &mut Conn, flow: Flow, payload: &[u8]) -> Mode {
    let request_flow = match (conn.info.as_ref().map(|i| i.role), flow) {
        (Some(Role::Client), _) => Flow::Egress,
        (Some(Role::Server), _) => Flow::Ingress,
        (_, flow) if payload.starts_with(b"HTTP/") => opposite(flow),
        (_, flow) => flow,
    };
    conn.request_flow = Some(request_flow);
    let preface_len = payload.len().min(h2::PREFACE.len());
    if flow == request_flow && payload[..preface_len] == h2::PREFACE[..preface_len] {
        return Mode::Http2(Box::default());
    }
    let looks_http1 = if flow == request_flow {
        starts_with_method(payload)
    } else {
        payload.starts_with(b"HTTP/1.")
    };
    if looks_http1 {
        Mode::Http1(Box::default())
    } else {
        Mode::Opaque
    }
}

fn opposite(flow: Flow) -> Flow {
    match flow {
        Flow::Egress => Flow::Ingress,
        Flow::Ingress => Flow::Egress,
    }
}

/// `TOKEN SP`, where TOKEN is 1–16 uppercase letters (every registered method;
/// `PRI` is the HTTP/2 preface and is left to its own detection).
fn starts_with_method(payload: &[u8]) -> bool {
    let token = payload
        .iter()
        .take(17)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    (1..=16).contains(&token) && payload.get(token) == Some(&b' ') && !payload.starts_with(b"PRI ")
}

/// The state an HTTP/1 event callback updates.
struct Follow<'c> {
    info: Option<&'c ConnInfo>,
    conn_id: u64,
    pending: &'c mut VecDeque<Transaction>,
    done: Vec<Transaction>,
    ts_ns: u64,
    tid: u32,
    tls: bool,
    egress: bool,
    gap: &'c mut bool,
}

impl Follow<'_> {
    fn new_txn(&mut self) -> Transaction {
        let conn = self
            .info
            .cloned()
            .unwrap_or_else(|| unknown_conn(self.conn_id));
        Transaction {
            conn,
            tid: self.tid,
            stream_id: None,
            egress: self.egress,
            protocol: Protocol::Http1,
            tls: self.tls,
            method: String::new(),
            authority: None,
            path: String::new(),
            status: None,
            grpc_status: None,
            request: Message::default(),
            response: Message::default(),
            start_ns: self.ts_ns,
            end_ns: self.ts_ns,
            truncated: false,
            gap: std::mem::take(self.gap),
            incomplete_headers: false,
        }
    }

    /// The transaction whose response is being received: the oldest one.
    fn responding(&mut self) -> Option<&mut Transaction> {
        self.pending.front_mut()
    }

    fn h2_event(
        &mut self,
        streams: &mut HashMap<u32, Transaction>,
        direction: Direction,
        event: h2::Event<'_>,
    ) {
        let ts = self.ts_ns;
        match event {
            h2::Event::Headers(block) => {
                let id = block.stream_id;
                if !streams.contains_key(&id) {
                    if streams.len() >= MAX_H2_STREAMS {
                        return;
                    }
                    let mut txn = self.new_txn();
                    txn.protocol = Protocol::Http2;
                    txn.stream_id = Some(id);
                    // A response on a stream whose request was not seen.
                    txn.truncated = direction == Direction::Response;
                    streams.insert(id, txn);
                }
                let Some(txn) = streams.get_mut(&id) else {
                    return;
                };
                txn.incomplete_headers |= block.state != hpack::BlockState::Complete;
                let text = |name: &str| {
                    block
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                if block.is_trailers() {
                    let msg = match direction {
                        Direction::Request => &mut txn.request,
                        Direction::Response => &mut txn.response,
                    };
                    msg.headers.extend(owned_headers(block.headers));
                    if direction == Direction::Response {
                        txn.grpc_status = block.grpc_status();
                    }
                } else if direction == Direction::Request {
                    txn.method = text(":method").unwrap_or_default();
                    txn.path = text(":path").unwrap_or_default();
                    txn.authority = text(":authority");
                    txn.start_ns = ts;
                    txn.request.headers = owned_headers(block.headers);
                    txn.request.head = h2_head_bytes(block.headers);
                    txn.request.head_bytes = block.headers.byte_len() as u64;
                } else {
                    let status = block.status();
                    if status.is_some_and(|s| (100..200).contains(&s)) {
                        return;
                    }
                    txn.status = status;
                    txn.grpc_status = block.grpc_status();
                    txn.response.headers = owned_headers(block.headers);
                    txn.response.head = h2_head_bytes(block.headers);
                    txn.response.head_bytes = block.headers.byte_len() as u64;
                }
                if block.is_grpc() {
                    txn.protocol = Protocol::Grpc;
                }
                txn.end_ns = ts;
                if block.end_stream {
                    self.end_stream(streams, id, direction);
                }
            }
            h2::Event::Data {
                stream_id,
                data,
                end_stream,
            } => {
                if let Some(txn) = streams.get_mut(&stream_id) {
                    let msg = match direction {
                        Direction::Request => &mut txn.request,
                        Direction::Response => &mut txn.response,
                    };
                    txn.truncated |= !msg.push_body(data);
                    txn.end_ns = ts;
                }
                if end_stream {
                    self.end_stream(streams, stream_id, direction);
                }
            }
            h2::Event::Reset { stream_id, .. } => {
                if let Some(mut txn) = streams.remove(&stream_id) {
                    txn.truncated = true;
                    txn.end_ns = ts;
                    self.done.push(txn);
                }
            }
            h2::Event::PushPromise { .. }
            | h2::Event::Settings { .. }
            | h2::Event::GoAway { .. } => {}
        }
    }

    /// One side of a stream ended; the response ending finishes the transaction.
    fn end_stream(
        &mut self,
        streams: &mut HashMap<u32, Transaction>,
        id: u32,
        direction: Direction,
    ) {
        match direction {
            Direction::Request => {
                if let Some(txn) = streams.get_mut(&id) {
                    txn.request.complete = true;
                }
            }
            Direction::Response => {
                if let Some(mut txn) = streams.remove(&id) {
                    txn.response.complete = true;
                    self.done.push(txn);
                }
            }
        }
    }

    fn event(&mut self, direction: Direction, event: http1::Event<'_>) {
        use http1::Event;
        match (direction, event) {
            (Direction::Request, Event::Request(head)) => {
                let mut txn = self.new_txn();
                txn.method = head.method.to_owned();
                txn.path = String::from_utf8_lossy(head.target).into_owned();
                txn.request.headers = owned_headers(head.headers);
                txn.authority = txn.request.header("host").map(str::to_owned);
                txn.request.head_bytes = head.head_len as u64;
                txn.request.head = request_head_bytes(&head);
                if self.pending.len() >= MAX_PENDING_TXNS {
                    // A peer that never answers: give up on the oldest request.
                    if let Some(mut old) = self.pending.pop_front() {
                        old.truncated = true;
                        self.done.push(old);
                    }
                }
                self.pending.push_back(txn);
            }
            (Direction::Request, Event::Body(chunk)) => {
                if let Some(txn) = self.pending.back_mut() {
                    txn.truncated |= !txn.request.push_body(chunk);
                }
            }
            (Direction::Request, Event::End { trailers }) => {
                if let Some(txn) = self.pending.back_mut() {
                    txn.request.headers.extend(owned_headers(trailers));
                    txn.request.complete = true;
                }
            }
            (Direction::Response, Event::Response(head)) => {
                if self.pending.is_empty() {
                    // A response to a request sent before capture began.
                    let mut txn = self.new_txn();
                    txn.request.complete = true;
                    txn.truncated = true;
                    self.pending.push_back(txn);
                }
                let ts = self.ts_ns;
                let Some(txn) = self.responding() else { return };
                txn.status = Some(head.status);
                txn.response.headers = owned_headers(head.headers);
                txn.response.head_bytes = head.head_len as u64;
                txn.response.head = response_head_bytes(&head);
                txn.end_ns = ts;
            }
            (Direction::Response, Event::Body(chunk)) => {
                let ts = self.ts_ns;
                if let Some(txn) = self.responding() {
                    txn.truncated |= !txn.response.push_body(chunk);
                    txn.end_ns = ts;
                }
            }
            (Direction::Response, Event::End { trailers }) => {
                let ts = self.ts_ns;
                if let Some(mut txn) = self.pending.pop_front() {
                    txn.response.headers.extend(owned_headers(trailers));
                    txn.response.complete = true;
                    txn.end_ns = ts;
                    self.done.push(txn);
                }
            }
            // Interim responses, upgrades and tunnelled bytes add nothing to the
            // transaction record.
            _ => {}
        }
    }
}

fn unknown_conn(conn_id: u64) -> ConnInfo {
    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    ConnInfo {
        conn_id,
        pid: 0,
        tid: 0,
        comm: String::new(),
        cgroup_id: 0,
        local: unspecified,
        remote: unspecified,
        role: Role::Unknown,
        ts_ns: 0,
    }
}

fn owned_headers(headers: tapwire_http::Headers<'_>) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn version_str(v: http1::Version) -> &'static str {
    match v {
        http1::Version::Http10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The request head as an object: start line and fields, CRLF-separated.
fn request_head_bytes(head: &http1::RequestHead<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.head_len);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target);
    out.push(b' ');
    out.extend_from_slice(version_str(head.version).as_bytes());
    out.extend_from_slice(b"\r\n");
    push_fields(&mut out, head.headers);
    out
}

/// The response head as an object.
fn response_head_bytes(head: &http1::ResponseHead<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.head_len);
    out.extend_from_slice(version_str(head.version).as_bytes());
    out.extend_from_slice(format!(" {} ", head.status).as_bytes());
    out.extend_from_slice(head.reason);
    out.extend_from_slice(b"\r\n");
    push_fields(&mut out, head.headers);
    out
}

/// An HTTP/2 header block as an object: `name: value` lines, pseudo-headers
/// first as sent, then an empty line.
fn h2_head_bytes(headers: tapwire_http::Headers<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.byte_len() + 4 * headers.len() + 2);
    push_fields(&mut out, headers);
    out
}

fn push_fields(out: &mut Vec<u8>, headers: tapwire_http::Headers<'_>) {
    for (name, value) in headers.iter() {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
