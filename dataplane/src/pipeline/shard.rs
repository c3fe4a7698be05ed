//! A shard: owns a set of connections (by conn-id hash), puts their records back
//! in order, follows each as HTTP and hands finished transactions to the output.
//!
//! Per record the shard does a hash-map lookup and feeds the parser; it allocates
//! only for what outlives the record (a new connection, a transaction's headers
//! and body, a record that arrived early and must wait), takes no lock and makes
//! no syscall. Counters are plain integers in [`ShardStats`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A shard's maps, for keys looked up several times per record (connection
/// ids, pids, HTTP/2 stream ids that a peer chooses): foldhash, seeded per
/// process, so a peer cannot aim its stream ids at one bucket; SipHash was 1%
/// of a shard's time.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use compact_str::CompactString;
use tapwire_http::{Direction, h2, hpack, http1, tls_hello};

use super::budget::Budget;
use super::event_fields::{push_bytes, push_uint};
use super::input::{ConnInfo, Flow, Input, Role};
use super::reorder::{GaveUp, Offer, Reorder};
use super::txn::{ConnSummary, HeaderFields, Message, NotKept, Protocol, Transaction};

/// Connections one shard follows at most; past it new ones are not followed and
/// are counted. 64 Ki connections per shard is far above a busy node's load.
pub const MAX_CONNS_PER_SHARD: usize = 64 * 1024;

/// How long a silent connection keeps its buffered transactions by default.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How long a connection of an exited process is kept before it is released:
/// records of it may still sit in another CPU's ring (the reorder timeout).
const EXIT_GRACE_NS: u64 = super::reorder::REORDER_TIMEOUT_NS;

/// Longest an exited process's connections wait for every reader to pass
/// the exit (a reader thread that stopped must not keep them for ever).
const EXIT_WAIT_MAX_NS: u64 = 10_000_000_000;

/// A connection of an exited process, waiting to be released.
#[derive(Debug, Clone, Copy)]
struct Exiting {
    /// When to release it, on the shard's clock (the exit grace).
    release_at: u64,
    conn_id: u64,
    /// When the exit was seen, on the monotonic clock: compared with the
    /// time before which every reader has routed its ring's records.
    seen_mono_ns: u64,
}

/// How long an exited process is remembered, for connections whose records
/// arrive after its exit record (a reader that lags behind another).
const EXITED_MEMORY_NS: u64 = 4 * EXIT_GRACE_NS;

/// How often connections are checked for idleness.
const IDLE_SCAN_NS: u64 = 1_000_000_000;

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

/// Where a shard's output goes. Sending never fails: the shard's own thread
/// turns the output into objects and events (see `output.rs`), whose stores
/// queue and count on their own.
pub trait Sink {
    /// Hands over `item`.
    fn send(&mut self, item: Output);

    /// What of a message anything downstream reads. What nothing reads is
    /// not copied: bodies are counted, header blocks not re-serialized.
    fn keeps(&self) -> Keeps {
        Keeps::ALL
    }
}

/// What of a message a [`Sink`] reads, beside the fields its events name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keeps {
    /// The header block as an object (an object store takes header blocks).
    pub heads: bool,
    /// Body bytes (an object store takes bodies, an access log writes them).
    pub bodies: bool,
}

impl Keeps {
    /// Heads and bodies.
    pub const ALL: Keeps = Keeps {
        heads: true,
        bodies: true,
    };
}

impl Sink for Vec<Output> {
    fn send(&mut self, item: Output) {
        self.push(item);
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
    /// Payload bytes of those records.
    pub late_bytes: u64,
    /// Records declared lost (sequence gaps).
    pub gap_records: u64,
    /// Of those, records given up because the memory budget refused a record
    /// to hold. (Those counted in neither this nor the next outlived the
    /// reorder timeout.)
    pub gap_records_over_budget: u64,
    /// Of those, records given up because a connection's window passed its
    /// limits.
    pub gap_records_window_full: u64,
    /// Connections not followed because the table was full.
    pub conn_table_full: u64,
    /// Transactions finished.
    pub transactions: u64,
    /// Body bytes not kept because the memory budget was spent (their
    /// transactions are marked `truncated`).
    pub body_shed_bytes: u64,
    /// Kept body bytes dropped to give their room to a record held in a
    /// reorder window (its transactions are marked `truncated`).
    pub body_dropped_to_hold_bytes: u64,
    /// Body bytes not kept because a message passed the per-message limit.
    pub body_over_limit_bytes: u64,
    /// Transactions of connections still open when the agent stopped, emitted
    /// marked `truncated`.
    pub open_at_stop: u64,
    /// Connections released because their process exited without closing them.
    pub released_on_exit: u64,
    /// Events let out before their objects were kept or refused: the shard
    /// held as many as it may while the kernel's rings were nearly full
    /// (`tapwire_store::room::Pressure`). Their unsettled objects are named
    /// `kept: false`, though a store may still keep them.
    pub events_let_out_early: u64,
    /// Transactions emitted (marked `truncated`) because their connection was
    /// silent for the idle timeout.
    pub idle_flushed: u64,
    /// HTTP/2 streams not followed because a connection had too many open.
    pub h2_streams_over_limit: u64,
    /// Connections followed now (a gauge, as of the last tick).
    pub connections: u64,
    /// HTTP parse errors (the connection is no longer parsed).
    pub parse_errors: u64,
    /// Connections that carried something other than HTTP.
    pub not_http: u64,
    /// Plain records dropped because the connection carries TLS.
    pub ciphertext_skipped: u64,
    /// Data records that came with bytes the probes did not copy (graceful
    /// overload: a ring past its high-water mark).
    pub overload_records: u64,
    /// Bytes not copied that fell inside a body whose length the framing
    /// gives (Content-Length, a chunk, an HTTP/2 DATA frame): skipped, the
    /// connection parsed on, the transaction marked `truncated`.
    pub overload_body_bytes: u64,
    /// Bytes not copied where the framing could not place them (they held a
    /// head, a chunk size or a frame header): parsing joined again at the
    /// next message or frame, the open transactions marked `truncated` and
    /// `gap`.
    pub overload_resync_bytes: u64,
    /// Bytes not copied on a connection or in a stretch that was not being
    /// parsed (not HTTP, ciphertext, tunnelled, already looking for the next
    /// message).
    pub overload_unparsed_bytes: u64,
    /// Bytes not copied of records that came after their place was given up.
    pub overload_late_bytes: u64,
    /// Copied body bytes not kept because an earlier part of the same body
    /// was not copied (a body with a hole is of no use).
    pub body_after_hole_bytes: u64,
    /// TLS ClientHello records the probes copied from the socket (a
    /// connection's first record; two for a server that read its header
    /// alone first).
    pub tls_hello_records: u64,
    /// Bytes of those records: all that is copied of a TLS connection's
    /// socket bytes.
    pub tls_hello_bytes: u64,
    /// Connections whose server name (SNI) was read from their ClientHello.
    pub tls_server_names: u64,
    /// ClientHellos without a readable server name (none sent, cut before
    /// it, or malformed).
    pub tls_hello_unnamed: u64,
}

impl ShardStats {
    /// The sum of two shards' counters.
    pub fn sum(self, o: &ShardStats) -> ShardStats {
        ShardStats {
            records: self.records + o.records,
            bytes: self.bytes + o.bytes,
            undecodable: self.undecodable + o.undecodable,
            late: self.late + o.late,
            late_bytes: self.late_bytes + o.late_bytes,
            gap_records: self.gap_records + o.gap_records,
            gap_records_over_budget: self.gap_records_over_budget + o.gap_records_over_budget,
            gap_records_window_full: self.gap_records_window_full + o.gap_records_window_full,
            conn_table_full: self.conn_table_full + o.conn_table_full,
            transactions: self.transactions + o.transactions,
            body_shed_bytes: self.body_shed_bytes + o.body_shed_bytes,
            body_dropped_to_hold_bytes: self.body_dropped_to_hold_bytes
                + o.body_dropped_to_hold_bytes,
            body_over_limit_bytes: self.body_over_limit_bytes + o.body_over_limit_bytes,
            open_at_stop: self.open_at_stop + o.open_at_stop,
            released_on_exit: self.released_on_exit + o.released_on_exit,
            events_let_out_early: self.events_let_out_early + o.events_let_out_early,
            idle_flushed: self.idle_flushed + o.idle_flushed,
            h2_streams_over_limit: self.h2_streams_over_limit + o.h2_streams_over_limit,
            connections: self.connections + o.connections,
            parse_errors: self.parse_errors + o.parse_errors,
            not_http: self.not_http + o.not_http,
            ciphertext_skipped: self.ciphertext_skipped + o.ciphertext_skipped,
            overload_records: self.overload_records + o.overload_records,
            overload_body_bytes: self.overload_body_bytes + o.overload_body_bytes,
            overload_resync_bytes: self.overload_resync_bytes + o.overload_resync_bytes,
            overload_unparsed_bytes: self.overload_unparsed_bytes + o.overload_unparsed_bytes,
            overload_late_bytes: self.overload_late_bytes + o.overload_late_bytes,
            body_after_hole_bytes: self.body_after_hole_bytes + o.body_after_hole_bytes,
            tls_hello_records: self.tls_hello_records + o.tls_hello_records,
            tls_hello_bytes: self.tls_hello_bytes + o.tls_hello_bytes,
            tls_server_names: self.tls_server_names + o.tls_server_names,
            tls_hello_unnamed: self.tls_hello_unnamed + o.tls_hello_unnamed,
        }
    }
}

/// Decodes one frame into an [`Input`].
pub type Decode = for<'a> fn(&'a [u8]) -> Option<Input<'a>>;

/// One shard's state.
pub struct Shard<S: Sink> {
    conns: Map<u64, Conn>,
    decode: Decode,
    sink: S,
    /// Bodies and held records are charged here.
    budget: Arc<Budget>,
    /// Connections by owning process, for releasing them when it exits.
    by_pid: Map<u32, Vec<u64>>,
    /// Connections of exited processes, in the order they are to go.
    exiting: VecDeque<Exiting>,
    /// Monotonic time of this round, and the time before which every reader
    /// has routed its ring's records ([`Shard::set_clocks`]).
    mono_ns: u64,
    readers_drained_ns: u64,
    /// Processes that exited lately, with when to forget them: an exit record
    /// can overtake a connection's first records (they travel in different
    /// CPUs' rings), so a connection that shows up for such a process is
    /// released all the same, a grace period after it showed up.
    exited: Map<u32, u64>,
    exited_order: VecDeque<(u64, u32)>,
    idle_timeout_ns: u64,
    last_idle_scan_ns: u64,
    /// A record's finished transactions, gathered while it is parsed; the
    /// list is kept between records so that gathering them allocates nothing.
    done: Vec<Transaction>,
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
    streams: Map<u32, Transaction>,
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
    /// The process that owns it (from its first record).
    pid: u32,
    /// When its last record arrived (shard clock).
    last_ns: u64,
    /// Payload bytes passed over while joining mid-stream.
    join_search: u64,
    /// Bytes before any the connection was judged by never came (a hole
    /// given up, or bytes the probes did not copy): its first bytes seen
    /// may start anywhere, as on a connection joined mid-way.
    lost_start: bool,
    /// The server name of its TLS ClientHello.
    sni: Option<Arc<str>>,
}

impl Conn {
    /// The parser state and a follower for its events, borrowed apart so the
    /// parser's callback can update the connection's transactions.
    #[allow(clippy::too_many_arguments)]
    fn follow<'c>(
        &'c mut self,
        bodies: Bodies<'c>,
        heads: bool,
        conn_id: u64,
        ts_ns: u64,
        tid: u32,
        tls: bool,
        done: &'c mut Vec<Transaction>,
    ) -> (&'c mut Mode, Follow<'c>) {
        let follow = Follow {
            bodies,
            heads,
            not_kept: NotKept::default(),
            streams_over_limit: 0,
            info: self.info.as_ref(),
            sni: self.sni.as_ref(),
            conn_id,
            pending: &mut self.pending,
            done,
            ts_ns,
            tid,
            tls,
            egress: self.request_flow.unwrap_or(Flow::Egress) == Flow::Egress,
            gap: &mut self.gap,
        };
        (&mut self.mode, follow)
    }

    /// After a hole in the stream: open HTTP/2 streams join the pending
    /// transactions (which the caller flushes) and the parser starts again
    /// mid-stream, looking for the next message or frame boundary.
    fn rejoin(&mut self) {
        let mode = match &self.mode {
            Mode::Http1(_) => Mode::Http1(Box::new(http1::Connection::new_mid_stream())),
            Mode::Http2(_) => Mode::Http2(Box::new(H2 {
                conn: h2::Connection::new_mid_stream(),
                streams: Map::default(),
            })),
            _ => return,
        };
        self.stop_parsing();
        self.mode = mode;
    }

    /// Whether the first bytes the connection is judged by may start
    /// anywhere: it was first seen mid-way (opened before capture started,
    /// or its open record never came), or bytes before them were lost.
    fn joined_mid_stream(&self) -> bool {
        self.lost_start || self.info.as_ref().is_none_or(|i| i.role == Role::Unknown)
    }

    /// Stops parsing: open HTTP/2 streams join the pending transactions, which
    /// the caller flushes.
    fn stop_parsing(&mut self) {
        if let Mode::Http2(h2) = &mut self.mode {
            self.pending.extend(h2.streams.drain().map(|(_, t)| t));
        }
        self.mode = Mode::Opaque;
    }

    /// Bytes of the stream were lost (a hole given up, bytes the probes did
    /// not copy): if its protocol was not known yet, it is detected as on a
    /// connection joined mid-way.
    fn lose_bytes_before_detection(&mut self) {
        if matches!(self.mode, Mode::Detect) {
            self.lost_start = true;
        }
    }

    /// Its transactions still open: requests waiting, HTTP/2 streams.
    fn open_transactions(&mut self) -> impl Iterator<Item = &mut Transaction> {
        let streams = match &mut self.mode {
            Mode::Http2(h2) => Some(h2.streams.values_mut()),
            _ => None,
        };
        self.pending.iter_mut().chain(streams.into_iter().flatten())
    }

    /// Whether transactions are buffered (requests waiting, streams open).
    fn holds_transactions(&self) -> bool {
        !self.pending.is_empty() || matches!(&self.mode, Mode::Http2(h2) if !h2.streams.is_empty())
    }

    fn new(pid: u32) -> Self {
        Conn {
            pid,
            last_ns: 0,
            join_search: 0,
            lost_start: false,
            sni: None,
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
    /// A shard decoding frames with `decode` and sending output to `sink`, with
    /// no memory limit (tests and tools).
    pub fn new(decode: Decode, sink: S) -> Self {
        Self::with_budget(decode, sink, Budget::unlimited())
    }

    /// A shard charging what it buffers to `budget`.
    pub fn with_budget(decode: Decode, sink: S, budget: Arc<Budget>) -> Self {
        Shard {
            conns: Map::default(),
            decode,
            sink,
            budget,
            by_pid: Map::default(),
            exiting: VecDeque::new(),
            mono_ns: 0,
            readers_drained_ns: u64::MAX,
            exited: Map::default(),
            exited_order: VecDeque::new(),
            idle_timeout_ns: DEFAULT_IDLE_TIMEOUT.as_nanos() as u64,
            last_idle_scan_ns: 0,
            done: Vec::new(),
            stats: ShardStats::default(),
        }
    }

    /// This round's monotonic time, and the time before which every record
    /// the readers wrote has been taken by this shard: an exited process's
    /// connections are released only once that is past the exit (and the
    /// grace has passed), or [`EXIT_WAIT_MAX_NS`] after it whatever the
    /// readers say. Without a pipeline (tests) every record counts as taken.
    pub fn set_clocks(&mut self, mono_ns: u64, readers_drained_ns: u64) {
        self.mono_ns = mono_ns;
        self.readers_drained_ns = readers_drained_ns;
    }

    /// How long a silent connection keeps its buffered transactions.
    pub fn set_idle_timeout(&mut self, timeout: std::time::Duration) {
        self.idle_timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
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
        if let Input::Exit { pid } = input {
            self.process_exited(pid, now_ns);
            return;
        }
        let Some((conn_id, seq)) = input.conn_seq() else {
            return;
        };
        if !self.conns.contains_key(&conn_id) {
            if self.conns.len() >= MAX_CONNS_PER_SHARD {
                self.stats.conn_table_full += 1;
                return;
            }
            let pid = input.pid().unwrap_or(0);
            self.conns.insert(conn_id, Conn::new(pid));
            if self.exited.contains_key(&pid) {
                self.exiting.push_back(Exiting {
                    release_at: now_ns.saturating_add(EXIT_GRACE_NS),
                    conn_id,
                    seen_mono_ns: self.mono_ns,
                });
            } else {
                self.by_pid.entry(pid).or_default().push(conn_id);
            }
        }
        let conn = self.conns.get_mut(&conn_id).expect("inserted above");
        conn.last_ns = now_ns;
        let short = if conn.reorder.would_hold(seq) {
            self.budget.short_to_hold(frame.len())
        } else {
            0
        };
        let conn = if short > 0 {
            self.make_room_to_hold(short);
            self.conns.get_mut(&conn_id).expect("inserted above")
        } else {
            conn
        };
        match conn.reorder.offer(seq, frame, now_ns, &self.budget) {
            Offer::Deliver => self.process(conn_id, input),
            Offer::Held => {}
            Offer::Late => {
                self.stats.late += 1;
                if let Input::Data { payload, shed, .. } = input {
                    self.stats.late_bytes += payload.len() as u64;
                    if shed > 0 {
                        self.stats.overload_records += 1;
                        self.stats.overload_late_bytes += shed;
                    }
                }
            }
        }
        self.drain_ready(conn_id, now_ns);
    }

    /// Drops kept bodies of this shard's open transactions to free `short`
    /// bytes of the budget for a record to hold: a held record may carry a
    /// head, and bodies go before metadata. When they do not hold that much
    /// (the budget is spent elsewhere), none is dropped and the record's hole
    /// is given up (`gap_records_over_budget`).
    #[cold]
    fn make_room_to_hold(&mut self, short: usize) {
        let kept: usize = (self.conns.values_mut())
            .flat_map(Conn::open_transactions)
            .map(|txn| txn.kept_body_room())
            .sum();
        if kept < short {
            return;
        }
        let mut freed = 0;
        for txn in self.conns.values_mut().flat_map(Conn::open_transactions) {
            freed += txn.kept_body_room();
            self.stats.body_dropped_to_hold_bytes += txn.drop_kept_bodies();
            if freed >= short {
                return;
            }
        }
    }

    /// Delivers held records whose turn has come (or whose hole timed out).
    fn drain_ready(&mut self, conn_id: u64, now_ns: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(&conn_id) else {
                return;
            };
            let Some((_, bytes, skipped, gave_up)) = conn.reorder.pop_ready(now_ns) else {
                return;
            };
            if skipped > 0 {
                self.stats.gap_records += skipped;
                match gave_up {
                    Some(GaveUp::Budget) => self.stats.gap_records_over_budget += skipped,
                    Some(GaveUp::Window) => self.stats.gap_records_window_full += skipped,
                    Some(GaveUp::Timeout) | None => {}
                }
                // The transactions open across the hole carry it; with none
                // open, the next one does.
                conn.gap = conn.pending.is_empty();
                for txn in &mut conn.pending {
                    txn.gap = true;
                }
                conn.lose_bytes_before_detection();
                // The byte stream has a hole of unknown length: what was open is
                // given up, and parsing joins again at the next message (HTTP/1)
                // or frame (HTTP/2) boundary.
                if matches!(conn.mode, Mode::Http1(_) | Mode::Http2(_)) {
                    conn.rejoin();
                    self.flush_pending(conn_id);
                }
            }
            match (self.decode)(&bytes) {
                Some(input) => self.process(conn_id, input),
                None => self.stats.undecodable += 1,
            }
        }
    }

    /// Marks the connections of process `pid` for release once records still in
    /// other rings have had time to arrive.
    fn process_exited(&mut self, pid: u32, now_ns: u64) {
        let release_at = now_ns.saturating_add(EXIT_GRACE_NS);
        for conn_id in self.by_pid.remove(&pid).unwrap_or_default() {
            self.exiting.push_back(Exiting {
                release_at,
                conn_id,
                seen_mono_ns: self.mono_ns,
            });
        }
        let forget_at = now_ns.saturating_add(EXITED_MEMORY_NS);
        self.exited.insert(pid, forget_at);
        self.exited_order.push_back((forget_at, pid));
    }

    /// Connections tracked for each process (for tests and counters).
    pub fn processes(&self) -> usize {
        self.by_pid.len()
    }

    /// Releases connections whose process exited, emitting what they hold, and
    /// flushes connections silent past the idle timeout.
    fn lifecycle(&mut self, now_ns: u64) {
        self.release_exited(now_ns);
        if now_ns.saturating_sub(self.last_idle_scan_ns) < IDLE_SCAN_NS {
            return;
        }
        self.last_idle_scan_ns = now_ns;
        let timeout = self.idle_timeout_ns;
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.holds_transactions() && now_ns.saturating_sub(c.last_ns) > timeout)
            .map(|(&id, _)| id)
            .collect();
        for conn_id in idle {
            self.flush_idle(conn_id);
        }
    }

    /// Releases the connections of exited processes whose grace has passed,
    /// and forgets those processes.
    fn release_exited(&mut self, now_ns: u64) {
        while let Some(&(at, pid)) = self.exited_order.front() {
            if at > now_ns {
                break;
            }
            self.exited_order.pop_front();
            if self.exited.get(&pid) == Some(&at) {
                self.exited.remove(&pid);
            }
        }
        while let Some(&Exiting {
            release_at,
            conn_id,
            seen_mono_ns,
        }) = self.exiting.front()
        {
            // A reader that lags (starved of CPU, or waiting for room) may
            // still hold the connection's last records.
            let readers_behind = self.readers_drained_ns < seen_mono_ns
                && self.mono_ns < seen_mono_ns.saturating_add(EXIT_WAIT_MAX_NS);
            if release_at > now_ns || readers_behind {
                break;
            }
            self.exiting.pop_front();
            if self.conns.contains_key(&conn_id) {
                self.stats.released_on_exit += 1;
                self.close(conn_id, now_ns, 0, 0);
            }
        }
    }

    /// Emits a silent connection's buffered transactions, marked `truncated`.
    /// Its parser state (and HTTP/2 header table) stays: the connection may
    /// speak again.
    fn flush_idle(&mut self, conn_id: u64) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if let Mode::Http2(h2) = &mut conn.mode {
            conn.pending.extend(h2.streams.drain().map(|(_, t)| t));
        }
        self.stats.idle_flushed += conn.pending.len() as u64;
        self.flush_pending(conn_id);
    }

    /// Gives up on holes older than the reorder timeout, on every connection;
    /// releases connections of exited processes and flushes idle ones.
    pub fn tick(&mut self, now_ns: u64) {
        self.drain_held(now_ns);
        self.lifecycle(now_ns);
        self.stats.connections = self.conns.len() as u64;
    }

    /// Delivers held records whose turn came or whose hole timed out.
    fn drain_held(&mut self, now_ns: u64) {
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
                shed,
                ..
            } => {
                self.stats.bytes += payload.len() as u64;
                let parsed = self.data(conn_id, ts_ns, tid, flow, tls, payload);
                if shed > 0 {
                    self.skip_shed(conn_id, ts_ns, flow, shed, parsed);
                }
            }
            Input::Hello { payload, .. } => self.hello(conn_id, payload),
            Input::Close {
                ts_ns,
                skipped_sent,
                skipped_received,
                ..
            } => self.close(conn_id, ts_ns, skipped_sent, skipped_received),
            Input::Exit { .. } | Input::Other => {}
        }
    }

    /// A ClientHello (or its record header) copied from the socket: the
    /// connection's transactions carry its server name from now on.
    fn hello(&mut self, conn_id: u64, payload: &[u8]) {
        self.stats.tls_hello_records += 1;
        self.stats.tls_hello_bytes += payload.len() as u64;
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        match tls_hello::server_name(payload) {
            Ok(name) => {
                self.stats.tls_server_names += 1;
                conn.sni = Some(Arc::from(name));
            }
            // The record header alone: the message comes next.
            Err(tls_hello::Error::Truncated) if payload.len() <= 5 => {}
            Err(_) => self.stats.tls_hello_unnamed += 1,
        }
    }

    /// Feeds a data record's payload to its connection's parser; whether a
    /// parser took it (and still follows the connection).
    fn data(
        &mut self,
        conn_id: u64,
        ts_ns: u64,
        tid: u32,
        flow: Flow,
        tls: bool,
        payload: &[u8],
    ) -> bool {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return false;
        };
        match conn.tls {
            Some(true) if !tls => {
                self.stats.ciphertext_skipped += 1;
                return false;
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
            if payload.is_empty() {
                // Nothing to judge by (a record whose bytes the probes did
                // not copy).
                return false;
            }
            conn.mode = if conn.joined_mid_stream() {
                join(conn, flow, payload)
            } else {
                detect(conn, flow, payload)
            };
            if matches!(conn.mode, Mode::Opaque) {
                self.stats.not_http += 1;
            }
        }
        let direction = if flow == conn.request_flow.unwrap_or(Flow::Egress) {
            Direction::Request
        } else {
            Direction::Response
        };
        let keeps = self.sink.keeps();
        let bodies = Bodies::of(keeps.bodies, &self.budget);
        let (mode, mut follow) = conn.follow(
            bodies,
            keeps.heads,
            conn_id,
            ts_ns,
            tid,
            tls,
            &mut self.done,
        );
        let failed = match mode {
            Mode::Http1(parser) => {
                parser.record_start(direction);
                parser
                    .feed(direction, payload, &mut |d, ev| follow.event(d, ev))
                    .is_err()
            }
            Mode::Http2(h2) => {
                h2.conn.record_start(direction);
                let streams = &mut h2.streams;
                h2.conn
                    .feed(direction, payload, &mut |d, ev| {
                        follow.h2_event(streams, d, ev)
                    })
                    .is_err()
            }
            Mode::Detect | Mode::Opaque => return false,
        };
        self.stats.count_not_kept(follow.not_kept);
        self.stats.h2_streams_over_limit += follow.streams_over_limit;
        if failed {
            self.stats.parse_errors += 1;
            conn.stop_parsing();
        }
        self.emit_done();
        if failed {
            self.flush_pending(conn_id);
        }
        !failed
    }

    /// `shed` bytes of `flow` right after the last payload were not copied
    /// (graceful overload); `parsed`: a parser took that payload. Inside a
    /// body whose length the framing gives, the parser skips them and stays
    /// in step; the message keeps the body's prefix and is marked
    /// `truncated`. Elsewhere (a head among them) the stream has a hole, and
    /// parsing joins again at the next message or frame, as after a lost
    /// record. Every byte is counted under one `overload_*` reason.
    fn skip_shed(&mut self, conn_id: u64, ts_ns: u64, flow: Flow, shed: u64, parsed: bool) {
        self.stats.overload_records += 1;
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            self.stats.overload_unparsed_bytes += shed;
            return;
        };
        match flow {
            Flow::Egress => conn.bytes_sent += shed,
            Flow::Ingress => conn.bytes_received += shed,
        }
        if !parsed {
            conn.lose_bytes_before_detection();
            self.stats.overload_unparsed_bytes += shed;
            return;
        }
        let direction = if flow == conn.request_flow.unwrap_or(Flow::Egress) {
            Direction::Request
        } else {
            Direction::Response
        };
        let tls = conn.tls.unwrap_or(false);
        let keeps = self.sink.keeps();
        let bodies = Bodies::of(keeps.bodies, &self.budget);
        let (mode, mut follow) =
            conn.follow(bodies, keeps.heads, conn_id, ts_ns, 0, tls, &mut self.done);
        let placed = match mode {
            Mode::Http1(parser) => {
                let decoder = match direction {
                    Direction::Request => parser.requests(),
                    Direction::Response => parser.responses(),
                };
                let in_body = decoder.in_body();
                if in_body {
                    follow.body_hole(direction, shed);
                }
                match parser.gap(direction, shed, &mut |d, ev| follow.event(d, ev)) {
                    Ok(()) if in_body => Placed::Body,
                    Ok(()) => Placed::Unparsed,
                    Err(_) => Placed::Lost,
                }
            }
            Mode::Http2(h2) => {
                let decoder = match direction {
                    Direction::Request => h2.conn.requests(),
                    Direction::Response => h2.conn.responses(),
                };
                let (stream, resyncs) = (decoder.data_stream(), decoder.stats().resyncs);
                let streams = &mut h2.streams;
                if let Some(txn) = stream.and_then(|id| streams.get_mut(&id)) {
                    txn.body_hole(direction, shed);
                }
                h2.conn.gap(direction, shed, &mut |d, ev| {
                    follow.h2_event(streams, d, ev)
                });
                let decoder = match direction {
                    Direction::Request => h2.conn.requests(),
                    Direction::Response => h2.conn.responses(),
                };
                match (decoder.stats().resyncs == resyncs, stream) {
                    (true, Some(_)) => Placed::Body,
                    (true, None) => Placed::Unparsed,
                    (false, _) => Placed::Lost,
                }
            }
            Mode::Detect | Mode::Opaque => Placed::Unparsed,
        };
        self.emit_done();
        match placed {
            Placed::Body => self.stats.overload_body_bytes += shed,
            Placed::Unparsed => self.stats.overload_unparsed_bytes += shed,
            Placed::Lost => {
                self.stats.overload_resync_bytes += shed;
                let Some(conn) = self.conns.get_mut(&conn_id) else {
                    return;
                };
                conn.gap = conn.pending.is_empty();
                for txn in &mut conn.pending {
                    txn.gap = true;
                }
                conn.rejoin();
                self.flush_pending(conn_id);
            }
        }
    }

    /// A connection closed; `skipped_*` are its payload bytes no data record
    /// carried (a filter skips its payload).
    fn close(&mut self, conn_id: u64, ts_ns: u64, skipped_sent: u64, skipped_received: u64) {
        let Some(mut conn) = self.conns.remove(&conn_id) else {
            return;
        };
        if let Some(ids) = self.by_pid.get_mut(&conn.pid) {
            ids.retain(|&id| id != conn_id);
            if ids.is_empty() {
                self.by_pid.remove(&conn.pid);
            }
        }
        let tls = conn.tls.unwrap_or(false);
        let keeps = self.sink.keeps();
        let bodies = Bodies::of(keeps.bodies, &self.budget);
        if let (Mode::Http1(parser), mut follow) =
            conn.follow(bodies, keeps.heads, conn_id, ts_ns, 0, tls, &mut self.done)
        {
            let _ = parser.eof(Direction::Response, &mut |d, ev| follow.event(d, ev));
            self.emit_done();
        }
        conn.stop_parsing();
        for mut txn in conn.pending.drain(..) {
            txn.truncated |= !txn.response.complete;
            self.emit(Output::Txn(txn.boxed()));
        }
        if let Some(info) = conn.info {
            let summary = ConnSummary {
                conn: info,
                tls: conn.tls.unwrap_or(false),
                tls_sni: conn.sni,
                bytes_sent: conn.bytes_sent + skipped_sent,
                bytes_received: conn.bytes_received + skipped_received,
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
            self.emit(Output::Txn(txn.boxed()));
        }
    }

    /// Emits the record's finished transactions, keeping the emptied list
    /// for the next record.
    fn emit_done(&mut self) {
        let mut done = std::mem::take(&mut self.done);
        for txn in done.drain(..) {
            self.emit(Output::Txn(txn.boxed()));
        }
        self.done = done;
    }

    fn emit(&mut self, item: Output) {
        if matches!(item, Output::Txn(_)) {
            self.stats.transactions += 1;
        }
        self.sink.send(item);
    }

    /// The agent is stopping: held records are delivered (holes given up),
    /// connections of exited processes released, and every connection still
    /// open gives up its pending transactions (and open HTTP/2 streams), marked
    /// `truncated` and counted under `open_at_stop`. The `connections` gauge
    /// keeps the number still open.
    pub fn stop(&mut self) {
        self.drain_held(u64::MAX);
        self.release_exited(u64::MAX);
        self.stats.connections = self.conns.len() as u64;
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for conn_id in ids {
            if let Some(conn) = self.conns.get_mut(&conn_id) {
                conn.stop_parsing();
                self.stats.open_at_stop += conn.pending.len() as u64;
            }
            self.flush_pending(conn_id);
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
    // An HTTP/2 server may speak first: its SETTINGS frame (RFC 9113 §3.4)
    // before it has read the client's preface (Go's net/http does). The
    // preface then comes the other way, where the decoder expects it.
    if flow != request_flow && looks_like_h2_frame(payload) && payload[3] == H2_SETTINGS {
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

/// Payload bytes a connection joined mid-stream may carry before a record
/// starts with an HTTP message or frame (the rest of a large body: the next
/// message starts a record of its own); past them the connection is left
/// alone.
const JOIN_SEARCH_BYTES: u64 = 16 << 20;

/// Decides what a connection joined mid-way carries, from a record that may
/// start anywhere: an HTTP/1 start line, the HTTP/2 preface, or what looks like
/// an HTTP/2 frame header. Anything else is passed over (`Mode::Detect` stays)
/// until one of those comes, for [`JOIN_SEARCH_BYTES`].
fn join(conn: &mut Conn, flow: Flow, payload: &[u8]) -> Mode {
    let (request_flow, mode) = if payload.starts_with(b"HTTP/1.") {
        (
            opposite(flow),
            Mode::Http1(Box::new(http1::Connection::new_mid_stream())),
        )
    } else if starts_with_method(payload) {
        (
            flow,
            Mode::Http1(Box::new(http1::Connection::new_mid_stream())),
        )
    } else if payload.starts_with(h2::PREFACE) {
        (flow, Mode::Http2(Box::default()))
    } else if looks_like_h2_frame(payload) {
        // Joined HTTP/2 at a frame boundary; which way requests go shows in the
        // first header block (`:method` or `:status`), else in the ports.
        let flow = match h2_block_side(payload) {
            Some(Direction::Request) => flow,
            Some(Direction::Response) => opposite(flow),
            None => client_side_flow(conn.info.as_ref()),
        };
        let mode = Mode::Http2(Box::new(H2 {
            conn: h2::Connection::new_mid_stream(),
            streams: Map::default(),
        }));
        (flow, mode)
    } else {
        conn.join_search += payload.len() as u64;
        return if conn.join_search >= JOIN_SEARCH_BYTES {
            Mode::Opaque
        } else {
            Mode::Detect
        };
    };
    conn.request_flow = Some(request_flow);
    mode
}

/// Whether the HEADERS frame at the start of `payload` carries a request or a
/// response, from its first field: a static-table reference to a request
/// pseudo-header (`:authority`, `:method`, `:path`, `:scheme`) or to
/// `:status`. `None` for other frames and blocks that start otherwise.
fn h2_block_side(payload: &[u8]) -> Option<Direction> {
    const HEADERS: u8 = 1;
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;
    if payload.get(3) != Some(&HEADERS) {
        return None;
    }
    let flags = payload[4];
    let mut at = 9;
    if flags & PADDED != 0 {
        at += 1;
    }
    if flags & PRIORITY != 0 {
        at += 5;
    }
    let first = *payload.get(at)?;
    let index = if first & 0x80 != 0 {
        first & 0x7f // indexed field
    } else if first & 0xc0 == 0x40 {
        first & 0x3f // literal with incremental indexing, indexed name
    } else if first & 0xe0 == 0 {
        first & 0x0f // literal without indexing or never indexed
    } else {
        return None; // table size update
    };
    match index {
        1..=7 => Some(Direction::Request),
        8..=14 => Some(Direction::Response),
        _ => None,
    }
}

/// Which way requests go on an HTTP/2 connection whose start was not seen:
/// the end with the lower port is taken as the server (services listen on
/// low or well-known ports, clients on ephemeral ones).
fn client_side_flow(info: Option<&ConnInfo>) -> Flow {
    match info {
        Some(i) if i.local.port() < i.remote.port() => Flow::Ingress,
        _ => Flow::Egress,
    }
}

/// A plausible HTTP/2 frame header at the start of `payload`: a known type, a
/// length within the default maximum frame size, the reserved bit clear, and
/// a stream id that fits the type (0 for connection frames, not 0 for stream
/// frames).
/// The HTTP/2 SETTINGS frame type.
const H2_SETTINGS: u8 = 4;

fn looks_like_h2_frame(payload: &[u8]) -> bool {
    let Some(h) = payload.get(..9) else {
        return false;
    };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let kind = h[3];
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
    let stream_fits = match kind {
        4 | 6 | 7 => stream == 0, // SETTINGS, PING, GOAWAY
        8 => len == 4,            // WINDOW_UPDATE, on a stream or the connection
        _ => stream != 0,
    };
    len <= 16_384 && kind <= 9 && stream & 0x8000_0000 == 0 && stream_fits
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

impl ShardStats {
    fn count_not_kept(&mut self, n: NotKept) {
        self.body_shed_bytes += n.shed;
        self.body_over_limit_bytes += n.over_limit;
        self.body_after_hole_bytes += n.after_hole;
    }
}

/// Where bytes the probes did not copy fell in the stream.
enum Placed {
    /// Inside a body of known length: skipped, the parser in step.
    Body,
    /// Where nothing was being parsed.
    Unparsed,
    /// Where the framing could not place them: the parser lost its place.
    Lost,
}

/// The state an HTTP/1 event callback updates.
/// What becomes of body bytes.
#[derive(Clone, Copy)]
enum Bodies<'c> {
    /// Appended to their message, charged to the budget.
    Keep(&'c Arc<Budget>),
    /// Only counted: nothing downstream reads them ([`Sink::keeps`]).
    Count,
}

impl<'c> Bodies<'c> {
    fn of(keep: bool, budget: &'c Arc<Budget>) -> Self {
        if keep {
            Bodies::Keep(budget)
        } else {
            Bodies::Count
        }
    }

    /// Appends `chunk` to `msg`'s body, or counts it.
    fn push(self, msg: &mut super::txn::Message, chunk: &[u8]) -> NotKept {
        match self {
            Bodies::Keep(budget) => msg.push_body(chunk, budget),
            Bodies::Count => {
                msg.count_body(chunk.len());
                NotKept::default()
            }
        }
    }
}

struct Follow<'c> {
    bodies: Bodies<'c>,
    /// Header blocks are re-serialized as objects ([`Keeps::heads`]).
    heads: bool,
    /// Body bytes not kept, for the shard's counters.
    not_kept: NotKept,
    /// HTTP/2 streams not followed (too many open).
    streams_over_limit: u64,
    info: Option<&'c ConnInfo>,
    sni: Option<&'c Arc<str>>,
    conn_id: u64,
    pending: &'c mut VecDeque<Transaction>,
    done: &'c mut Vec<Transaction>,
    ts_ns: u64,
    tid: u32,
    tls: bool,
    egress: bool,
    gap: &'c mut bool,
}

impl Follow<'_> {
    fn count(&mut self, n: NotKept) {
        self.not_kept.over_limit += n.over_limit;
        self.not_kept.shed += n.shed;
        self.not_kept.after_hole += n.after_hole;
    }

    fn new_txn(&mut self) -> Transaction {
        let conn = self
            .info
            .cloned()
            .unwrap_or_else(|| unknown_conn(self.conn_id));
        Transaction {
            conn,
            request_id: 0,
            tid: self.tid,
            stream_id: None,
            egress: self.egress,
            protocol: Protocol::Http1,
            tls: self.tls,
            tls_sni: self.sni.cloned(),
            method: CompactString::default(),
            authority: None,
            path: CompactString::default(),
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

    /// `len` bytes of the body now arriving in `direction` were not copied:
    /// its transaction (the newest request, or the oldest response due) is
    /// marked.
    fn body_hole(&mut self, direction: Direction, len: u64) {
        let txn = match direction {
            Direction::Request => self.pending.back_mut(),
            Direction::Response => self.pending.front_mut(),
        };
        if let Some(txn) = txn {
            txn.body_hole(direction, len);
        }
    }

    /// The transaction whose response is being received: the oldest one.
    fn responding(&mut self) -> Option<&mut Transaction> {
        self.pending.front_mut()
    }

    fn h2_event(
        &mut self,
        streams: &mut Map<u32, Transaction>,
        direction: Direction,
        event: h2::Event<'_>,
    ) {
        let ts = self.ts_ns;
        match event {
            h2::Event::Headers(block) => {
                let id = block.stream_id;
                if !streams.contains_key(&id) {
                    if streams.len() >= MAX_H2_STREAMS {
                        self.streams_over_limit += 1;
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
                let text = |name: &str| block.get(name).map(text_lossy);
                if block.is_trailers() {
                    let msg = match direction {
                        Direction::Request => &mut txn.request,
                        Direction::Response => &mut txn.response,
                    };
                    msg.headers.extend_block(block.headers);
                    if direction == Direction::Response {
                        txn.grpc_status = block.grpc_status();
                    }
                } else if direction == Direction::Request {
                    txn.method = text(":method").unwrap_or_default();
                    txn.path = text(":path").unwrap_or_default();
                    txn.authority = text(":authority");
                    txn.start_ns = ts;
                    txn.request.headers = HeaderFields::from_block(block.headers);
                    if self.heads {
                        txn.request.head = h2_head_bytes(block.headers);
                    }
                    txn.request.head_bytes = block.headers.byte_len() as u64;
                } else {
                    let status = block.status();
                    if status.is_some_and(|s| (100..200).contains(&s)) {
                        return;
                    }
                    txn.status = status;
                    txn.grpc_status = block.grpc_status();
                    txn.response.headers = HeaderFields::from_block(block.headers);
                    if self.heads {
                        txn.response.head = h2_head_bytes(block.headers);
                    }
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
                    let n = self.bodies.push(msg, data);
                    txn.truncated |= !n.none();
                    self.count(n);
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
    fn end_stream(&mut self, streams: &mut Map<u32, Transaction>, id: u32, direction: Direction) {
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
                txn.method = CompactString::new(head.method);
                txn.path = text_lossy(head.target);
                txn.request.headers = HeaderFields::from_block(head.headers);
                txn.authority = txn.request.header("host").map(CompactString::new);
                txn.request.head_bytes = head.head_len as u64;
                if self.heads {
                    txn.request.head = request_head_bytes(&head);
                }
                expect_body(&mut txn.request);
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
                    let n = self.bodies.push(&mut txn.request, chunk);
                    txn.truncated |= !n.none();
                    self.count(n);
                }
            }
            (Direction::Request, Event::End { trailers }) => {
                if let Some(txn) = self.pending.back_mut() {
                    txn.request.headers.extend_block(trailers);
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
                let (ts, heads) = (self.ts_ns, self.heads);
                let Some(txn) = self.responding() else { return };
                txn.status = Some(head.status);
                txn.response.headers = HeaderFields::from_block(head.headers);
                txn.response.head_bytes = head.head_len as u64;
                if heads {
                    txn.response.head = response_head_bytes(&head);
                }
                expect_body(&mut txn.response);
                txn.end_ns = ts;
            }
            (Direction::Response, Event::Body(chunk)) => {
                let (ts, bodies) = (self.ts_ns, self.bodies);
                if let Some(txn) = self.pending.front_mut() {
                    let n = bodies.push(&mut txn.response, chunk);
                    txn.truncated |= !n.none();
                    txn.end_ns = ts;
                    self.count(n);
                }
            }
            (Direction::Response, Event::End { trailers }) => {
                let ts = self.ts_ns;
                if let Some(mut txn) = self.pending.pop_front() {
                    txn.response.headers.extend_block(trailers);
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
        comm: Arc::from(""),
        cgroup_id: 0,
        local: unspecified,
        remote: unspecified,
        role: Role::Unknown,
        ts_ns: 0,
    }
}

fn version_str(v: http1::Version) -> &'static str {
    match v {
        http1::Version::Http10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// `bytes` as text, invalid UTF-8 replaced: validated at once when it is
/// UTF-8 (a request target nearly always is; the check has an ASCII fast
/// path), where `CompactString::from_utf8_lossy` went through it a chunk and
/// a push at a time.
fn text_lossy(bytes: &[u8]) -> CompactString {
    match std::str::from_utf8(bytes) {
        Ok(text) => CompactString::new(text),
        Err(_) => CompactString::from_utf8_lossy(bytes),
    }
}

/// Sizes `msg`'s body buffer from its Content-Length, if it has one.
fn expect_body(msg: &mut super::txn::Message) {
    if let Some(len) = msg
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        msg.expect_body(len);
    }
}

/// The request head as an object: start line and fields, CRLF-separated.
fn request_head_bytes(head: &http1::RequestHead<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.head_len);
    push_bytes(&mut out, head.method.as_bytes());
    out.push(b' ');
    push_bytes(&mut out, head.target);
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
    out.push(b' ');
    push_uint(&mut out, head.status.into());
    out.push(b' ');
    push_bytes(&mut out, head.reason);
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
        push_bytes(out, name);
        out.extend_from_slice(b": ");
        push_bytes(out, value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
