//! `http_capture`: what of a transaction is stored, and in which layout.
//!
//! `format: json` and `format: text` write one object per transaction in
//! Qtap's `http_transaction` layout (Qtap's `httptransaction.go`): `summary`
//! leaves out headers and bodies, `headers` the bodies, `full` nothing.
//! `format: parts` is tapwire's own: one content-addressed object per header
//! block and per body, shared by every transaction with the same bytes.
//!
//! Qtap's layouts carry bodies decoded: de-chunked (the parser does that) and
//! inflated when their `Content-Encoding` is `gzip`, `deflate` or `br`, up to
//! [`MAX_BODY_BYTES`] (a body that inflates past it, or does not inflate, is
//! stored as it came). `parts` keeps bodies as they came.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;

use super::fields::protocol_name;
use crate::pipeline::event_fields::WallTime;
use crate::pipeline::txn::{MAX_BODY_BYTES, Message, ObjectParts, ObjectRole, Transaction};

/// How much of a transaction `http_capture` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    None,
    /// Metadata only: no headers, no bodies.
    Summary,
    /// Metadata and headers (`details` is Qtap's older name).
    Headers,
    /// Metadata, headers and bodies.
    Full,
}

impl Level {
    /// The level named `name`, if any (`details` = `headers`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Level::None,
            "summary" => Level::Summary,
            "headers" | "details" => Level::Headers,
            "full" => Level::Full,
            _ => return None,
        })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Summary => "summary",
            Level::Headers => "headers",
            Level::Full => "full",
        }
    }
}

/// The layout of stored objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Qtap's `http_transaction` object as JSON (`application/json`).
    Json,
    /// Qtap's `http_transaction` object as text (`text/plain`).
    Text,
    /// tapwire's content-addressed parts: one object per header block and body.
    Parts,
}

impl Format {
    /// The format named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "json" => Format::Json,
            "text" => Format::Text,
            "parts" => Format::Parts,
            _ => return None,
        })
    }

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Text => "text",
            Format::Parts => "parts",
        }
    }
}

/// MIME type of `format: json` objects.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// MIME type of `format: text` objects.
pub const TEXT_CONTENT_TYPE: &str = "text/plain";

/// The objects `level` and `format` make of `txn` (bodies and heads move out
/// for `parts`).
pub fn objects(
    txn: &mut Transaction,
    level: Level,
    format: Format,
    exe: Option<&str>,
) -> ObjectParts {
    match (level, format) {
        (Level::None, _) | (Level::Summary, Format::Parts) => ObjectParts::new(),
        (Level::Headers, Format::Parts) => txn.take_objects(|role| {
            matches!(
                role,
                ObjectRole::RequestHeaders | ObjectRole::ResponseHeaders
            )
        }),
        (Level::Full, Format::Parts) => txn.take_objects(|_| true),
        (level, Format::Json) => {
            let bytes = serde_json::to_vec(&artifact(txn, level, exe)).expect("object serializes");
            smallvec::smallvec![(
                ObjectRole::HttpTransaction,
                JSON_CONTENT_TYPE.into(),
                Bytes::from(bytes),
            )]
        }
        (level, Format::Text) => smallvec::smallvec![(
            ObjectRole::HttpTransaction,
            TEXT_CONTENT_TYPE.into(),
            Bytes::from(text(&artifact(txn, level, exe))),
        )],
    }
}

/// Qtap's `http_transaction` object; field order and omissions as Qtap's
/// `encoding/json` writes them.
#[derive(Serialize)]
struct Artifact<'a> {
    metadata: Metadata<'a>,
    request: Request<'a>,
    response: Response<'a>,
    #[serde(serialize_with = "crate::pipeline::event_fields::display")]
    transaction_time: WallTime,
    #[serde(skip_serializing_if = "is_zero")]
    duration_ms: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    direction: &'a str,
}

#[derive(Serialize)]
struct Metadata<'a> {
    process_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    process_exe: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    bytes_sent: u64,
    #[serde(skip_serializing_if = "is_zero")]
    bytes_received: u64,
    connection_id: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    endpoint_id: String,
}

#[derive(Serialize)]
struct Request<'a> {
    method: &'a str,
    url: String,
    scheme: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    authority: Option<&'a str>,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Base64<'a>>,
}

#[derive(Serialize)]
struct Response<'a> {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Base64<'a>>,
}

/// Bytes written as standard base64, as Go's `encoding/json` writes `[]byte`.
struct Base64<'a>(Cow<'a, [u8]>);

impl Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

/// Read buffer of the brotli decoder: the size its own examples use.
const BROTLI_BUFFER_BYTES: usize = 4096;

/// A message's body decoded by its `Content-Encoding` (`gzip`, `deflate`,
/// `br`), or as it came when it has another encoding, inflates past
/// [`MAX_BODY_BYTES`] or does not inflate.
pub(super) fn decoded(m: &Message) -> Cow<'_, [u8]> {
    let body = &m.body[..];
    let encoding = m.header("content-encoding").map(str::trim);
    let inflated = match encoding {
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => {
            inflate(flate2::read::MultiGzDecoder::new(body))
        }
        // `deflate` is zlib-wrapped (RFC 9110); some servers send it raw.
        Some(e) if e.eq_ignore_ascii_case("deflate") => {
            inflate(flate2::read::ZlibDecoder::new(body))
                .or_else(|| inflate(flate2::read::DeflateDecoder::new(body)))
        }
        Some(e) if e.eq_ignore_ascii_case("br") => inflate(brotli_decompressor::Decompressor::new(
            body,
            BROTLI_BUFFER_BYTES,
        )),
        _ => None,
    };
    inflated.map_or(Cow::Borrowed(body), Cow::Owned)
}

fn inflate(reader: impl std::io::Read) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= MAX_BODY_BYTES).then_some(out)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn artifact<'a>(txn: &'a Transaction, level: Level, exe: Option<&'a str>) -> Artifact<'a> {
    let scheme = if txn.tls { "https" } else { "http" };
    let url = if txn.path.starts_with('/') {
        format!("{scheme}://{}{}", txn.url().host(), txn.path)
    } else {
        txn.path.to_string()
    };
    let (sent, received) = {
        let req = txn.request.head_bytes + txn.request.body_bytes;
        let res = txn.response.head_bytes + txn.response.body_bytes;
        if txn.egress { (req, res) } else { (res, req) }
    };
    let with_headers = level >= Level::Headers;
    let with_bodies = level >= Level::Full;
    let body = |m: &'a Message| (with_bodies && !m.body.is_empty()).then(|| Base64(decoded(m)));
    let mut req_headers = BTreeMap::new();
    let mut res_headers = BTreeMap::new();
    if with_headers {
        req_headers = header_map(&txn.request);
        for (name, value) in [
            (":method", Some(txn.method.as_str())),
            (":path", Some(txn.path.as_str())),
            (":authority", txn.authority.as_deref()),
            (":scheme", Some(scheme)),
        ] {
            if let Some(value) = value {
                req_headers
                    .entry(name.to_owned())
                    .or_insert_with(|| value.to_owned());
            }
        }
        res_headers = header_map(&txn.response);
        if let Some(status) = txn.status {
            res_headers
                .entry(":status".to_owned())
                .or_insert_with(|| status.to_string());
        }
    }
    Artifact {
        metadata: Metadata {
            process_id: txn.conn.pid.to_string(),
            process_exe: exe,
            bytes_sent: sent,
            bytes_received: received,
            connection_id: txn.conn.conn_id.to_string(),
            endpoint_id: txn
                .domain()
                .map_or_else(|| txn.conn.remote.ip().to_string(), str::to_owned),
        },
        request: Request {
            method: &txn.method,
            url,
            scheme,
            path: &txn.path,
            authority: txn.authority.as_deref(),
            protocol: protocol_name(txn.protocol),
            user_agent: txn.request.header("user-agent"),
            content_type: txn.request.header("content-type"),
            headers: req_headers,
            body: body(&txn.request),
        },
        response: Response {
            status: txn.status.unwrap_or(0),
            content_type: txn.response.header("content-type"),
            headers: res_headers,
            body: body(&txn.response),
        },
        transaction_time: WallTime::of_monotonic(txn.end_ns),
        // Whole milliseconds, at least 1, as Qtap rounds.
        duration_ms: (txn.end_ns.saturating_sub(txn.start_ns) / 1_000_000).max(1),
        direction: crate::plan::direction_word(txn.egress, txn.conn.remote.ip()),
    }
}

/// A message's headers as one value per name, as Qtap's map holds them:
/// repeated fields joined with `, `.
pub(super) fn header_map(m: &Message) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in m.headers.iter() {
        map.entry(name.to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    map
}

/// Qtap's text layout (`HttpTransaction.ToString`), headers in name order.
fn text(a: &Artifact<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let time = a.transaction_time.to_string();
    let mut w = TextSink(&mut out);
    let _ = w.write_str("HTTP Transaction\n================\n\nMetadata:\n");
    // RFC 3339 to the second, as Qtap's text writes it.
    let _ = writeln!(w, "  Transaction Time: {}Z", &time[..time.len().min(19)]);
    if a.duration_ms > 0 {
        let _ = writeln!(w, "  Duration: {}ms", a.duration_ms);
    }
    let _ = writeln!(w, "  Direction: {}", a.direction);
    let _ = writeln!(w, "  Process ID: {}", a.metadata.process_id);
    if let Some(exe) = a.metadata.process_exe {
        let _ = writeln!(w, "  Process: {exe}");
    }
    let _ = writeln!(w, "  Bytes Sent: {}", a.metadata.bytes_sent);
    let _ = writeln!(w, "  Bytes Received: {}\n", a.metadata.bytes_received);
    let _ = writeln!(
        w,
        "Request:\n  Method: {}\n  URL: {}",
        a.request.method, a.request.url
    );
    if let Some(ct) = a.request.content_type {
        let _ = writeln!(w, "  Content-Type: {ct}");
    }
    headers_and_body(&mut out, &a.request.headers, a.request.body.as_ref());
    let mut w = TextSink(&mut out);
    let _ = writeln!(w, "\nResponse:\n  Status: {}", a.response.status);
    if let Some(ct) = a.response.content_type {
        let _ = writeln!(w, "  Content-Type: {ct}");
    }
    headers_and_body(&mut out, &a.response.headers, a.response.body.as_ref());
    out
}

fn headers_and_body(
    out: &mut Vec<u8>,
    headers: &BTreeMap<String, String>,
    body: Option<&Base64<'_>>,
) {
    if !headers.is_empty() {
        out.extend_from_slice(b"  Headers:\n");
        for (name, value) in headers {
            let _ = writeln!(TextSink(out), "    {name}: {value}");
        }
    }
    if let Some(body) = body {
        // The body as is (Qtap writes `string(body)`: bytes, not text).
        out.extend_from_slice(b"  Body:\n");
        out.extend_from_slice(&body.0);
        out.push(b'\n');
    }
}

/// `write!` into a byte buffer.
struct TextSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for TextSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(encoding: &str, body: &[u8]) -> Message {
        let mut m = Message::default();
        m.headers = [("Content-Encoding", encoding)].into_iter().collect();
        m.body = body.to_vec();
        m
    }

    /// `hello, brotli! hello, brotli! hello, brotli!\n` as the `brotli` tool
    /// (1.0.9, default quality) compresses it: 33 bytes for 45.
    const BROTLI: &[u8] = b"\x1f\x2c\x00\xf8\x1d\xa9\x53\x9f\xbb\x70\xad\x00\x22\x26\xa7\x42\xe8\x32\x8d\xed\x2d\x07\x51\x84\x9f\x12\xe0\x22\x9d\xee\xfd\x50\x00";

    #[test]
    fn brotli_bodies_are_decoded_and_bad_ones_kept_as_they_came() {
        let m = message("br", BROTLI);
        assert_eq!(
            &decoded(&m)[..],
            b"hello, brotli! hello, brotli! hello, brotli!\n"
        );
        assert_eq!(&decoded(&message(" BR ", BROTLI))[..], &decoded(&m)[..]);
        // Not brotli, or cut short: stored as it came.
        let bad = message("br", b"hello");
        assert_eq!(&decoded(&bad)[..], b"hello");
        let cut = message("br", &BROTLI[..20]);
        assert_eq!(&decoded(&cut)[..], &BROTLI[..20]);
        // Another encoding is not tried as brotli.
        assert_eq!(&decoded(&message("zstd", BROTLI))[..], BROTLI);
    }
}
