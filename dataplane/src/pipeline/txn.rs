//! HTTP transactions and connection summaries as they leave a shard, and their
//! event JSON (schema in `docs/stdout.md`).

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use compact_str::CompactString;
use serde::Serialize;
use smallvec::SmallVec;
use tapwire_store::access_url::AccessUrl;

use super::budget::{Budget, Charge, Use};
use super::event_fields::{self, MaskedTarget, Url, WallTime};
use super::input::ConnInfo;
use crate::attribution::Origin;

/// Most body bytes kept per message. Past it the body object is cut there and the
/// transaction is marked `truncated`; 32 MiB keeps a shard's memory bounded while
/// covering the bodies users inspect.
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// Version of the `http_transaction` event schema (`docs/stdout.md`). 2: header
/// maps left events for the header objects, replaced by an allow-list of fields.
pub const EVENT_SCHEMA: u32 = 2;

/// Application protocol of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    Http2,
    /// gRPC over HTTP/2.
    Grpc,
}

impl Protocol {
    /// The protocol's name in events (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

/// A message's header fields, in order: names and values in one text buffer,
/// and where each ends. Two allocations per message, where a `String` per
/// name and per value took two per field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderFields {
    /// Each field's name then its value, back to back.
    text: String,
    /// Per field: where its name ends and where its value ends in `text`
    /// (its name starts where the previous value ends).
    ends: Vec<(u32, u32)>,
}

impl HeaderFields {
    /// Fields copied from a parsed header block (bytes that are not UTF-8
    /// replaced, as `String::from_utf8_lossy` does).
    pub fn from_block(block: tapwire_http::Headers<'_>) -> Self {
        // Into the buffers of a finished transaction's fields when this
        // thread has some ([`HeaderFields::recycle`]).
        let HeaderFields { text, mut ends } = SPARE_FIELDS
            .with(|spare| spare.borrow_mut().pop())
            .unwrap_or_default();
        // Copied as bytes and checked as UTF-8 once for the whole block;
        // a block that is not UTF-8 is copied again field by field.
        let mut text = text.into_bytes();
        text.reserve(block.byte_len());
        ends.reserve(block.len());
        for (name, value) in block.iter() {
            event_fields::push_bytes(&mut text, name);
            let name_end = offset(text.len());
            event_fields::push_bytes(&mut text, value);
            ends.push((name_end, offset(text.len())));
        }
        match String::from_utf8(text) {
            Ok(text) => HeaderFields { text, ends },
            Err(_) => {
                let mut fields = HeaderFields {
                    text: String::with_capacity(block.byte_len()),
                    ends: Vec::with_capacity(block.len()),
                };
                fields.extend_block(block);
                fields
            }
        }
    }

    /// Bytes the fields hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// Keeps these fields' buffers, emptied, for this thread's next header
    /// block: a shard's transactions then take no allocation for their
    /// fields once it has finished a few. Small buffers only, and a bounded
    /// number of them ([`SPARE_FIELDS_MAX`] × [`SPARE_TEXT_MAX`] bytes per
    /// thread at most).
    pub fn recycle(mut self) {
        if self.text.capacity() > SPARE_TEXT_MAX || self.ends.capacity() > SPARE_TEXT_MAX / 16 {
            return;
        }
        self.text.clear();
        self.ends.clear();
        SPARE_FIELDS.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_FIELDS_MAX {
                spare.push(self);
            }
        });
    }

    /// Appends the fields of a parsed header block (trailers).
    pub fn extend_block(&mut self, block: tapwire_http::Headers<'_>) {
        for (name, value) in block.iter() {
            self.push(name, value);
        }
    }

    /// Appends one field.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let mut put = |bytes: &[u8]| {
            match std::str::from_utf8(bytes) {
                // SAFETY: `bytes` is UTF-8, so the text stays UTF-8.
                Ok(_) => event_fields::push_bytes(unsafe { self.text.as_mut_vec() }, bytes),
                Err(_) => self.text.push_str(&String::from_utf8_lossy(bytes)),
            }
            offset(self.text.len())
        };
        let name_end = put(name);
        let value_end = put(value);
        self.ends.push((name_end, value_end));
    }

    /// The fields as (name as on the wire, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans().map(|(start, name_end, value_end)| {
            (
                self.text.get(start..name_end).unwrap_or_default(),
                self.text.get(name_end..value_end).unwrap_or_default(),
            )
        })
    }

    /// The first value of field `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        // Lengths first: most fields are passed over without reading them.
        self.spans()
            .find(|&(start, name_end, _)| {
                name_end - start == name.len()
                    && tapwire_http::name_eq(
                        &self.text.as_bytes()[start..name_end],
                        name.as_bytes(),
                    )
            })
            .and_then(|(_, name_end, value_end)| self.text.get(name_end..value_end))
    }

    /// Per field: where its name starts, where its name ends (its value
    /// starts) and where its value ends.
    fn spans(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let span = (start, name_end as usize, value_end as usize);
            start = span.2;
            span
        })
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

thread_local! {
    /// Emptied fields of this thread's finished transactions.
    static SPARE_FIELDS: RefCell<Vec<HeaderFields>> = const { RefCell::new(Vec::new()) };
    /// Boxes of this thread's finished transactions, emptied: the boxes
    /// themselves are what is kept, each handed out again whole.
    #[allow(clippy::vec_box)]
    static SPARE_BOXES: RefCell<Vec<Box<std::mem::MaybeUninit<Transaction>>>> =
        const { RefCell::new(Vec::new()) };
}

/// Emptied fields, and boxes, a thread keeps at most.
const SPARE_FIELDS_MAX: usize = 64;

/// Largest text buffer kept for reuse, in bytes: most header blocks fit.
const SPARE_TEXT_MAX: usize = 4096;

/// A position in a header block's text. Header blocks are far below 4 GiB
/// (HTTP/1 64 KiB, HTTP/2 256 KiB).
fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(N, V)> for HeaderFields {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(fields: I) -> Self {
        let mut out = HeaderFields::default();
        for (name, value) in fields {
            out.push(name.as_ref(), value.as_ref());
        }
        out
    }
}

/// One side (request or response) of a transaction.
#[derive(Debug, Default)]
pub struct Message {
    /// Header fields (name as on the wire, value), in order.
    pub headers: HeaderFields,
    /// The header block as an object: the HTTP/1 head re-serialized, or HTTP/2
    /// fields as `name: value` lines.
    pub head: Vec<u8>,
    /// Header block size on the wire.
    pub head_bytes: u64,
    /// Body bytes kept (at most [`MAX_BODY_BYTES`]).
    pub body: Vec<u8>,
    /// Body bytes seen, kept or not.
    pub body_bytes: u64,
    /// The message ended.
    pub complete: bool,
    /// The memory budget refused a chunk: the rest of the body is not kept.
    pub shed: bool,
    /// Body bytes were not copied by the probes (graceful overload): the
    /// rest of the body is not kept either.
    pub hole: bool,
    /// The body is only counted ([`Message::count_body`]), never copied.
    counted_only: bool,
    /// What the kept body holds of the memory budget.
    charge: Charge,
    /// Body bytes the framing announced (Content-Length), up to
    /// [`BODY_HINT_MAX`]: the first allocation is made that size, so a body
    /// arriving in several records is not copied again as its buffer grows.
    body_hint: usize,
}

/// Body bytes a [`Message::push_body`] call did not keep, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotKept {
    /// Past [`MAX_BODY_BYTES`].
    pub over_limit: u64,
    /// Refused by the memory budget (this chunk or an earlier one).
    pub shed: u64,
    /// After a stretch of the body the probes did not copy.
    pub after_hole: u64,
}

impl NotKept {
    /// Whether every byte was kept.
    pub fn none(self) -> bool {
        self == NotKept::default()
    }
}

/// Unused room a taken body may keep: less is not worth a reallocation (a
/// body grown by doubling keeps at most its own length).
const BODY_SPARE_KEPT: usize = 64 << 10;

/// The largest first allocation a body's announced length asks for: past it
/// the buffer grows by doubling as the bytes arrive (a peer may announce more
/// than it sends).
pub const BODY_HINT_MAX: usize = 1 << 20;

impl Message {
    /// Bytes the message holds on the heap: its fields, head and body.
    pub fn heap_bytes(&self) -> usize {
        self.headers.heap_bytes() + self.head.capacity() + self.body.capacity()
    }

    /// Drops the head and the kept body, giving the body's room back to the
    /// budget, once the objects made of them hold what is kept (the
    /// message stays as it was in every other way: not shed, its sizes).
    pub fn drop_payload(&mut self) {
        self.head = Vec::new();
        self.release_body();
    }

    /// Frees the kept body and gives its room back to the budget; the bytes
    /// it kept.
    fn release_body(&mut self) -> u64 {
        let kept = self.body.len() as u64;
        self.body = Vec::new();
        self.charge.release();
        kept
    }

    /// The framing announced a body of `len` bytes.
    pub fn expect_body(&mut self, len: u64) {
        self.body_hint = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(BODY_HINT_MAX);
    }

    /// Appends body bytes, keeping at most [`MAX_BODY_BYTES`] and only while
    /// `budget` has room; once a chunk is refused the rest of the body is shed
    /// too (a body with a hole in it is of no use), the prefix kept.
    pub fn push_body(&mut self, chunk: &[u8], budget: &Arc<Budget>) -> NotKept {
        self.body_bytes += chunk.len() as u64;
        if self.counted_only {
            return NotKept::default();
        }
        if self.hole {
            return NotKept {
                after_hole: chunk.len() as u64,
                ..NotKept::default()
            };
        }
        if self.shed {
            return NotKept {
                shed: chunk.len() as u64,
                ..NotKept::default()
            };
        }
        let room = MAX_BODY_BYTES.saturating_sub(self.body.len());
        let take = chunk.len().min(room);
        if !self.reserve(take, budget) {
            // The prefix kept so far stays (marked truncated); the rest is shed.
            self.shed = true;
            return NotKept {
                shed: chunk.len() as u64,
                ..NotKept::default()
            };
        }
        self.body.extend_from_slice(&chunk[..take]);
        NotKept {
            over_limit: (chunk.len() - take) as u64,
            ..NotKept::default()
        }
    }

    /// Counts `len` body bytes without copying them: nothing downstream reads
    /// bodies. The rest of this body is only counted too (a reload that adds
    /// an object store mid-body does not make an object of its tail).
    pub fn count_body(&mut self, len: usize) {
        self.body_bytes += len as u64;
        self.counted_only = true;
    }

    /// `len` body bytes were not copied: they count in the body's size, and
    /// the prefix kept so far is all that is kept.
    pub fn skip_body(&mut self, len: u64) {
        self.body_bytes += len;
        self.hole = true;
    }

    /// Drops the kept body, giving its room back to the budget, for
    /// something that needs the room more (a record held in a reorder
    /// window): the rest of the body is shed too. The bytes dropped.
    pub fn drop_kept(&mut self) -> u64 {
        let kept = self.release_body();
        self.shed |= kept > 0;
        kept
    }

    /// Makes room for `more` body bytes, charging the budget for the buffer's
    /// whole capacity (what the allocator really holds): doubling while the
    /// budget allows, else exactly what is needed; false if even that does not
    /// fit.
    fn reserve(&mut self, more: usize, budget: &Arc<Budget>) -> bool {
        let (len, cap) = (self.body.len(), self.body.capacity());
        let needed = len + more;
        if needed <= cap {
            return true;
        }
        let first = if cap == 0 { self.body_hint } else { 0 };
        let doubled = needed.max(2 * cap).max(first).min(MAX_BODY_BYTES);
        for target in [doubled, needed] {
            if self.charge.grow(budget, target - cap, Use::Body) {
                self.body.reserve_exact(target - len);
                return true;
            }
        }
        false
    }

    /// Takes the kept body out for its object. The body keeps its charge on
    /// the budget until the last holder of the bytes drops them (a store's
    /// queue once written or spooled, a duplicate at once), so bodies waiting
    /// in store queues count against the same budget as bodies being
    /// assembled.
    ///
    /// A body cut short (bytes the probes did not copy, or shed) keeps room
    /// for bytes that never came: the buffer made for its announced length.
    /// That room is given back first, to the allocator and the budget: a
    /// store's queue counts an object's bytes, so 4 KiB kept of a 1 MiB
    /// upload would otherwise hold 1 MiB of the budget while it waits.
    pub fn take_body(&mut self) -> Bytes {
        let mut body = std::mem::take(&mut self.body);
        let mut charge = std::mem::take(&mut self.charge);
        let spare = body.capacity() - body.len();
        if spare > body.len() && spare > BODY_SPARE_KEPT {
            let before = body.capacity();
            body.shrink_to_fit();
            charge.shrink(before - body.capacity());
        }
        Bytes::from_owner(ChargedBody {
            body,
            _charge: charge,
        })
    }

    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// A body taken out for its object, with what it holds of the memory budget.
struct ChargedBody {
    body: Vec<u8>,
    _charge: Charge,
}

impl AsRef<[u8]> for ChargedBody {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// A request and its response.
#[derive(Debug)]
pub struct Transaction {
    /// The connection.
    pub conn: ConnInfo,
    /// Request id, unique among the agent's requests while it runs (set when
    /// the transaction leaves its shard; 0 before).
    pub request_id: u64,
    /// Thread that sent or received the request.
    pub tid: u32,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
    /// `egress` when the traced process sent the request.
    pub egress: bool,
    /// Protocol.
    pub protocol: Protocol,
    /// Captured inside a TLS library.
    pub tls: bool,
    /// The server name (SNI) of the connection's TLS ClientHello.
    pub tls_sni: Option<Arc<str>>,
    /// Method. Held inline, as `authority` and `path` are when short (up to
    /// 24 bytes): no allocation for most requests.
    pub method: CompactString,
    /// Host or `:authority`.
    pub authority: Option<CompactString>,
    /// Request target.
    pub path: CompactString,
    /// Final status.
    pub status: Option<u16>,
    /// gRPC status.
    pub grpc_status: Option<u32>,
    /// The request.
    pub request: Message,
    /// The response.
    pub response: Message,
    /// First request byte, kernel monotonic ns.
    pub start_ns: u64,
    /// Last response byte, kernel monotonic ns.
    pub end_ns: u64,
    /// Bytes were not captured or not kept.
    pub truncated: bool,
    /// Records were lost in the middle.
    pub gap: bool,
    /// HTTP/2 headers decoded without full HPACK state.
    pub incomplete_headers: bool,
}

/// Which part of a transaction an object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectRole {
    /// Request header block.
    RequestHeaders,
    /// Request body.
    RequestBody,
    /// Response header block.
    ResponseHeaders,
    /// Response body.
    ResponseBody,
    /// The whole transaction in Qtap's `http_transaction` layout
    /// (`http_capture` format `json` or `text`).
    HttpTransaction,
}

impl ObjectRole {
    /// The role's name in events (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            ObjectRole::RequestHeaders => "request_headers",
            ObjectRole::RequestBody => "request_body",
            ObjectRole::ResponseHeaders => "response_headers",
            ObjectRole::ResponseBody => "response_body",
            ObjectRole::HttpTransaction => "http_transaction",
        }
    }
}

/// An object as an event refers to it.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    /// Which part.
    pub role: ObjectRole,
    /// BLAKE3 of its bytes (written as hex).
    pub digest: blake3::Hash,
    /// Bytes.
    pub size: usize,
    /// MIME type.
    pub content_type: Arc<str>,
    /// The `access_url` template of the first object store that has one,
    /// filled with `digest` as the event is written; `None` when the object
    /// was not kept. The shard's own copy ([`UrlTemplates`]).
    pub url: Option<Arc<AccessUrl>>,
    /// Every object store kept the object (spooled it, or wrote it out); `false`
    /// when one refused it (full spool or disk, full queue, write error).
    pub kept: bool,
}

impl ObjectRef {
    /// The object's URL as text (events write it without this string).
    pub fn url_text(&self) -> Option<String> {
        self.url.as_ref().map(|u| u.render(&self.digest))
    }
}

impl Serialize for ObjectRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut o = s.serialize_struct("ObjectRef", 6)?;
        o.serialize_field("role", &self.role)?;
        o.serialize_field(
            "digest",
            tapwire_store::hex::DigestHex::new(&self.digest).as_str(),
        )?;
        o.serialize_field("size", &self.size)?;
        o.serialize_field("content_type", &self.content_type)?;
        o.serialize_field("url", &self.url_text())?;
        o.serialize_field("kept", &self.kept)?;
        o.end()
    }
}

/// One shard's copies of its object stores' `access_url` templates, which
/// its [`ObjectRef`]s hold until their events are written: a reference
/// count only that shard touches, where one `Arc` per store was a cache line
/// every shard would move, and a rendered `String` per object an allocation.
#[derive(Debug, Default)]
pub struct UrlTemplates {
    held: Vec<Arc<AccessUrl>>,
}

/// Templates a shard keeps before letting go of those no event holds (more
/// come only when a reload changes a store's `access_url`).
const URL_TEMPLATES_KEPT: usize = 8;

impl UrlTemplates {
    /// The shard's copy of `url`: found by identity (a clone of the store's
    /// template, [`AccessUrl::is_copy_of`]), not by comparing the text.
    pub fn copy_of(&mut self, url: &AccessUrl) -> Arc<AccessUrl> {
        if let Some(held) = self.held.iter().find(|h| h.is_copy_of(url)) {
            return Arc::clone(held);
        }
        if self.held.len() >= URL_TEMPLATES_KEPT {
            self.held.retain(|h| Arc::strong_count(h) > 1);
        }
        let copy = Arc::new(url.clone());
        self.held.push(Arc::clone(&copy));
        copy
    }
}

/// MIME type of header-block objects.
pub const HEADERS_CONTENT_TYPE: &str = "application/http-headers";

/// An object a transaction makes: its role, MIME type and bytes.
pub type ObjectPart = (ObjectRole, Arc<str>, Bytes);

/// Objects a transaction's lists hold without an allocation of their own:
/// its two header blocks, two bodies and a `detect_errors` record.
pub const INLINE_OBJECTS: usize = 5;

/// A transaction's objects.
pub type ObjectParts = SmallVec<[ObjectPart; INLINE_OBJECTS]>;

/// What a transaction's event says of its objects.
pub type ObjectRefs = SmallVec<[ObjectRef; INLINE_OBJECTS]>;

/// Each object's role, by its index.
pub type ObjectRoles = SmallVec<[ObjectRole; INLINE_OBJECTS]>;

/// [`HEADERS_CONTENT_TYPE`], one copy per thread shared by the header-block
/// objects it makes: one copy for the whole process had a reference count
/// that every shard moved, several times per transaction.
pub fn headers_content_type() -> Arc<str> {
    thread_local! {
        static OWN: Arc<str> = Arc::from(HEADERS_CONTENT_TYPE);
    }
    OWN.with(Arc::clone)
}

/// Body MIME types this thread has seen lately, shared by the objects that
/// carry them: a busy node sends the same few over and over, and a new
/// `Arc<str>` per body was an allocation that a store thread then freed.
const RECENT_CONTENT_TYPES: usize = 8;

/// `value` as a shared MIME type: a copy this thread made lately, or a new
/// one that replaces the oldest.
fn body_content_type(value: &str) -> Arc<str> {
    thread_local! {
        static RECENT: std::cell::RefCell<(usize, [Option<Arc<str>>; RECENT_CONTENT_TYPES])> =
            const { std::cell::RefCell::new((0, [const { None }; RECENT_CONTENT_TYPES])) };
    }
    RECENT.with(|cell| {
        let Ok(mut recent) = cell.try_borrow_mut() else {
            return Arc::from(value);
        };
        let (next, types) = &mut *recent;
        if let Some(known) = types.iter().flatten().find(|t| ***t == *value) {
            return Arc::clone(known);
        }
        let new: Arc<str> = Arc::from(value);
        types[*next] = Some(Arc::clone(&new));
        *next = (*next + 1) % RECENT_CONTENT_TYPES;
        new
    })
}

impl Transaction {
    /// For tests: `curl` (pid 1) on 127.0.0.1:50000 sending `GET /x` over
    /// HTTP/1.1 to 127.0.0.1:80, answered 200 after 1 ms, with empty
    /// messages; tests change what they look at.
    #[cfg(test)]
    pub fn for_test() -> Self {
        Transaction {
            conn: ConnInfo {
                conn_id: 7,
                pid: 1,
                tid: 1,
                comm: "curl".into(),
                cgroup_id: 1,
                local: "127.0.0.1:50000".parse().expect("address"),
                remote: "127.0.0.1:80".parse().expect("address"),
                role: super::input::Role::Client,
                ts_ns: 1,
            },
            request_id: 1,
            tid: 1,
            stream_id: None,
            egress: true,
            protocol: Protocol::Http1,
            tls: false,
            tls_sni: None,
            method: "GET".into(),
            authority: Some("a.test".into()),
            path: "/x".into(),
            status: Some(200),
            grpc_status: None,
            request: Message::default(),
            response: Message::default(),
            start_ns: 1_000_000_000,
            end_ns: 1_001_000_000,
            truncated: false,
            gap: false,
            incomplete_headers: false,
        }
    }

    /// `self` boxed, in the box of a finished transaction when this thread
    /// has one ([`Transaction::recycle`]).
    pub fn boxed(self) -> Box<Transaction> {
        match SPARE_BOXES.with(|spare| spare.borrow_mut().pop()) {
            Some(spare) => Box::write(spare, self),
            None => Box::new(self),
        }
    }

    /// Done with: its header fields' buffers ([`HeaderFields::recycle`]) and
    /// its box go to this thread's next transactions. Everything else it
    /// held (bodies, names) is dropped now.
    pub fn recycle(mut self: Box<Self>) {
        std::mem::take(&mut self.request.headers).recycle();
        std::mem::take(&mut self.response.headers).recycle();
        let raw = Box::into_raw(self);
        // SAFETY: `raw` is a live, owned `Transaction` (from the box), dropped
        // here once; the box is then kept as the uninitialised memory it now
        // is (`MaybeUninit<T>` has `T`'s layout) or freed as such.
        let spare = unsafe {
            std::ptr::drop_in_place(raw);
            Box::from_raw(raw.cast::<std::mem::MaybeUninit<Transaction>>())
        };
        SPARE_BOXES.with(|boxes| {
            let mut boxes = boxes.borrow_mut();
            if boxes.len() < SPARE_FIELDS_MAX {
                boxes.push(spare);
            }
        });
    }

    /// Bytes the transaction holds, about: its own size and what its
    /// messages and names hold on the heap.
    pub fn held_bytes(&self) -> usize {
        let name = |s: &CompactString| {
            if s.is_heap_allocated() {
                s.capacity()
            } else {
                0
            }
        };
        std::mem::size_of::<Self>()
            + self.request.heap_bytes()
            + self.response.heap_bytes()
            + name(&self.method)
            + name(&self.path)
            + self.authority.as_ref().map_or(0, name)
    }

    /// Drops both messages' heads and bodies ([`Message::drop_payload`]):
    /// once its objects are made, an event needs neither.
    pub fn drop_payload(&mut self) {
        self.request.drop_payload();
        self.response.drop_payload();
    }

    /// The destination's domain: the TLS server name when the connection
    /// sent one, else the host of `Host`/`:authority` (the domain
    /// `tap.endpoints` and `dst.domain` use).
    pub fn domain(&self) -> Option<&str> {
        self.tls_sni
            .as_deref()
            .or_else(|| self.authority.as_deref().map(event_fields::host_of))
    }

    /// The full URL: scheme, `Host`/`:authority` (else the TLS server name,
    /// else the remote address) and the target, credentials masked.
    pub fn url(&self) -> Url<'_> {
        let server = if self.egress {
            self.conn.remote
        } else {
            self.conn.local
        };
        Url {
            tls: self.tls,
            authority: self.authority.as_deref(),
            sni: self.tls_sni.as_deref().map(|name| (name, server.port())),
            remote: self.conn.remote,
            target: &self.path,
        }
    }

    /// What its kept bodies hold of the memory budget.
    pub fn kept_body_room(&self) -> usize {
        self.request.body.capacity() + self.response.body.capacity()
    }

    /// Drops the kept bodies ([`Message::drop_kept`]); the transaction is
    /// marked `truncated` if that dropped bytes. The bytes dropped.
    pub fn drop_kept_bodies(&mut self) -> u64 {
        let dropped = self.request.drop_kept() + self.response.drop_kept();
        self.truncated |= dropped > 0;
        dropped
    }

    /// `len` bytes of the body travelling in `direction` were not copied
    /// (graceful overload): the transaction is marked `truncated`.
    pub fn body_hole(&mut self, direction: tapwire_http::Direction, len: u64) {
        let msg = match direction {
            tapwire_http::Direction::Request => &mut self.request,
            tapwire_http::Direction::Response => &mut self.response,
        };
        msg.skip_body(len);
        self.truncated = true;
    }

    /// The transaction's objects with their MIME types: each header block, and
    /// each body that is not empty, of the roles `want` takes. Those heads and
    /// bodies move out (no copy); the others and the event fields stay.
    pub fn take_objects(&mut self, want: impl Fn(ObjectRole) -> bool) -> ObjectParts {
        let mut out = ObjectParts::new();
        for (msg, head_role, body_role) in [
            (
                &mut self.request,
                ObjectRole::RequestHeaders,
                ObjectRole::RequestBody,
            ),
            (
                &mut self.response,
                ObjectRole::ResponseHeaders,
                ObjectRole::ResponseBody,
            ),
        ] {
            if !msg.head.is_empty() && want(head_role) {
                // As a boxed slice: `Bytes` made from a part-used `Vec`
                // allocates its shared count at once; shrinking it is done in
                // place.
                let head = Bytes::from(std::mem::take(&mut msg.head).into_boxed_slice());
                out.push((head_role, headers_content_type(), head));
            }
            if !msg.body.is_empty() && want(body_role) {
                let ct = body_content_type(
                    msg.header("content-type")
                        .unwrap_or("application/octet-stream"),
                );
                out.push((body_role, ct, msg.take_body()));
            }
        }
        out
    }

    /// The fields that say which transaction an event is about and where it
    /// ran, with the process's executable if known.
    pub fn identity<'a>(&'a self, exe: Option<&'a str>, origin: &'a Origin<'a>) -> TxnIdentity<'a> {
        TxnIdentity {
            conn_id: self.conn.conn_id,
            request_id: self.request_id,
            stream_id: self.stream_id,
            pid: self.conn.pid,
            tid: self.tid,
            comm: &self.conn.comm,
            exe,
            cgroup_id: self.conn.cgroup_id,
            origin,
            direction: event_fields::direction_word(self.egress, self.conn.remote.ip()),
            local: self.conn.local,
            remote: self.conn.remote,
            protocol: self.protocol,
            tls: self.tls,
            tls_sni: self.tls_sni.as_deref(),
            method: &self.method,
            authority: self.authority.as_deref(),
            path: MaskedTarget(&self.path),
            url: self.url(),
            status: self.status,
        }
    }

    /// The event JSON, with `objects` already stored, the process's executable
    /// if known, and where it runs. One is written per transaction, so it is
    /// written field by field ([`event_fields::JsonObject`]); the fields are
    /// those of `docs/stdout.md`, in that order, and a test holds them to what
    /// serde writes for them ([`Self::event_json_reference`]).
    pub fn event_json(
        &self,
        objects: &[ObjectRef],
        exe: Option<&str>,
        origin: &Origin<'_>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(EVENT_CAPACITY);
        self.write_event_json(&mut out, objects, exe, origin);
        out
    }

    /// [`Self::event_json`], appended to `out`.
    pub fn write_event_json(
        &self,
        out: &mut Vec<u8>,
        objects: &[ObjectRef],
        exe: Option<&str>,
        origin: &Origin<'_>,
    ) {
        let mut e = event_fields::JsonObject::new(out);
        e.key("type").word("http_transaction");
        e.key("schema").uint(EVENT_SCHEMA);
        e.key("timestamp")
            .wall_time(WallTime::of_monotonic(self.start_ns));
        self.write_identity(&mut e, exe, origin);
        e.key("grpc_status").opt_uint(self.grpc_status);
        e.key("request_content_type")
            .opt_str(self.request.header("content-type"));
        e.key("response_content_type")
            .opt_str(self.response.header("content-type"));
        e.key("user_agent")
            .opt_str(self.request.header("user-agent"));
        if let Some(token) = event_fields::AuthToken::find(&self.request.headers) {
            e.key("auth_token_source").str(token.source);
            e.key("auth_token_type").str(token.kind);
            match token.last4 {
                Some(last4) => e
                    .key("auth_token_mask")
                    .display(&format_args!("...{last4}")),
                None => e.key("auth_token_mask").null(),
            }
        }
        e.key("request_header_bytes").uint(self.request.head_bytes);
        e.key("response_header_bytes")
            .uint(self.response.head_bytes);
        e.key("request_body_bytes").uint(self.request.body_bytes);
        e.key("response_body_bytes").uint(self.response.body_bytes);
        e.key("start_ns").uint(self.start_ns);
        e.key("end_ns").uint(self.end_ns);
        e.key("duration_ms")
            .float(self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6);
        e.key("truncated").bool(self.truncated);
        e.key("gap").bool(self.gap);
        e.key("incomplete_headers").bool(self.incomplete_headers);
        e.key("objects");
        let list = e.raw();
        list.push(b'[');
        for (i, object) in objects.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            let mut o = event_fields::JsonObject::new(list);
            o.key("role").word(object.role.name());
            o.key("digest").digest(&object.digest);
            o.key("size").uint(object.size as u64);
            o.key("content_type").str(&object.content_type);
            match &object.url {
                Some(url) => o.key("url").access_url(url, &object.digest),
                None => o.key("url").null(),
            }
            o.key("kept").bool(object.kept);
            o.end();
        }
        list.push(b']');
        e.end();
    }

    /// [`TxnIdentity`]'s fields, written by hand for [`Self::event_json`].
    fn write_identity(
        &self,
        e: &mut event_fields::JsonObject<'_>,
        exe: Option<&str>,
        origin: &Origin<'_>,
    ) {
        e.key("conn_id").uint(self.conn.conn_id);
        e.key("request_id").uint(self.request_id);
        e.key("stream_id").opt_uint(self.stream_id);
        e.key("pid").uint(self.conn.pid);
        e.key("tid").uint(self.tid);
        e.key("comm").str(&self.conn.comm);
        e.key("exe").opt_str(exe);
        e.key("cgroup_id").uint(self.conn.cgroup_id);
        e.key("host").str(origin.host);
        for (key, value) in origin.place.fields() {
            if let Some(value) = value {
                e.key(key).str(value);
            }
        }
        e.key("direction").word(event_fields::direction_word(
            self.egress,
            self.conn.remote.ip(),
        ));
        e.key("local").socket_addr(&self.conn.local);
        e.key("remote").socket_addr(&self.conn.remote);
        e.key("protocol").word(self.protocol.name());
        e.key("tls").bool(self.tls);
        e.key("tls_sni").opt_str(self.tls_sni.as_deref());
        e.key("method").str(&self.method);
        e.key("authority").opt_str(self.authority.as_deref());
        e.key("path").display(&MaskedTarget(&self.path));
        e.key("url").display(&self.url());
        e.key("status").opt_uint(self.status);
    }

    /// [`Self::event_json`] as serde writes the same fields: what the
    /// hand-written event is held to.
    #[cfg(test)]
    pub fn event_json_reference(
        &self,
        objects: &[ObjectRef],
        exe: Option<&str>,
        origin: &Origin<'_>,
    ) -> Vec<u8> {
        #[derive(Serialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            schema: u32,
            #[serde(serialize_with = "event_fields::display")]
            timestamp: WallTime,
            #[serde(flatten)]
            identity: TxnIdentity<'a>,
            grpc_status: Option<u32>,
            request_content_type: Option<&'a str>,
            response_content_type: Option<&'a str>,
            user_agent: Option<&'a str>,
            #[serde(flatten)]
            auth_token: Option<event_fields::AuthTokenFields<'a>>,
            request_header_bytes: u64,
            response_header_bytes: u64,
            request_body_bytes: u64,
            response_body_bytes: u64,
            start_ns: u64,
            end_ns: u64,
            duration_ms: f64,
            truncated: bool,
            gap: bool,
            incomplete_headers: bool,
            objects: &'a [ObjectRef],
        }
        let event = Event {
            kind: "http_transaction",
            schema: EVENT_SCHEMA,
            timestamp: WallTime::of_monotonic(self.start_ns),
            identity: self.identity(exe, origin),
            grpc_status: self.grpc_status,
            request_content_type: self.request.header("content-type"),
            response_content_type: self.response.header("content-type"),
            user_agent: self.request.header("user-agent"),
            auth_token: event_fields::AuthToken::find(&self.request.headers).map(Into::into),
            request_header_bytes: self.request.head_bytes,
            response_header_bytes: self.response.head_bytes,
            request_body_bytes: self.request.body_bytes,
            response_body_bytes: self.response.body_bytes,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            duration_ms: self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6,
            truncated: self.truncated,
            gap: self.gap,
            incomplete_headers: self.incomplete_headers,
            objects,
        };
        event_bytes(&event)
    }
}

/// The fields that say which transaction an event is about and where it ran,
/// in the order events write them: shared by a transaction's
/// `http_transaction` event and its `issue` events.
#[derive(Serialize)]
pub struct TxnIdentity<'a> {
    conn_id: u64,
    request_id: u64,
    stream_id: Option<u32>,
    pid: u32,
    tid: u32,
    comm: &'a str,
    exe: Option<&'a str>,
    cgroup_id: u64,
    #[serde(flatten)]
    origin: &'a Origin<'a>,
    direction: &'static str,
    #[serde(serialize_with = "event_fields::display")]
    local: std::net::SocketAddr,
    #[serde(serialize_with = "event_fields::display")]
    remote: std::net::SocketAddr,
    protocol: Protocol,
    tls: bool,
    tls_sni: Option<&'a str>,
    method: &'a str,
    authority: Option<&'a str>,
    #[serde(serialize_with = "event_fields::display")]
    path: MaskedTarget<'a>,
    #[serde(serialize_with = "event_fields::display")]
    url: Url<'a>,
    status: Option<u16>,
}

fn role_name(role: super::input::Role) -> &'static str {
    match role {
        super::input::Role::Client => "client",
        super::input::Role::Server => "server",
        super::input::Role::Unknown => "unknown",
    }
}

/// The fields every `connection` event carries.
#[derive(Serialize)]
struct ConnFields<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    conn_id: u64,
    pid: u32,
    comm: &'a str,
    cgroup_id: u64,
    #[serde(flatten)]
    origin: &'a Origin<'a>,
    role: &'static str,
    direction: &'static str,
    #[serde(serialize_with = "event_fields::display")]
    local: std::net::SocketAddr,
    #[serde(serialize_with = "event_fields::display")]
    remote: std::net::SocketAddr,
}

impl<'a> ConnFields<'a> {
    fn new(c: &'a ConnInfo, event: &'static str, origin: &'a Origin<'a>) -> Self {
        ConnFields {
            kind: "connection",
            event,
            conn_id: c.conn_id,
            pid: c.pid,
            comm: &c.comm,
            cgroup_id: c.cgroup_id,
            origin,
            role: role_name(c.role),
            direction: match c.role {
                super::input::Role::Server => "ingress",
                super::input::Role::Client => event_fields::direction_word(true, c.remote.ip()),
                super::input::Role::Unknown => "unknown",
            },
            local: c.local,
            remote: c.remote,
        }
    }
}

/// The `connection` open event JSON.
pub fn open_event_json(c: &ConnInfo, origin: &Origin<'_>) -> Vec<u8> {
    event_bytes(&ConnFields::new(c, "open", origin))
}

/// A connection that closed, for its `connection` event.
#[derive(Debug)]
pub struct ConnSummary {
    /// The connection.
    pub conn: ConnInfo,
    /// Whether TLS plaintext was seen.
    pub tls: bool,
    /// The server name (SNI) of its TLS ClientHello.
    pub tls_sni: Option<Arc<str>>,
    /// Payload bytes the process wrote.
    pub bytes_sent: u64,
    /// Payload bytes the process read.
    pub bytes_received: u64,
    /// Close time, kernel monotonic ns.
    pub close_ns: u64,
}

impl ConnSummary {
    /// The `connection` close event JSON.
    pub fn event_json(&self, origin: &Origin<'_>) -> Vec<u8> {
        #[derive(Serialize)]
        struct Event<'a> {
            #[serde(flatten)]
            conn: ConnFields<'a>,
            tls: bool,
            tls_sni: Option<&'a str>,
            bytes_sent: u64,
            bytes_received: u64,
            duration_ms: f64,
        }
        let event = Event {
            conn: ConnFields::new(&self.conn, "close", origin),
            tls: self.tls,
            tls_sni: self.tls_sni.as_deref(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            duration_ms: self.close_ns.saturating_sub(self.conn.ts_ns) as f64 / 1e6,
        };
        event_bytes(&event)
    }
}

/// Bytes an event's JSON usually fits in (a transaction event is about 1 KiB):
/// one allocation instead of the several a small start would grow through.
const EVENT_CAPACITY: usize = 1536;

/// `event` as JSON.
pub(crate) fn event_bytes(event: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(EVENT_CAPACITY);
    serde_json::to_writer(&mut out, event).expect("event serializes");
    out
}

#[cfg(test)]
mod tests {
    use super::HeaderFields;

    #[test]
    fn a_shard_holds_one_copy_per_template_and_lets_go_of_unheld_ones() {
        use super::{AccessUrl, URL_TEMPLATES_KEPT, UrlTemplates};
        use std::sync::Arc;
        let mut urls = UrlTemplates::default();
        let template =
            |n: usize| AccessUrl::new(&format!("s3://b/{n}/{{{{DIGEST}}}}"), "s3", "e", "b");
        // A store's template, asked for again and again, and a clone of it.
        let store = template(0);
        let first = urls.copy_of(&store);
        let again = urls.copy_of(&store);
        assert!(Arc::ptr_eq(&first, &again), "one copy per template");
        assert!(Arc::ptr_eq(&first, &urls.copy_of(&store.clone())));
        // Another store's template, the same text: a copy of its own.
        let other = urls.copy_of(&template(0));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(*first, *other, "equal text");
        drop(other);
        // Reloads that change the template: copies no reference holds go
        // once the kept number is reached; held ones stay.
        for n in 1..=3 * URL_TEMPLATES_KEPT {
            let _ = urls.copy_of(&template(n));
        }
        assert!(
            urls.held.len() <= URL_TEMPLATES_KEPT + 1,
            "{}",
            urls.held.len()
        );
        assert!(urls.held.iter().any(|h| Arc::ptr_eq(h, &first)));
        let digest = blake3::hash(b"x");
        assert_eq!(
            first.render(&digest),
            format!("s3://b/0/{}", digest.to_hex())
        );
    }

    #[test]
    fn header_block_mime_type_is_one_copy_per_thread() {
        use super::headers_content_type;
        use std::sync::Arc;
        let here = headers_content_type();
        assert!(Arc::ptr_eq(&here, &headers_content_type()));
        let there = std::thread::spawn(headers_content_type).join().unwrap();
        assert_eq!(there, here);
        assert!(!Arc::ptr_eq(&here, &there));
    }

    #[test]
    fn body_mime_types_are_shared_while_recent() {
        use super::{RECENT_CONTENT_TYPES, body_content_type};
        use std::sync::Arc;
        let first = body_content_type("text/html");
        let again = body_content_type("text/html");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*body_content_type("text/plain"), "text/plain");
        for i in 0..RECENT_CONTENT_TYPES {
            assert_eq!(&*body_content_type(&format!("x/{i}")), format!("x/{i}"));
        }
        let later = body_content_type("text/html");
        assert_eq!(&*later, "text/html");
        assert!(!Arc::ptr_eq(&first, &later), "forgotten after 8 others");
    }

    #[test]
    fn header_fields_keep_order_case_repeats_and_replace_what_is_not_utf8() {
        let mut fields = HeaderFields::from_iter([
            ("Host", &b"api.test"[..]),
            ("Set-Cookie", b"a=1"),
            ("set-cookie", b"b=2"),
            ("X-Empty", b""),
            ("X-Bytes", b"caf\xe9"),
        ]);
        fields.push(b"", b"after an empty name");
        assert_eq!(fields.len(), 6);
        assert_eq!(
            fields.iter().collect::<Vec<_>>(),
            [
                ("Host", "api.test"),
                ("Set-Cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("X-Empty", ""),
                ("X-Bytes", "caf\u{fffd}"),
                ("", "after an empty name"),
            ]
        );
        assert_eq!(fields.get("HOST"), Some("api.test"));
        assert_eq!(fields.get("set-cookie"), Some("a=1"));
        assert_eq!(fields.get("x-empty"), Some(""));
        assert_eq!(fields.get("x-bytes"), Some("caf\u{fffd}"));
        assert_eq!(fields.get("hos"), None);
        assert_eq!(fields.get("hostt"), None);
        assert!(HeaderFields::default().is_empty());
        assert_eq!(HeaderFields::default().get("host"), None);
    }

    #[test]
    fn recycled_fields_and_boxes_keep_nothing_of_the_transaction_before() {
        use super::{SPARE_BOXES, SPARE_FIELDS, Transaction};
        use tapwire_http::FieldSpan;
        let span = |name: (u32, u32), value: (u32, u32)| FieldSpan {
            name_start: name.0,
            name_len: name.1,
            value_start: value.0,
            value_len: value.1,
        };
        std::thread::spawn(move || {
            let first = b"Authorization: Bearer secret-token\r\nX-Long: 0123456789\r\n";
            let spans = [span((0, 13), (15, 19)), span((36, 6), (44, 10))];
            let mut txn = Transaction::for_test();
            txn.request.headers =
                HeaderFields::from_block(tapwire_http::Headers::new(first, &spans));
            txn.response.headers =
                HeaderFields::from_block(tapwire_http::Headers::new(first, &spans[1..]));
            txn.path = "/old".into();
            txn.boxed().recycle();
            assert_eq!(SPARE_FIELDS.with(|s| s.borrow().len()), 2);
            assert_eq!(SPARE_BOXES.with(|s| s.borrow().len()), 1);
            // The next transaction on this thread reuses both buffers and
            // the box, and holds only its own fields.
            let next = b"Host: a\r\n";
            let fields =
                HeaderFields::from_block(tapwire_http::Headers::new(next, &[span((0, 4), (6, 1))]));
            assert_eq!(fields.iter().collect::<Vec<_>>(), [("Host", "a")]);
            assert_eq!(fields.get("authorization"), None);
            assert_eq!(SPARE_FIELDS.with(|s| s.borrow().len()), 1, "buffers reused");
            let mut txn = Transaction::for_test();
            txn.path = "/new".into();
            let boxed = txn.boxed();
            assert_eq!(SPARE_BOXES.with(|s| s.borrow().len()), 0, "box reused");
            assert_eq!(boxed.path, "/new");
            assert!(boxed.request.headers.is_empty());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_parsed_block_is_copied_whole_or_field_by_field_when_not_utf8() {
        use tapwire_http::FieldSpan;
        let span = |name: (u32, u32), value: (u32, u32)| FieldSpan {
            name_start: name.0,
            name_len: name.1,
            value_start: value.0,
            value_len: value.1,
        };
        let utf8 = b"Host: a.test\r\nX-Name: caf\xc3\xa9\r\n";
        let spans = [span((0, 4), (6, 6)), span((14, 6), (22, 5))];
        let fields = HeaderFields::from_block(tapwire_http::Headers::new(utf8, &spans));
        assert_eq!(
            fields.iter().collect::<Vec<_>>(),
            [("Host", "a.test"), ("X-Name", "café")]
        );
        let mut not_utf8 = utf8.to_vec();
        not_utf8[25] = 0xff;
        let mut fields = HeaderFields::from_block(tapwire_http::Headers::new(&not_utf8, &spans));
        assert_eq!(
            fields.iter().collect::<Vec<_>>(),
            [("Host", "a.test"), ("X-Name", "caf\u{fffd}\u{fffd}")]
        );
        fields.extend_block(tapwire_http::Headers::new(utf8, &spans[..1]));
        assert_eq!(fields.get("x-name"), Some("caf\u{fffd}\u{fffd}"));
        assert_eq!(fields.iter().last(), Some(("Host", "a.test")));
        assert_eq!(fields.len(), 3);
    }
}
