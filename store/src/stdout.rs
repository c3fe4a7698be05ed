//! `type: stdout` event and object stores: NDJSON on standard output.
//!
//! Both kinds share one writer thread so lines never interleave; callers only push
//! onto its bounded queue. Line formats are documented in `docs/stdout.md`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;

use crate::{Digest, EventStore, Object, ObjectStore, StoreStats};

/// Lines the writer queue holds; past it, new lines are dropped and counted.
/// 64 Ki lines is several seconds of a busy node's events.
pub const STDOUT_QUEUE_LINES: usize = 64 * 1024;
/// Payload bytes (events and object bytes) the writer queue holds at most: objects
/// can be large, so the line count alone would not bound memory.
pub const STDOUT_QUEUE_BYTES: usize = 64 << 20;

enum Line {
    Event {
        bytes: Bytes,
        counters: Arc<Counters>,
    },
    Object {
        object: Object,
        counters: Arc<Counters>,
    },
    Flush(SyncSender<()>),
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    stored: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StoreStats {
        StoreStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            ..StoreStats::default()
        }
    }
}

/// The thread that owns standard output for the stdout stores.
pub struct StdoutWriter {
    tx: SyncSender<Line>,
    /// Payload bytes queued and not yet written; the writer thread subtracts what
    /// it writes (Relaxed: a budget, not a synchronisation point).
    queued: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl StdoutWriter {
    /// Starts the writer thread with a queue of `capacity` lines.
    pub fn start(capacity: usize) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = sync_channel(capacity);
        let queued = Arc::new(AtomicU64::new(0));
        let written = queued.clone();
        let thread = std::thread::Builder::new()
            .name("stdout-store".into())
            .spawn(move || write_lines(rx, std::io::stdout().lock(), &written))?;
        Ok(Arc::new(Self {
            tx,
            queued,
            thread: Mutex::new(Some(thread)),
        }))
    }

    fn send(&self, line: Line, counters: &Counters) {
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let len = line.payload_len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > STDOUT_QUEUE_BYTES as u64 {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every line queued so far is written and flushed, or `deadline`.
    pub fn flush(&self, deadline: Duration) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Line::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(deadline);
        }
    }
}

impl Drop for StdoutWriter {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            // The thread ends when its queue's last sender (ours) is gone.
            let (tx, _) = sync_channel(0);
            drop(std::mem::replace(&mut self.tx, tx));
            let _ = thread.join();
        }
    }
}

impl Line {
    /// Bytes this line holds against [`STDOUT_QUEUE_BYTES`].
    fn payload_len(&self) -> u64 {
        match self {
            Line::Event { bytes, .. } => bytes.len() as u64,
            Line::Object { object, .. } => object.bytes.len() as u64,
            Line::Flush(_) => 0,
        }
    }
}

fn write_lines(rx: Receiver<Line>, out: impl Write, queued: &AtomicU64) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    let mut scratch = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Drain what is queued before flushing, so a burst costs one write.
        while let Some(line) = next {
            queued.fetch_sub(line.payload_len(), Ordering::Relaxed);
            match line {
                Line::Event { bytes, counters } => {
                    let ok = out.write_all(&bytes).and_then(|()| out.write_all(b"\n"));
                    record(&counters, ok, bytes.len());
                }
                Line::Object { object, counters } => {
                    scratch.clear();
                    object_line(&object, &mut scratch);
                    let ok = out.write_all(&scratch);
                    record(&counters, ok, object.bytes.len());
                }
                Line::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

fn record(counters: &Counters, result: std::io::Result<()>, len: usize) {
    match result {
        Ok(()) => {
            counters.stored.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
        }
        Err(_) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Appends one object line (with its newline) to `out`; see `docs/stdout.md`.
pub fn object_line(object: &Object, out: &mut Vec<u8>) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        digest: &'a str,
        content_type: &'a str,
        size: usize,
        bytes: &'a str,
    }
    let bytes = base64::engine::general_purpose::STANDARD.encode(&object.bytes);
    let digest = object.digest.to_hex();
    let line = Line {
        kind: "object",
        digest: digest.as_str(),
        content_type: &object.content_type,
        size: object.bytes.len(),
        bytes: &bytes,
    };
    // Serializing a struct of strings and integers into a Vec cannot fail.
    serde_json::to_writer(&mut *out, &line).expect("object line serializes");
    out.push(b'\n');
}

/// `type: stdout` event store.
pub struct StdoutEventStore {
    id: String,
    writer: Arc<StdoutWriter>,
    counters: Arc<Counters>,
}

impl StdoutEventStore {
    /// A store named `id` writing through `writer`.
    pub fn new(id: impl Into<String>, writer: Arc<StdoutWriter>) -> Self {
        Self {
            id: id.into(),
            writer,
            counters: Arc::default(),
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
            counters: self.counters.clone(),
        };
        self.writer.send(line, &self.counters);
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    fn shutdown(&self, deadline: Duration) {
        self.writer.flush(deadline);
    }
}

/// `type: stdout` object store.
pub struct StdoutObjectStore {
    id: String,
    writer: Arc<StdoutWriter>,
    counters: Arc<Counters>,
}

impl StdoutObjectStore {
    /// A store named `id` writing through `writer`.
    pub fn new(id: impl Into<String>, writer: Arc<StdoutWriter>) -> Self {
        Self {
            id: id.into(),
            writer,
            counters: Arc::default(),
        }
    }
}

impl ObjectStore for StdoutObjectStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn put(&self, object: Object) {
        let line = Line::Object {
            object,
            counters: self.counters.clone(),
        };
        self.writer.send(line, &self.counters);
    }

    fn access_url(&self, _digest: &Digest) -> Option<String> {
        None
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    fn shutdown(&self, deadline: Duration) {
        self.writer.flush(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn lines_written_in_order_and_counted() {
        let (tx, rx) = sync_channel(16);
        let counters = Arc::new(Counters::default());
        for event in ["{\"a\":1}", "{\"b\":2}"] {
            let line = Line::Event {
                bytes: Bytes::from(event),
                counters: counters.clone(),
            };
            tx.send(line).unwrap();
        }
        let object = Object::new("application/octet-stream", Bytes::from_static(&[0, 1, 2]));
        tx.send(Line::Object {
            object,
            counters: counters.clone(),
        })
        .unwrap();
        drop(tx);
        let mut out = Vec::new();
        let queued = AtomicU64::new(7 + 7 + 3);
        write_lines(rx, &mut out, &queued);
        assert_eq!(
            queued.load(Ordering::Relaxed),
            0,
            "every written line leaves the budget"
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["{\"a\":1}", "{\"b\":2}"]);
        assert!(lines[2].contains("\"bytes\":\"AAEC\""), "{}", lines[2]);
        assert_eq!(counters.snapshot().stored, 3);
        assert_eq!(counters.snapshot().bytes, 7 + 7 + 3);
    }

    #[test]
    fn an_object_over_the_byte_budget_is_dropped_and_counted() {
        let store = StdoutObjectStore::new("out", StdoutWriter::start(16).unwrap());
        let big = Bytes::from(vec![0u8; STDOUT_QUEUE_BYTES + 1]);
        store.put(Object::new("application/octet-stream", big));
        let stats = store.stats();
        assert_eq!((stats.accepted, stats.dropped, stats.stored), (1, 1, 0));
    }
}
