//! `type: stdout` event and object stores: NDJSON on standard output.
//!
//! Both kinds share one writer thread so lines never interleave; callers only push
//! onto its bounded queue. Line formats are documented in `docs/stdout.md`. An
//! object's notice is told once its line is written and flushed.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use crate::announce::Announcer;
use crate::config::{EventKind, ObjectKind, StoreKind};
use crate::counters::{Counters, Loss};
use crate::room::{Room, Taken};
use crate::stores::{StartContext, StoreStartError};
use crate::{Digest, EventStore, Notice, Object, ObjectStore, StoreStats, Ticket};

/// A `type: stdout` event or object store: no keys but `id` and `type`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Store id (the entry's `id`).
    #[serde(skip)]
    pub id: String,
}

impl StoreKind for StdoutConfig {
    const NAME: &'static str = "stdout";

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn summary(&self) -> String {
        "stdout".to_owned()
    }
}

impl EventKind for StdoutConfig {
    fn start(&self, ctx: &mut StartContext) -> Result<Arc<dyn EventStore>, StoreStartError> {
        Ok(Arc::new(StdoutEventStore::new(&self.id, ctx.stdout()?)))
    }
}

impl ObjectKind for StdoutConfig {
    fn start(&self, ctx: &mut StartContext) -> Result<Arc<dyn ObjectStore>, StoreStartError> {
        Ok(Arc::new(StdoutObjectStore::new(&self.id, ctx.stdout()?)))
    }
}

/// Lines the writer queue holds; past it, new lines are dropped and counted.
/// 64 Ki lines is several seconds of a busy node's events.
pub const STDOUT_QUEUE_LINES: usize = 64 * 1024;
/// Payload bytes (events and object bytes) the writer queue holds at most by
/// default ([`crate::stores::StartContext`] sets it): objects can be large, so
/// the line count alone would not bound memory.
pub const STDOUT_QUEUE_BYTES: usize = crate::stores::DEFAULT_QUEUE_BYTES as usize;

/// Bytes gathered before a write: a burst of lines costs one `write`.
const WRITE_CHUNK: usize = 256 * 1024;
/// How long dropping the writer waits for its thread, which may be blocked
/// writing to a reader that stopped reading.
const JOIN_WAIT: Duration = Duration::from_millis(200);
/// How long the writer waits after a write before gathering again: under
/// load, one wake-up per this much output instead of one per line.
const LINGER: Duration = Duration::from_millis(1);
/// Queue slots beyond the lines' capacity, for flush markers.
const FLUSH_SLOTS: usize = 64;
/// How often a flush retries queueing its marker behind a full queue.
const FLUSH_POLL: Duration = Duration::from_millis(10);

enum Line {
    Event {
        bytes: Bytes,
        tally: Arc<Tally>,
    },
    /// Several events, each followed by its newline.
    Events {
        lines: Bytes,
        count: u64,
        tally: Arc<Tally>,
    },
    Object {
        object: Object,
        tally: Arc<Tally>,
        /// Who to tell once the line is written, and for which store.
        notice: Option<(Notice, Arc<Announcer>)>,
    },
    Flush(SyncSender<()>),
}

/// One store's counters, and whether its results are still being counted: once
/// a store has shut down, whatever it had not written is counted as unwritten,
/// and a write that finishes later is not counted again.
#[derive(Default)]
struct Tally {
    counters: Counters,
    closed: Mutex<bool>,
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops counting: every line accepted and neither written nor dropped is
    /// counted as unwritten. Returns how many.
    fn close(&self) -> u64 {
        let mut closed = self.lock();
        if *closed {
            return 0;
        }
        *closed = true;
        let s = self.counters.snapshot();
        let unwritten = s.accepted.saturating_sub(s.stored + s.dropped);
        self.counters.lose(Loss::Unwritten, unwritten);
        unwritten
    }
}

/// The thread that owns standard output for the stdout stores.
pub struct StdoutWriter {
    tx: SyncSender<Line>,
    /// Lines and payload bytes queued and not yet taken by the writer thread.
    room: Arc<Room>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl StdoutWriter {
    /// Starts the writer thread with a queue of `capacity` lines and
    /// `max_bytes` of payload.
    pub fn start(capacity: usize, max_bytes: u64) -> std::io::Result<Arc<Self>> {
        // Room for flush markers beside the lines the room admits, so a line
        // given room always finds a slot.
        let (tx, rx) = sync_channel(capacity + FLUSH_SLOTS);
        let room = Arc::new(Room::new(capacity, max_bytes));
        let freed = Arc::clone(&room);
        let thread = std::thread::Builder::new()
            .name("stdout-store".into())
            .spawn(move || {
                crate::room::store_thread();
                write_lines(rx, std::io::stdout().lock(), &freed)
            })?;
        Ok(Arc::new(Self {
            tx,
            room,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Queues `line`, waiting for room while the queue is full (see
    /// [`crate::room`]); false if it was dropped (and counted).
    fn send(&self, line: Line, counters: &Counters) -> bool {
        let count = line.count();
        Counters::add(&counters.here().accepted, count);
        // A line made by the writer thread itself (an object's
        // `artifact_record`, told once the object's line is written) is
        // written by it next, never queued: it could not wait for room it
        // must free itself. One such line per object line written bounds them.
        let line = match OWN_LINES.with(|own| match own.borrow_mut().as_mut() {
            Some(own) if matches!(line, Line::Event { .. } | Line::Events { .. }) => {
                own.push(line);
                None
            }
            _ => Some(line),
        }) {
            Some(line) => line,
            None => return true,
        };
        let len = line.payload_len();
        let taken = self
            .room
            .take(len, || Counters::add(&counters.here().waits, 1));
        if let Taken::Refused { .. } = taken {
            counters.lose(Loss::QueueFull, count);
            return false;
        }
        if self.tx.try_send(line).is_err() {
            self.room.give_back(len);
            counters.lose(Loss::QueueFull, count);
            return false;
        }
        true
    }

    /// Waits until every line queued so far is written and flushed, or until
    /// `deadline`; never blocks past it, even when the reader has stopped reading.
    /// Returns whether everything was written in time.
    pub fn flush(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let (ack_tx, ack_rx) = sync_channel(1);
        let mut marker = Line::Flush(ack_tx);
        loop {
            match self.tx.try_send(marker) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= until {
                        return false;
                    }
                    marker = back;
                    std::thread::sleep(FLUSH_POLL);
                }
            }
        }
        ack_rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Flushes within `deadline`, then stops counting `tally`'s lines: what is
    /// still unwritten is counted and logged.
    fn shut(&self, id: &str, tally: &Tally, deadline: Duration) {
        self.flush(deadline);
        let unwritten = tally.close();
        if unwritten > 0 {
            tracing::warn!(
                store = id,
                unwritten,
                "standard output did not take every line before the shutdown deadline"
            );
        }
    }
}

impl Drop for StdoutWriter {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            // The thread ends when its queue's last sender (ours) is gone, unless
            // it is blocked writing to a reader that stopped reading: then it is
            // left behind rather than holding up the exit.
            let (tx, _) = sync_channel(0);
            drop(std::mem::replace(&mut self.tx, tx));
            let until = Instant::now() + JOIN_WAIT;
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(FLUSH_POLL);
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Line {
    /// Bytes this line holds against [`STDOUT_QUEUE_BYTES`].
    fn payload_len(&self) -> u64 {
        match self {
            Line::Event { bytes, .. } => bytes.len() as u64,
            Line::Events { lines, .. } => lines.len() as u64,
            Line::Object { object, .. } => object.bytes.len() as u64,
            Line::Flush(_) => 0,
        }
    }

    /// The events or objects it carries.
    fn count(&self) -> u64 {
        match self {
            Line::Events { count, .. } => *count,
            Line::Event { .. } | Line::Object { .. } => 1,
            Line::Flush(_) => 0,
        }
    }
}

/// Lines gathered into the write buffer, per store, counted once written.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// (store, lines, payload bytes); at most one entry per store.
    lines: Vec<(Arc<Tally>, u64, u64)>,
    /// Notices of the objects whose lines are in `buf`, told once it is written.
    notices: Vec<Announcement>,
    /// The first write error; later lines are not attempted.
    failed: Option<std::io::ErrorKind>,
}

/// An object line's notice, waiting for the write.
struct Announcement {
    notice: Notice,
    announcer: Arc<Announcer>,
    tally: Arc<Tally>,
    digest: Digest,
    size: u64,
    content_type: Arc<str>,
}

impl Pending {
    fn add(&mut self, tally: &Arc<Tally>, len: usize) {
        self.add_lines(tally, 1, len);
    }

    /// `count` lines of `len` payload bytes in all.
    fn add_lines(&mut self, tally: &Arc<Tally>, count: u64, len: usize) {
        match self
            .lines
            .iter_mut()
            .find(|(t, _, _)| Arc::ptr_eq(t, tally))
        {
            Some((_, lines, bytes)) => {
                *lines += count;
                *bytes += len as u64;
            }
            None => self.lines.push((Arc::clone(tally), count, len as u64)),
        }
    }

    /// Appends an event line or lines (anything else is not an event).
    fn add_events(&mut self, line: Line) {
        match line {
            Line::Event { bytes, tally } => {
                self.buf.extend_from_slice(&bytes);
                self.buf.push(b'\n');
                self.add(&tally, bytes.len());
            }
            Line::Events {
                lines,
                count,
                tally,
            } => {
                self.buf.extend_from_slice(&lines);
                // Counted as single events are: without their newlines.
                self.add_lines(&tally, count, lines.len().saturating_sub(count as usize));
            }
            Line::Object { .. } | Line::Flush(_) => {}
        }
    }

    /// Writes the buffer and counts its lines as stored, or as unwritten when
    /// the output fails (EPIPE: the reader is gone).
    fn write(&mut self, out: &mut impl Write) {
        if self.buf.is_empty() {
            return;
        }
        let result = match self.failed {
            Some(kind) => Err(std::io::Error::from(kind)),
            None => out.write_all(&self.buf).and_then(|()| out.flush()),
        };
        if let Err(error) = &result
            && self.failed.is_none()
        {
            tracing::error!(%error, "cannot write to standard output; its lines are counted as unwritten from now on");
            self.failed = Some(error.kind());
        }
        for (tally, lines, bytes) in self.lines.drain(..) {
            let closed = tally.lock();
            if *closed {
                continue;
            }
            let c = &tally.counters;
            if result.is_ok() {
                Counters::add(&c.here().stored, lines);
                Counters::add(&c.here().bytes, bytes);
            } else {
                Counters::add(&c.here().errors, 1);
                c.lose(Loss::Unwritten, lines);
            }
        }
        self.buf.clear();
        // Told after the counting: an announcement queues an event line, and
        // the store's lock must not be held meanwhile.
        for a in self.notices.drain(..) {
            if result.is_ok() {
                a.announcer.stored(
                    &a.tally.counters,
                    a.notice,
                    &a.digest,
                    a.size,
                    &a.content_type,
                    false,
                );
            }
        }
    }
}

thread_local! {
    /// On the writer thread: lines its own work made (see
    /// [`StdoutWriter::send`]), written after the current batch.
    static OWN_LINES: std::cell::RefCell<Option<Vec<Line>>> = const { std::cell::RefCell::new(None) };
}

fn write_lines(rx: Receiver<Line>, mut out: impl Write, room: &Room) {
    OWN_LINES.with(|own| *own.borrow_mut() = Some(Vec::new()));
    let mut pending = Pending {
        buf: Vec::with_capacity(WRITE_CHUNK),
        ..Pending::default()
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Gather what is queued before writing, so a burst costs one write.
        // After writing, linger a moment and gather again: under load the next
        // lines arrive meanwhile without waking this thread once per line; idle,
        // it goes back to waiting on the queue.
        while next.is_some() {
            gather(&rx, &mut next, &mut pending, &mut out, room);
            pending.write(&mut out);
            write_own_lines(&mut pending, &mut out);
            std::thread::sleep(LINGER);
            next = rx.try_recv().ok();
        }
    }
    write_own_lines(&mut pending, &mut out);
    OWN_LINES.with(|own| *own.borrow_mut() = None);
}

/// Writes what `pending` holds, then the lines writing it made (each written
/// object's `artifact_record`): so those never wait for the queue to be
/// drained, however long a busy queue keeps this thread gathering. Only
/// between lines: an object line being encoded is written out with
/// [`Pending::write`] alone.
fn write_out(pending: &mut Pending, out: &mut impl Write) {
    pending.write(&mut *out);
    write_own_lines(pending, out);
}

/// Writes the lines this thread made while writing (their events).
fn write_own_lines(pending: &mut Pending, out: &mut impl Write) {
    loop {
        let lines = OWN_LINES.with(|own| own.borrow_mut().as_mut().map(std::mem::take));
        let Some(lines) = lines.filter(|l| !l.is_empty()) else {
            return;
        };
        // Only events are kept aside (see `StdoutWriter::send`).
        for line in lines {
            pending.add_events(line);
        }
        pending.write(&mut *out);
    }
}

/// Moves `next` and whatever else is queued now into `pending`, writing as
/// the buffer fills.
fn gather(
    rx: &Receiver<Line>,
    next: &mut Option<Line>,
    pending: &mut Pending,
    out: &mut impl Write,
    room: &Room,
) {
    while let Some(line) = next.take() {
        if !matches!(line, Line::Flush(_)) {
            room.give_back(line.payload_len());
        }
        match line {
            Line::Event { .. } | Line::Events { .. } => pending.add_events(line),
            Line::Object {
                object,
                tally,
                notice,
            } => {
                // Encoded a step at a time straight into the write buffer,
                // written out as it fills: a large object never needs a
                // buffer of its own encoded size.
                object_head(&object, &mut pending.buf);
                for piece in object.bytes.chunks(BASE64_STEP) {
                    append_base64(piece, &mut pending.buf);
                    if pending.buf.len() >= WRITE_CHUNK {
                        pending.write(&mut *out);
                    }
                }
                pending.buf.extend_from_slice(OBJECT_TAIL);
                pending.add(&tally, object.bytes.len());
                if let Some((notice, announcer)) = notice {
                    pending.notices.push(Announcement {
                        notice,
                        announcer,
                        tally,
                        digest: object.digest,
                        size: object.bytes.len() as u64,
                        content_type: object.content_type,
                    });
                }
            }
            Line::Flush(ack) => {
                write_out(pending, &mut *out);
                let _ = ack.send(());
            }
        }
        if pending.buf.len() >= WRITE_CHUNK {
            write_out(pending, &mut *out);
        }
        *next = rx.try_recv().ok();
    }
}

/// Payload bytes base64-encoded per step of an object line: a multiple of 3, so
/// the encoded steps join into one valid encoding without padding between them.
const BASE64_STEP: usize = 48 * 1024;
/// What closes an object line after its base64 bytes.
const OBJECT_TAIL: &[u8] = b"\"}\n";

/// Appends one object line (with its newline) to `out`; see `docs/stdout.md`.
pub fn object_line(object: &Object, out: &mut Vec<u8>) {
    object_head(object, out);
    for piece in object.bytes.chunks(BASE64_STEP) {
        append_base64(piece, out);
    }
    out.extend_from_slice(OBJECT_TAIL);
}

/// An object line up to the opening quote of its `bytes` field. Only the
/// content type can need JSON escaping; base64 never does, so the bytes are
/// appended as encoded.
fn object_head(object: &Object, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"object\",\"digest\":\"");
    out.extend_from_slice(crate::hex::DigestHex::new(&object.digest).as_bytes());
    out.extend_from_slice(b"\",\"content_type\":");
    // Serializing a string into a Vec cannot fail.
    serde_json::to_writer(&mut *out, &*object.content_type).expect("content type serializes");
    // Writing into a Vec cannot fail.
    write!(out, ",\"size\":{},\"bytes\":\"", object.bytes.len()).expect("into a Vec");
}

/// Appends the base64 encoding (standard alphabet, padded) of `piece` to `out`,
/// with the CPU's vector instructions where it has them (AVX2, SSE4.1, NEON:
/// chosen at run time), about four times the speed of a scalar encoder.
fn append_base64(piece: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let len = base64_simd::STANDARD.encoded_length(piece.len());
    out.reserve(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let written = base64_simd::STANDARD
        .encode(piece, base64_simd::Out::from_uninit_slice(spare))
        .len();
    assert_eq!(written, len, "the whole encoding was written");
    // SAFETY: `encode` initialised the `len` bytes after `start` (checked
    // above).
    unsafe { out.set_len(start + len) };
}

/// `type: stdout` event store.
pub struct StdoutEventStore {
    id: String,
    writer: Arc<StdoutWriter>,
    tally: Arc<Tally>,
}

impl StdoutEventStore {
    /// A store named `id` writing through `writer`.
    pub fn new(id: impl Into<String>, writer: Arc<StdoutWriter>) -> Self {
        Self {
            id: id.into(),
            writer,
            tally: Arc::default(),
        }
    }
}

impl EventStore for StdoutEventStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn emit(&self, event: Bytes) {
        let line = Line::Event {
            bytes: event,
            tally: Arc::clone(&self.tally),
        };
        self.writer.send(line, &self.tally.counters);
    }

    fn emit_lines(&self, lines: Bytes, count: u64) {
        debug_assert_eq!(lines.iter().filter(|&&b| b == b'\n').count() as u64, count);
        let line = Line::Events {
            lines,
            count,
            tally: Arc::clone(&self.tally),
        };
        self.writer.send(line, &self.tally.counters);
    }

    fn stats(&self) -> StoreStats {
        self.tally.counters.snapshot()
    }

    fn shutdown(&self, deadline: Duration) {
        self.writer.shut(&self.id, &self.tally, deadline);
    }
}

/// `type: stdout` object store.
pub struct StdoutObjectStore {
    id: String,
    writer: Arc<StdoutWriter>,
    tally: Arc<Tally>,
    announcer: Arc<Announcer>,
}

impl StdoutObjectStore {
    /// A store named `id` writing through `writer`.
    pub fn new(id: impl Into<String>, writer: Arc<StdoutWriter>) -> Self {
        let id = id.into();
        Self {
            announcer: Arc::new(Announcer::new(&id, None)),
            id,
            writer,
            tally: Arc::default(),
        }
    }
}

impl ObjectStore for StdoutObjectStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn put_with(&self, object: Object, mut ticket: Ticket) {
        let line = Line::Object {
            object,
            tally: Arc::clone(&self.tally),
            notice: ticket
                .take_notice()
                .map(|n| (n, Arc::clone(&self.announcer))),
        };
        // The object line is queued ahead of the event that names it, on the same
        // stream: the event cannot come out without it.
        if self.writer.send(line, &self.tally.counters) {
            ticket.kept();
        }
    }

    fn access_url(&self) -> Option<&crate::s3::AccessUrl> {
        None
    }

    fn stats(&self) -> StoreStats {
        self.tally.counters.snapshot()
    }

    fn shutdown(&self, deadline: Duration) {
        self.writer.shut(&self.id, &self.tally, deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn object_line_carries_digest_type_size_and_base64_bytes() {
        let object = Object::new("text/plain", Bytes::from_static(b"hello"));
        let mut out = Vec::new();
        object_line(&object, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"type\":\"object\",\"digest\":\"{}\",\"content_type\":\"text/plain\",\
                 \"size\":5,\"bytes\":\"aGVsbG8=\"}}\n",
                blake3::hash(b"hello").to_hex()
            )
        );
    }

    #[test]
    fn a_large_object_is_written_in_steps_as_one_valid_line() {
        // Several encoding steps and write chunks, and a length that is not a
        // multiple of 3, so the last step is padded.
        let bytes: Vec<u8> = (0..(3 * WRITE_CHUNK + 1)).map(|i| (i * 7) as u8).collect();
        let object = Object::new("a \"quoted\" type", Bytes::from(bytes.clone()));
        let (tx, rx) = sync_channel(1);
        let tally = Arc::new(Tally::default());
        tx.send(Line::Object {
            object,
            tally: Arc::clone(&tally),
            notice: None,
        })
        .unwrap();
        drop(tx);
        let mut out = Vec::new();
        write_lines(rx, &mut out, &room_holding(&[bytes.len()]));
        assert_eq!(out.last(), Some(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["content_type"], "a \"quoted\" type");
        assert_eq!(line["size"], bytes.len());
        assert_eq!(line["digest"], blake3::hash(&bytes).to_hex().as_str());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(line["bytes"].as_str().unwrap())
            .unwrap();
        assert!(decoded == bytes, "the bytes decode to the object");
        assert_eq!(tally.counters.snapshot().stored, 1);
    }

    #[test]
    fn lines_written_in_order_and_counted() {
        let (tx, rx) = sync_channel(16);
        let tally = Arc::new(Tally::default());
        for event in ["{\"a\":1}", "{\"b\":2}"] {
            let line = Line::Event {
                bytes: Bytes::from(event),
                tally: Arc::clone(&tally),
            };
            tx.send(line).unwrap();
        }
        let object = Object::new("application/octet-stream", Bytes::from_static(&[0, 1, 2]));
        let heard = Arc::new(Heard::default());
        tx.send(Line::Object {
            object,
            tally: Arc::clone(&tally),
            notice: Some((
                Notice::new(heard.clone(), 3),
                Arc::new(Announcer::new("out", None)),
            )),
        })
        .unwrap();
        drop(tx);
        let mut out = Vec::new();
        let room = room_holding(&[7, 7, 3]);
        write_lines(rx, &mut out, &room);
        assert_eq!(
            *heard.0.lock().unwrap(),
            [(
                3,
                "out".to_owned(),
                blake3::hash(&[0, 1, 2]).to_hex().to_string(),
                3,
                None
            )],
            "the object's notice is told once its line is written"
        );
        assert_eq!(tally.counters.snapshot().artifact_records, 1);
        assert_eq!(
            (room.items(), room.bytes()),
            (0, 0),
            "every written line gives its room back"
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["{\"a\":1}", "{\"b\":2}"]);
        assert!(lines[2].contains("\"bytes\":\"AAEC\""), "{}", lines[2]);
        assert_eq!(tally.counters.snapshot().stored, 3);
        assert_eq!(tally.counters.snapshot().bytes, 7 + 7 + 3);
    }

    #[test]
    fn a_block_of_events_is_written_whole_and_counted_per_event() {
        let (tx, rx) = sync_channel(16);
        let tally = Arc::new(Tally::default());
        tx.send(Line::Event {
            bytes: Bytes::from_static(b"{\"a\":1}"),
            tally: Arc::clone(&tally),
        })
        .unwrap();
        let block = Bytes::from_static(b"{\"b\":2}\n{\"c\":3}\n{}\n");
        tx.send(Line::Events {
            lines: block.clone(),
            count: 3,
            tally: Arc::clone(&tally),
        })
        .unwrap();
        drop(tx);
        let mut out = Vec::new();
        let room = room_holding(&[7, block.len()]);
        write_lines(rx, &mut out, &room);
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n{}\n");
        assert_eq!((room.items(), room.bytes()), (0, 0));
        let counted = tally.counters.snapshot();
        // As if the four had come one by one: lines, and bytes without newlines.
        assert_eq!((counted.stored, counted.bytes), (4, 7 + 7 + 7 + 2));
    }

    #[test]
    fn a_block_the_queue_cannot_take_is_dropped_and_counted_per_event() {
        let writer = StdoutWriter::start(16, 8).unwrap();
        let store = StdoutEventStore::new("out", writer);
        store.emit_lines(Bytes::from_static(b"{\"b\":2}\n{\"c\":3}\n"), 2);
        let counted = store.stats();
        assert_eq!(
            (counted.accepted, counted.dropped, counted.stored),
            (2, 2, 0)
        );
    }

    /// One announcement: (part, store, digest, size, url).
    type Announced = (usize, String, String, u64, Option<String>);

    /// Every announcement.
    #[derive(Default)]
    struct Heard(Mutex<Vec<Announced>>);

    impl crate::Announce for Heard {
        fn stored(&self, part: usize, s: crate::Stored<'_>) {
            self.0.lock().unwrap().push((
                part,
                s.store.to_owned(),
                s.digest.to_hex().to_string(),
                s.size,
                s.url.map(|u| u.render(s.digest)),
            ));
        }
    }

    #[test]
    fn an_object_line_not_written_is_not_announced() {
        let (tx, rx) = sync_channel(1);
        let tally = Arc::new(Tally::default());
        let heard = Arc::new(Heard::default());
        tx.send(Line::Object {
            object: Object::new("text/plain", Bytes::from_static(b"x")),
            tally: Arc::clone(&tally),
            notice: Some((
                Notice::new(heard.clone(), 0),
                Arc::new(Announcer::new("out", None)),
            )),
        })
        .unwrap();
        drop(tx);
        write_lines(rx, Closed, &room_holding(&[1]));
        assert!(heard.0.lock().unwrap().is_empty());
        assert_eq!(tally.counters.snapshot().artifact_records, 0);
    }

    /// A queue's room holding lines of these lengths.
    fn room_holding(lens: &[usize]) -> Room {
        let room = Room::new(16, STDOUT_QUEUE_BYTES as u64);
        for &len in lens {
            assert!(room.take_now(len as u64));
        }
        room
    }

    /// A writer whose reader has gone: every write fails with EPIPE.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_the_output_refuses_are_unwritten_not_stored() {
        let (tx, rx) = sync_channel(16);
        let tally = Arc::new(Tally::default());
        for _ in 0..3 {
            Counters::add(&tally.counters.here().accepted, 1);
            let line = Line::Event {
                bytes: Bytes::from_static(b"{}"),
                tally: Arc::clone(&tally),
            };
            tx.send(line).unwrap();
        }
        drop(tx);
        write_lines(rx, Closed, &room_holding(&[2, 2, 2]));
        let stats = tally.counters.snapshot();
        assert_eq!(
            (stats.stored, stats.dropped, stats.drops.unwritten),
            (0, 3, 3)
        );
        assert_eq!(tally.close(), 0, "nothing left to count at shutdown");
    }

    #[test]
    fn an_object_over_the_byte_budget_is_dropped_and_counted() {
        let store = StdoutObjectStore::new(
            "out",
            StdoutWriter::start(16, STDOUT_QUEUE_BYTES as u64).unwrap(),
        );
        let big = Bytes::from(vec![0u8; STDOUT_QUEUE_BYTES + 1]);
        store.put(Object::new("application/octet-stream", big));
        let stats = store.stats();
        assert_eq!((stats.accepted, stats.dropped, stats.stored), (1, 1, 0));
    }

    #[test]
    fn a_full_queue_holds_the_producer_until_the_writer_takes_lines() {
        // A writer thread that has not started taking lines yet: a queue of
        // two lines, filled, then a third waits until the thread frees room.
        let (tx, rx) = sync_channel(2 + FLUSH_SLOTS);
        let room = Arc::new(Room::new(2, STDOUT_QUEUE_BYTES as u64));
        let writer = Arc::new(StdoutWriter {
            tx,
            room: Arc::clone(&room),
            thread: Mutex::new(None),
        });
        let store = StdoutEventStore::new("out", Arc::clone(&writer));
        store.emit(Bytes::from_static(b"{\"n\":1}"));
        store.emit(Bytes::from_static(b"{\"n\":2}"));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let opened = Arc::clone(&gate);
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let thread = std::thread::spawn(move || {
            opened.wait();
            std::thread::sleep(Duration::from_millis(50));
            let mut buf = Vec::new();
            write_lines(rx, &mut buf, &room);
            *sink.lock().unwrap() = buf;
        });
        gate.wait();
        store.emit(Bytes::from_static(b"{\"n\":3}"));
        let stats = store.stats();
        assert_eq!((stats.accepted, stats.dropped, stats.waits), (3, 0, 1));
        drop(store);
        drop(writer);
        thread.join().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    }

    #[test]
    fn lines_the_writer_makes_itself_are_written_even_when_the_queue_is_full() {
        let (tx, _rx) = sync_channel(1 + FLUSH_SLOTS);
        let room = Arc::new(Room::new(1, STDOUT_QUEUE_BYTES as u64));
        assert!(room.take_now(1), "the queue is full");
        let writer = Arc::new(StdoutWriter {
            tx,
            room,
            thread: Mutex::new(None),
        });
        let store = StdoutEventStore::new("out", writer);
        std::thread::scope(|s| {
            s.spawn(|| {
                // As on the writer thread, while it tells its notices.
                OWN_LINES.with(|own| *own.borrow_mut() = Some(Vec::new()));
                store.emit(Bytes::from_static(b"{\"type\":\"artifact_record\"}"));
                let mut pending = Pending::default();
                let mut out = Vec::new();
                write_own_lines(&mut pending, &mut out);
                assert_eq!(out, b"{\"type\":\"artifact_record\"}\n");
            });
        });
        let stats = store.stats();
        assert_eq!((stats.accepted, stats.stored, stats.dropped), (1, 1, 0));
    }
}
