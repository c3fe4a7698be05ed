//! `access_logs`: one log entry per HTTP transaction on stderr, as Qtap's
//! plugin writes them (Qtap writes them to stdout; tapwire's stdout carries
//! the event and object stream, so they go to stderr).
//!
//! `summary` is one line: method, URL, status, duration, direction and
//! process. `details` adds the headers, `full` the bodies. `format: console`
//! writes Qtap's one-liner (`■ curl egress-internal → GET http://… 200 3ms`),
//! followed by the headers and bodies as indented lines for `details` and
//! `full`; `format: json` writes one JSON object per line.
//!
//! Shards never wait for stderr: entries go to one writer thread through a
//! queue bounded in bytes ([`MAX_QUEUED_BYTES`]); an entry that does not fit is
//! dropped and counted ([`dropped_total`]).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};

use serde::Serialize;

use super::capture::{Level, decoded, header_map};
use super::fields::{TxnFields, protocol_name};
use crate::pipeline::event_fields::WallTime;
use crate::pipeline::txn::Message;

/// Bytes of entries waiting for the writer at most; past it entries are dropped.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

/// How an entry is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Qtap's console one-liner.
    Console,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "console" => LogFormat::Console,
            "json" => LogFormat::Json,
            _ => return None,
        })
    }

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Console => "console",
            LogFormat::Json => "json",
        }
    }
}

/// The canonical name of an `access_logs` mode (`headers` is written `details`).
pub fn mode_name(mode: Level) -> &'static str {
    match mode {
        Level::Headers => "details",
        other => other.name(),
    }
}

static WRITTEN: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);
static WRITER: OnceLock<Sender<Vec<u8>>> = OnceLock::new();

/// Entries written to stderr.
pub fn written_total() -> u64 {
    WRITTEN.load(Ordering::Relaxed)
}

/// Entries dropped because the writer's queue was full.
pub fn dropped_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Queues `txn`'s entry at `mode` in `format`; drops and counts it when the
/// queue is full.
pub fn log(txn: &TxnFields<'_>, mode: Level, format: LogFormat) {
    if mode == Level::None {
        return;
    }
    let entry = match format {
        LogFormat::Console => console(txn, mode),
        LogFormat::Json => json(txn, mode),
    };
    let len = entry.len();
    if QUEUED_BYTES.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
        QUEUED_BYTES.fetch_sub(len, Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if writer().send(entry).is_err() {
        QUEUED_BYTES.fetch_sub(len, Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The writer thread's queue, started on first use.
fn writer() -> &'static Sender<Vec<u8>> {
    WRITER.get_or_init(|| {
        let (tx, rx) = channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for entry in rx {
                    QUEUED_BYTES.fetch_sub(entry.len(), Ordering::Relaxed);
                    if std::io::stderr().lock().write_all(&entry).is_ok() {
                        WRITTEN.fetch_add(1, Ordering::Relaxed);
                    } else {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .expect("spawn the access log writer");
        tx
    })
}

/// The process's executable, else its command name.
fn bin<'a>(txn: &'a TxnFields<'_>) -> &'a str {
    txn.exe.unwrap_or(&txn.txn.conn.comm)
}

fn duration_ms(txn: &TxnFields<'_>) -> u64 {
    txn.txn.end_ns.saturating_sub(txn.txn.start_ns) / 1_000_000
}

fn direction(txn: &TxnFields<'_>) -> &'static str {
    crate::plan::direction_word(txn.txn.egress, txn.txn.conn.remote.ip())
}

/// A body as text: decoded, and `<binary N bytes>` unless it is UTF-8.
fn body_text(m: &Message) -> String {
    let body = decoded(m);
    match std::str::from_utf8(&body) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("<binary {} bytes>", body.len()),
    }
}

/// `■ curl egress-internal → GET http://host/path 200 3ms`, then for
/// `details` the headers (`  > ` request, `  < ` response) and for `full` the
/// bodies after a `  >`/`  <` line.
fn console(txn: &TxnFields<'_>, mode: Level) -> Vec<u8> {
    let t = txn.txn;
    let name = bin(txn).rsplit('/').next().unwrap_or_default();
    let status = t.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let mut out = format!(
        "■ {name} {} → {} {} {status} {}ms\n",
        direction(txn),
        t.method,
        txn.url,
        duration_ms(txn)
    );
    if mode >= Level::Headers {
        for (mark, m) in [(">", &t.request), ("<", &t.response)] {
            for (name, value) in m.headers.iter() {
                out.push_str(&format!("  {mark} {name}: {value}\n"));
            }
            if mode >= Level::Full && !m.body.is_empty() {
                out.push_str(&format!("  {mark}\n"));
                for line in body_text(m).lines() {
                    out.push_str(&format!("  {mark} {line}\n"));
                }
            }
        }
    }
    out.into_bytes()
}

/// One `access_logs` JSON entry; `details` and `full` add the nested request
/// and response.
#[derive(Serialize)]
struct Entry<'a> {
    msg: &'static str,
    #[serde(serialize_with = "crate::pipeline::event_fields::display")]
    time: WallTime,
    bin: &'a str,
    pid: u32,
    direction: &'static str,
    method: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Meta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<Part>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Part>,
}

#[derive(Serialize)]
struct Meta {
    bytes_sent: u64,
    bytes_received: u64,
    protocol: &'static str,
}

#[derive(Serialize)]
struct Part {
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

fn json(txn: &TxnFields<'_>, mode: Level) -> Vec<u8> {
    let t = txn.txn;
    let part = |m: &Message| Part {
        headers: header_map(m),
        body: (mode >= Level::Full && !m.body.is_empty()).then(|| body_text(m)),
    };
    let detailed = mode >= Level::Headers;
    let (sent, received) = {
        let req = t.request.head_bytes + t.request.body_bytes;
        let res = t.response.head_bytes + t.response.body_bytes;
        if t.egress { (req, res) } else { (res, req) }
    };
    let entry = Entry {
        msg: "HTTP transaction",
        time: WallTime::of_monotonic(t.end_ns),
        bin: bin(txn),
        pid: t.conn.pid,
        direction: direction(txn),
        method: &t.method,
        url: txn.url,
        status: t.status,
        duration_ms: duration_ms(txn),
        meta: detailed.then(|| Meta {
            bytes_sent: sent,
            bytes_received: received,
            protocol: protocol_name(t.protocol),
        }),
        request: detailed.then(|| part(&t.request)),
        response: detailed.then(|| part(&t.response)),
    };
    let mut out = serde_json::to_vec(&entry).expect("entry serializes");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::txn::Transaction;

    fn message(headers: &[(&str, &str)], body: &[u8]) -> Message {
        let mut m = Message::default();
        m.headers = headers.iter().copied().collect();
        m.head_bytes = 40;
        m.body = body.to_vec();
        m.body_bytes = body.len() as u64;
        m
    }

    fn txn() -> Transaction {
        let mut t = Transaction::for_test();
        (t.conn.pid, t.conn.tid, t.tid) = (4121, 4121, 4121);
        (t.conn.local, t.conn.remote) = (
            "10.0.0.2:50000".parse().unwrap(),
            "203.0.113.9:443".parse().unwrap(),
        );
        (t.tls, t.method, t.authority, t.path, t.status) = (
            true,
            "POST".into(),
            Some("api.example.com".into()),
            "/v1/x".into(),
            Some(201),
        );
        t.request = message(&[("Host", "api.example.com")], &[0xff, 0xfe]);
        t.response = message(&[("Content-Type", "text/plain")], b"made\nit\n");
        (t.start_ns, t.end_ns) = (1_000_000, 13_500_000);
        t
    }

    fn fields<'a>(txn: &'a Transaction, exe: Option<&'a str>) -> TxnFields<'a> {
        TxnFields {
            txn,
            exe,
            url: "https://api.example.com/v1/x",
        }
    }

    #[test]
    fn console_full_writes_headers_and_bodies_after_the_line() {
        let txn = txn();
        let entry = console(&fields(&txn, Some("/usr/bin/curl")), Level::Full);
        assert_eq!(
            String::from_utf8(entry).unwrap(),
            "■ curl egress-external → POST https://api.example.com/v1/x 201 12ms\n  \
             > Host: api.example.com\n  >\n  > <binary 2 bytes>\n  \
             < Content-Type: text/plain\n  <\n  < made\n  < it\n"
        );
        let summary = console(&fields(&txn, None), Level::Summary);
        assert_eq!(
            String::from_utf8(summary).unwrap(),
            "■ curl egress-external → POST https://api.example.com/v1/x 201 12ms\n"
        );
    }

    #[test]
    fn json_modes_add_headers_then_bodies() {
        let txn = txn();
        let entry = |mode| {
            let line = json(&fields(&txn, Some("/usr/bin/curl")), mode);
            assert_eq!(line.last(), Some(&b'\n'));
            let mut v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
            v.as_object_mut().unwrap().remove("time");
            v
        };
        let summary = serde_json::json!({
            "msg": "HTTP transaction", "bin": "/usr/bin/curl", "pid": 4121,
            "direction": "egress-external", "method": "POST",
            "url": "https://api.example.com/v1/x", "status": 201, "duration_ms": 12,
        });
        assert_eq!(entry(Level::Summary), summary);
        let mut full = summary;
        full["meta"] =
            serde_json::json!({"bytes_sent": 42, "bytes_received": 48, "protocol": "http1"});
        full["request"] =
            serde_json::json!({"headers": {"Host": "api.example.com"}, "body": "<binary 2 bytes>"});
        full["response"] =
            serde_json::json!({"headers": {"Content-Type": "text/plain"}, "body": "made\nit\n"});
        assert_eq!(entry(Level::Full), full);
    }
}
