//! A shard: owns a set of connections (by conn-id hash), puts their records back
//! in order, follows each as HTTP and hands finished transactions to the output.
//!
//! Per record the shard does a hash-map lookup and feeds the parser; it allocates
//! only for what outlives the record (a new connection, a transaction's headers
//! and body, a record that arrived early and must wait), takes no lock and makes
//! no syscall. Counters are plain integers in [`ShardStats`].

use std::collections::{HashMap, VecDeque};

use tapwire_http::http1;

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
    /// Something this shard does not parse (or no longer can).
    Opaque,
}

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
                if matches!(conn.mode, Mode::Http1(_)) {
                    conn.mode = Mode::Opaque;
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
                    conn.info = Some(info);
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
        let Mode::Http1(parser) = &mut conn.mode else {
            return;
        };
        let request_flow = conn.request_flow.unwrap_or(Flow::Egress);
        let direction = if flow == request_flow {
            http1::Direction::Request
        } else {
            http1::Direction::Response
        };
        let mut follow = Follow {
            info: conn.info.as_ref(),
            conn_id,
            pending: &mut conn.pending,
            done: Vec::new(),
            ts_ns,
            tid,
            tls,
            egress: request_flow == Flow::Egress,
            gap: &mut conn.gap,
        };
        let result = parser.feed(direction, payload, &mut |d, ev| follow.event(d, ev));
        let done = std::mem::take(&mut follow.done);
        if result.is_err() {
            self.stats.parse_errors += 1;
            conn.mode = Mode::Opaque;
        }
        for txn in done {
            self.emit(Output::Txn(Box::new(txn)));
        }
        if result.is_err() {
            self.flush_pending(conn_id);
        }
    }

    fn close(&mut self, conn_id: u64, ts_ns: u64) {
        let Some(mut conn) = self.conns.remove(&conn_id) else {
            return;
        };
        if let Mode::Http1(parser) = &mut conn.mode {
            let request_flow = conn.request_flow.unwrap_or(Flow::Egress);
            let mut follow = Follow {
                info: conn.info.as_ref(),
                conn_id,
                pending: &mut conn.pending,
                done: Vec::new(),
                ts_ns,
                tid: 0,
                tls: conn.tls.unwrap_or(false),
                egress: request_flow == Flow::Egress,
                gap: &mut conn.gap,
            };
            let _ = parser.eof(http1::Direction::Response, &mut |d, ev| follow.event(d, ev));
            let done = std::mem::take(&mut follow.done);
            for txn in done {
                self.emit(Output::Txn(Box::new(txn)));
            }
        }
        for mut txn in conn.pending.drain(..) {
            txn.truncated |= !txn.response.complete;
            self.stats.transactions += 1;
            let item = Output::Txn(Box::new(txn));
            if self.sink.try_send(item).is_err() {
                self.stats.output_full += 1;
            }
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

    fn event(&mut self, direction: http1::Direction, event: http1::Event<'_>) {
        use http1::Event;
        match (direction, event) {
            (http1::Direction::Request, Event::Request(head)) => {
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
            (http1::Direction::Request, Event::Body(chunk)) => {
                if let Some(txn) = self.pending.back_mut() {
                    txn.truncated |= !txn.request.push_body(chunk);
                }
            }
            (http1::Direction::Request, Event::End { trailers }) => {
                if let Some(txn) = self.pending.back_mut() {
                    txn.request.headers.extend(owned_headers(trailers));
                    txn.request.complete = true;
                }
            }
            (http1::Direction::Response, Event::Response(head)) => {
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
            (http1::Direction::Response, Event::Body(chunk)) => {
                let ts = self.ts_ns;
                if let Some(txn) = self.responding() {
                    txn.truncated |= !txn.response.push_body(chunk);
                    txn.end_ns = ts;
                }
            }
            (http1::Direction::Response, Event::End { trailers }) => {
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

fn push_fields(out: &mut Vec<u8>, headers: tapwire_http::Headers<'_>) {
    for (name, value) in headers.iter() {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
