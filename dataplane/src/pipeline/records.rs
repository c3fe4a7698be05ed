//! `artifact_record` events: one per object a request stored, per object store,
//! once that store holds the object durably (S3: uploaded, or found there
//! already; stdout: its line written). Qtap's `ArtifactRecord`, in tapwire's
//! event schema (`docs/stdout.md`), sent to the event stores the object
//! store's `event_store` names (every one by default).
//!
//! The shard only attaches a [`Notice`] to each object's ticket: an `Arc` of
//! the request's [`RequestRecord`] and the object's index. The store tells the
//! notice once it holds the object, and the event is serialized and emitted
//! on the thread that tells it: the store's own after an upload or a written
//! line, the shard's for an object S3 has uploaded before (the common case
//! of a busy node), where the event joins the shard's block for the round
//! ([`super::batch`]). Event stores never block and count what they drop; an
//! object store counts the notices it had to drop
//! (`artifact_records_dropped`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use compact_str::CompactString;
use tapwire_store::{Announce, EventStore, HoldsReceipt, Notice, Receipt, Stored, WrittenAhead};

use super::event_fields::{self, WallTime};
use super::txn::{ObjectRole, ObjectRoles, Protocol, Transaction};
use crate::config::RecordsTo;
use smallvec::SmallVec;

/// Where `artifact_record` events go: the event stores now running, and each
/// object store's choice among them (a reload replaces both).
pub struct ArtifactRecords {
    /// Replaced whole by a reload; each record takes the current one under
    /// the lock and writes its event after letting go.
    targets: Mutex<Arc<Targets>>,
    /// Bumped by every [`ArtifactRecords::set`]: with `id`, tells a thread
    /// that its copy of the targets is the current one.
    generation: AtomicU64,
    /// These records among every `ArtifactRecords` of the process.
    id: u64,
}

thread_local! {
    /// This thread's copy of the targets it last sent records to: the
    /// records' id, their generation then, and the targets. A record takes
    /// no lock and moves no shared reference count while they are current
    /// (three records per transaction, from every shard and store thread).
    /// A thread that has stopped sending keeps its copy, and the event
    /// stores it names, until it sends again or ends.
    static TARGETS: RefCell<Option<(u64, u64, Arc<Targets>)>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Targets {
    events: Vec<Arc<dyn EventStore>>,
    /// Object store id and where its records go; absent: every event store.
    routes: Vec<(String, RecordsTo)>,
}

impl ArtifactRecords {
    /// Records emitted to `events`.
    pub fn new(events: Vec<Arc<dyn EventStore>>) -> Arc<Self> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Arc::new(Self {
            targets: Mutex::new(Arc::new(Targets {
                events,
                routes: Vec::new(),
            })),
            generation: AtomicU64::new(0),
            id: IDS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// From now on, records go to `events`, as `routes` (object store id,
    /// where its records go) say.
    pub fn set(&self, events: &[Arc<dyn EventStore>], routes: Vec<(String, RecordsTo)>) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        *targets = Arc::new(Targets {
            events: events.to_vec(),
            routes,
        });
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The targets now.
    fn targets(&self) -> Arc<Targets> {
        Arc::clone(&self.targets.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sends the event `write` writes to the event stores that receive object
    /// store `store`'s records; `write` runs only if there is one. The
    /// targets are the thread's copy while current ([`TARGETS`]); else, or
    /// when sending from inside a send, they are taken under the lock, which
    /// is not held while the event is written.
    fn emit_with(&self, store: &str, write: impl FnOnce(&mut Vec<u8>)) {
        let generation = self.generation.load(Ordering::Acquire);
        let mut write = Some(write);
        TARGETS.with(|cell| {
            let Ok(mut copy) = cell.try_borrow_mut() else {
                return;
            };
            let current = matches!(&*copy, Some((id, g, _)) if (*id, *g) == (self.id, generation));
            if !current {
                *copy = Some((self.id, generation, self.targets()));
            }
            if let (Some((_, _, targets)), Some(write)) = (&*copy, write.take()) {
                Self::send(targets, store, write);
            }
        });
        if let Some(write) = write {
            Self::send(&self.targets(), store, write);
        }
    }

    /// Sends the event `write` writes to those of `targets` that receive
    /// object store `store`'s records.
    fn send(targets: &Targets, store: &str, write: impl FnOnce(&mut Vec<u8>)) {
        let only = match targets.routes.iter().find(|(id, _)| id == store) {
            Some((_, RecordsTo::Off)) => return,
            Some((_, RecordsTo::Store(id))) => Some(id),
            Some((_, RecordsTo::Every)) | None => None,
        };
        let to = targets
            .events
            .iter()
            .filter(|e| only.is_none_or(|id| e.id() == id));
        super::batch::emit_with(to, write);
    }

    /// A record for `txn`'s objects of `roles` (in object order).
    pub fn request(
        self: &Arc<Self>,
        txn: &Transaction,
        exe: Option<Arc<str>>,
        parts: ObjectRoles,
    ) -> Arc<RequestRecord> {
        Arc::new(RequestRecord {
            records: Arc::clone(self),
            conn_id: txn.conn.conn_id,
            request_id: txn.request_id,
            stream_id: txn.stream_id,
            parts,
            pid: txn.conn.pid,
            exe,
            method: txn.method.clone(),
            authority: txn.authority.clone(),
            status: txn.status,
            direction: event_fields::direction_word(txn.egress, txn.conn.remote.ip()),
            protocol: txn.protocol,
            tls: txn.tls,
            summary: OnceLock::new(),
            receipt: Receipt::default(),
        })
    }
}

/// What the `artifact_record` events of one request say about it, shared by
/// its objects' notices.
pub struct RequestRecord {
    records: Arc<ArtifactRecords>,
    conn_id: u64,
    request_id: u64,
    stream_id: Option<u32>,
    /// Each object's role, by its index.
    parts: ObjectRoles,
    pid: u32,
    /// The executable of the process when it made the request (`None`: not known).
    exe: Option<Arc<str>>,
    method: CompactString,
    authority: Option<CompactString>,
    status: Option<u16>,
    direction: &'static str,
    protocol: Protocol,
    tls: bool,
    /// The `summary` object's JSON, written once for all the request's events
    /// (into the first, and copied from there), held inline when it fits.
    summary: OnceLock<SmallVec<[u8; SUMMARY_INLINE]>>,
    /// What the stores that took the request's objects say: the event waits
    /// on it. Kept here, not in an allocation of its own.
    receipt: Receipt,
}

impl HoldsReceipt for RequestRecord {
    fn receipt(&self) -> &Receipt {
        &self.receipt
    }
}

impl RequestRecord {
    /// The notice for object `part` of this request.
    pub fn notice(self: &Arc<Self>, part: usize) -> Notice {
        Notice::new(Arc::clone(self) as Arc<dyn Announce>, part)
    }
}

/// Qtap's name of an artifact kind.
fn artifact_type(role: ObjectRole) -> &'static str {
    match role {
        ObjectRole::RequestHeaders => "req-headers",
        ObjectRole::RequestBody => "req-body",
        ObjectRole::ResponseHeaders => "res-headers",
        ObjectRole::ResponseBody => "res-body",
        ObjectRole::HttpTransaction => "http_transaction",
    }
}

/// The wall-clock time now; within [`at_one_instant`], the time of its
/// first announcement.
fn now() -> WallTime {
    INSTANT.with(|instant| match instant.get() {
        Instant::Read(at) => at,
        Instant::Unread => {
            let at = clock();
            instant.set(Instant::Read(at));
            at
        }
        Instant::Each => clock(),
    })
}

/// The wall clock.
fn clock() -> WallTime {
    WallTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    )
}

/// Whether this thread's announcements share one reading of the clock.
#[derive(Clone, Copy)]
enum Instant {
    /// Each reads the clock.
    Each,
    /// They share the first one's, not read yet.
    Unread,
    /// They share this one.
    Read(WallTime),
}

thread_local! {
    static INSTANT: std::cell::Cell<Instant> = const { std::cell::Cell::new(Instant::Each) };
}

/// Runs `work` (a shard delivering one transaction, a few microseconds) with
/// the `artifact_record` events it announces at once (objects the store held
/// already) sharing one reading of the clock: a clock read per object was a
/// few percent of a shard's time.
pub fn at_one_instant<R>(work: impl FnOnce() -> R) -> R {
    /// Puts the thread back to a clock read per announcement, also on unwind.
    struct Back;
    impl Drop for Back {
        fn drop(&mut self) {
            INSTANT.with(|i| i.set(Instant::Each));
        }
    }
    INSTANT.with(|i| i.set(Instant::Unread));
    let _back = Back;
    work()
}

/// How every `artifact_record` event begins, up to its timestamp's text:
/// a record written ahead has its time put there when it is announced.
const BEFORE_TIMESTAMP: &[u8] = br#"{"type":"artifact_record","timestamp":""#;

impl Announce for RequestRecord {
    fn stored(&self, part: usize, stored: Stored<'_>) {
        let Some(role) = self.parts.get(part).copied() else {
            debug_assert!(false, "object {part} of {}", self.parts.len());
            return;
        };
        self.records.emit_with(stored.store, |out| {
            self.write_event(out, now(), role, &stored);
        });
    }

    /// The event as [`Announce::stored`] writes it, its time excepted
    /// ([`ArtifactRecords::announce`] puts it in), and the executable as
    /// known now.
    fn write_ahead(
        &self,
        part: usize,
        stored: Stored<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Arc<dyn WrittenAhead>> {
        let role = self.parts.get(part).copied()?;
        self.write_event(out, WallTime(0), role, &stored);
        Some(Arc::clone(&self.records) as Arc<dyn WrittenAhead>)
    }
}

impl WrittenAhead for ArtifactRecords {
    fn announce(&self, store: &str, record: &[u8]) {
        self.emit_with(store, |out| {
            let start = out.len();
            out.extend_from_slice(record);
            let at = start + BEFORE_TIMESTAMP.len();
            if record.starts_with(BEFORE_TIMESTAMP) && out.len() >= at + event_fields::WALL_TIME_LEN
            {
                out[at..at + event_fields::WALL_TIME_LEN].copy_from_slice(&now().text());
            } else {
                debug_assert!(false, "a record written ahead begins with its timestamp");
            }
        });
    }
}

impl RequestRecord {
    /// Writes the `artifact_record` event of object `role`, stored as `stored`.
    /// One is written per object and per store, so it is written field by
    /// field ([`event_fields::JsonObject`]), and the request's `summary`
    /// object once for all its events. `docs/stdout.md` lists the fields; a
    /// test holds this to what serde writes for the same fields.
    fn write_event(&self, out: &mut Vec<u8>, at: WallTime, role: ObjectRole, stored: &Stored<'_>) {
        let mut e = event_fields::JsonObject::new(out);
        e.key("type").word("artifact_record");
        e.key("timestamp").wall_time(at);
        e.key("conn_id").uint(self.conn_id);
        e.key("request_id").uint(self.request_id);
        e.key("stream_id").opt_uint(self.stream_id);
        e.key("role").word(role.name());
        e.key("artifact_type").word(artifact_type(role));
        e.key("digest").digest(stored.digest);
        e.key("size").uint(stored.size);
        e.key("content_type").str(stored.content_type);
        match stored.url {
            Some(url) => e.key("url").access_url(url, stored.digest),
            None => e.key("url").null(),
        }
        e.key("store").str(stored.store);
        e.key("deduplicated").bool(stored.deduplicated);
        let out = e.key("summary").raw();
        match self.summary.get() {
            Some(summary) => out.extend_from_slice(summary),
            None => {
                let start = out.len();
                self.write_summary(out);
                // Another thread may have set it meanwhile, to the same bytes.
                let _ = self.summary.set(SmallVec::from_slice(&out[start..]));
            }
        }
        e.end();
    }

    /// Writes the `summary` object: what the request was, and which process
    /// made it. Written field by field like the event; a test holds it to
    /// what serde writes for the same fields.
    fn write_summary(&self, out: &mut Vec<u8>) {
        let mut s = event_fields::JsonObject::new(out);
        s.key("method").str(&self.method);
        s.key("authority").opt_str(self.authority.as_deref());
        s.key("status").opt_uint(self.status);
        s.key("direction").word(self.direction);
        s.key("protocol").word(self.protocol.name());
        s.key("tls").bool(self.tls);
        s.key("pid").uint(self.pid);
        s.key("exe").opt_str(self.exe.as_deref());
        s.end();
    }
}

/// Bytes of a `summary` object held inline: most fit (a method, an
/// authority, an executable's path and short fields take 150–200); a longer
/// one takes an allocation. With it the record, in its `Arc`, is 448 bytes:
/// one of mimalloc's size classes, and no more than the record, receipt and
/// 256-byte summary buffer it replaces.
const SUMMARY_INLINE: usize = 240;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde::Serialize;
    use std::time::Duration;
    use tapwire_store::StoreStats;
    use tapwire_store::s3::AccessUrl;

    /// Keeps the events it receives.
    struct Count(&'static str, Mutex<Vec<Bytes>>);

    impl EventStore for Count {
        fn id(&self) -> &str {
            self.0
        }
        fn emit(&self, event: Bytes) {
            self.1.lock().unwrap().push(event);
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
        fn shutdown(&self, _: Duration) {}
    }

    impl RequestRecord {
        fn summary_json(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.write_summary(&mut out);
            out
        }
    }

    #[test]
    fn a_request_record_fits_its_size_class() {
        // The record and its `Arc`'s two counts.
        assert!(size_of::<RequestRecord>() + 16 <= 448);
    }

    #[test]
    fn a_summary_written_once_serves_the_later_events_short_or_long() {
        let long = format!("/opt/{}/bin/server", "x".repeat(SUMMARY_INLINE));
        for exe in ["/usr/bin/curl", long.as_str()] {
            let mut record = record(ArtifactRecords::new(Vec::new()), None);
            Arc::get_mut(&mut record).unwrap().exe = Some(exe.into());
            let digest = blake3::hash(b"x");
            let events: Vec<serde_json::Value> = (0..2)
                .map(|_| {
                    let mut out = Vec::new();
                    let at = WallTime(0);
                    record.write_event(
                        &mut out,
                        at,
                        ObjectRole::ResponseBody,
                        &stored("s3", &digest),
                    );
                    serde_json::from_slice(&out).unwrap()
                })
                .collect();
            assert_eq!(events[0]["summary"]["exe"], exe);
            assert_eq!(events[0], events[1]);
            assert_eq!(record.summary.get().unwrap()[..], record.summary_json()[..]);
        }
    }

    fn record(records: Arc<ArtifactRecords>, stream_id: Option<u32>) -> Arc<RequestRecord> {
        Arc::new(RequestRecord {
            records,
            conn_id: 1,
            request_id: 2,
            stream_id,
            parts: smallvec::smallvec![ObjectRole::ResponseBody],
            pid: 3,
            exe: Some("/usr/bin/curl".into()),
            method: "GET".into(),
            authority: None,
            status: Some(200),
            direction: "egress-external",
            protocol: Protocol::Http1,
            tls: true,
            summary: OnceLock::new(),
            receipt: Receipt::default(),
        })
    }

    /// A plain 1-byte text object of `digest` stored in `store`.
    fn stored<'a>(store: &'a str, digest: &'a blake3::Hash) -> Stored<'a> {
        Stored {
            store,
            digest,
            size: 1,
            content_type: "text/plain",
            url: None,
            deduplicated: false,
        }
    }

    #[test]
    fn each_object_store_sends_its_records_where_its_event_store_says() {
        let (e1, e2) = (
            Arc::new(Count("e1", Mutex::default())),
            Arc::new(Count("e2", Mutex::default())),
        );
        let records = ArtifactRecords::new(Vec::new());
        records.set(
            &[e1.clone(), e2.clone()],
            vec![
                ("to_e2".into(), RecordsTo::Store("e2".into())),
                ("off".into(), RecordsTo::Off),
                ("all".into(), RecordsTo::Every),
            ],
        );
        let record = record(records, None);
        let digest = blake3::hash(b"x");
        for store in ["to_e2", "off", "all", "unlisted"] {
            record.notice(0).stored(stored(store, &digest));
        }
        let got = |c: &Count| c.1.lock().unwrap().len();
        assert_eq!((got(&e1), got(&e2)), (2, 3));
        for event in e2.1.lock().unwrap().iter() {
            let event: serde_json::Value = serde_json::from_slice(event).unwrap();
            assert_eq!(event["type"], "artifact_record");
            assert_eq!(event["digest"], digest.to_hex().as_str());
            assert_eq!(event["role"], "response_body");
            assert_eq!(
                event["summary"],
                serde_json::json!({
                    "method": "GET", "authority": null, "status": 200,
                    "direction": "egress-external", "protocol": "http1", "tls": true,
                    "pid": 3, "exe": "/usr/bin/curl",
                })
            );
        }
    }

    #[test]
    fn announcements_of_one_delivery_share_one_instant_and_later_ones_read_the_clock() {
        let events = Arc::new(Count("e", Mutex::default()));
        let records = ArtifactRecords::new(vec![events.clone()]);
        let this = record(Arc::clone(&records), None);
        let digest = blake3::hash(b"x");
        let timestamps = |events: &Count| -> Vec<String> {
            let got = events.1.lock().unwrap();
            got.iter()
                .map(|e| {
                    let v: serde_json::Value = serde_json::from_slice(e).unwrap();
                    v["timestamp"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        at_one_instant(|| {
            this.notice(0).stored(stored("s3", &digest));
            std::thread::sleep(Duration::from_millis(2));
            this.notice(0).stored(stored("s3", &digest));
        });
        std::thread::sleep(Duration::from_millis(2));
        this.notice(0).stored(stored("s3", &digest));
        std::thread::sleep(Duration::from_millis(2));
        this.notice(0).stored(stored("s3", &digest));
        let t = timestamps(&events);
        assert_eq!(t.len(), 4);
        assert_eq!(t[0], t[1], "one delivery, one instant");
        assert!(
            t[1] < t[2] && t[2] < t[3],
            "{t:?}: each reads the clock after"
        );
    }

    #[test]
    fn a_record_written_ahead_is_the_event_at_the_time_it_is_announced() {
        let events = Arc::new(Count("e", Mutex::default()));
        let records = ArtifactRecords::new(vec![events.clone()]);
        let this = record(Arc::clone(&records), Some(5));
        let digest = blake3::hash(b"x");
        let mut ahead = Vec::new();
        let by = this
            .notice(0)
            .write_ahead(stored("s3", &digest), &mut ahead)
            .expect("written ahead");
        assert!(events.1.lock().unwrap().is_empty(), "nothing is sent yet");
        let before = now();
        by.announce("s3", &ahead);
        let after = now();
        this.notice(0).stored(stored("s3", &digest));
        let got = events.1.lock().unwrap();
        assert_eq!(got.len(), 2);
        // Byte for byte the same line, but for the timestamp's text.
        let at = BEFORE_TIMESTAMP.len();
        let end = at + event_fields::WALL_TIME_LEN;
        assert_eq!(got[0].len(), got[1].len());
        assert_eq!(got[0][..at], got[1][..at]);
        assert_eq!(got[0][end..], got[1][end..]);
        let mut ahead: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
        let mut direct: serde_json::Value = serde_json::from_slice(&got[1]).unwrap();
        let time = ahead["timestamp"].as_str().unwrap().to_owned();
        assert!(
            (before.to_string()..=after.to_string()).contains(&time),
            "{time} is when it was announced, between {before} and {after}"
        );
        ahead["timestamp"].take();
        direct["timestamp"].take();
        assert_eq!(ahead, direct, "the same event but for its time");
    }

    #[test]
    fn a_reload_reaches_a_thread_that_sent_records_before() {
        let (old, new) = (
            Arc::new(Count("old", Mutex::default())),
            Arc::new(Count("new", Mutex::default())),
        );
        let records = ArtifactRecords::new(vec![old.clone()]);
        let this = record(Arc::clone(&records), None);
        let digest = blake3::hash(b"x");
        let send = || this.notice(0).stored(stored("s3", &digest));
        let got = |c: &Count| c.1.lock().unwrap().len();
        // The thread keeps a copy of the targets after its first record.
        send();
        send();
        assert_eq!((got(&old), got(&new)), (2, 0));
        let (to_new, to_old): (Arc<dyn EventStore>, Arc<dyn EventStore>) =
            (new.clone(), old.clone());
        records.set(std::slice::from_ref(&to_new), Vec::new());
        send();
        assert_eq!((got(&old), got(&new)), (2, 1), "a reload is seen at once");
        records.set(
            std::slice::from_ref(&to_old),
            vec![("s3".into(), RecordsTo::Off)],
        );
        send();
        assert_eq!((got(&old), got(&new)), (2, 1), "routes too");
        // Other records on the same thread have targets of their own.
        let elsewhere = ArtifactRecords::new(vec![new.clone()]);
        let other = record(elsewhere, None);
        other.notice(0).stored(stored("s3", &digest));
        send();
        assert_eq!((got(&old), got(&new)), (2, 2));
    }

    #[test]
    fn records_are_written_as_serde_writes_the_same_fields() {
        #[derive(Serialize)]
        struct Reference<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(serialize_with = "event_fields::display")]
            timestamp: WallTime,
            conn_id: u64,
            request_id: u64,
            stream_id: Option<u32>,
            role: ObjectRole,
            artifact_type: &'static str,
            #[serde(serialize_with = "event_fields::display")]
            digest: &'a tapwire_store::Digest,
            size: u64,
            content_type: &'a str,
            url: Option<&'a str>,
            store: &'a str,
            deduplicated: bool,
        }
        let digest = blake3::hash(b"x");
        let at = WallTime(1_785_000_000_123_456_789);
        for (role, stream_id, url, deduplicated) in [
            (ObjectRole::RequestHeaders, None, None, false),
            (
                ObjectRole::RequestBody,
                Some(5),
                Some("https://s3.example/b/\"k\"\n{{DIGEST}}"),
                true,
            ),
            (ObjectRole::ResponseHeaders, Some(0), Some(""), false),
            (ObjectRole::ResponseBody, Some(u32::MAX), None, true),
            (
                ObjectRole::HttpTransaction,
                None,
                Some("http://x/{{DIGEST}}"),
                false,
            ),
        ] {
            let template = url.map(|t| AccessUrl::new(t, "https", "s3.example", "b"));
            let rendered = template.as_ref().map(|u| u.render(&digest));
            let url = rendered.as_deref();
            let record = record(ArtifactRecords::new(Vec::new()), stream_id);
            let stored = Stored {
                store: "s\u{7}3 é",
                digest: &digest,
                size: u64::MAX,
                content_type: "text/plain; charset=\"utf-8\"\t",
                url: template.as_ref(),
                deduplicated,
            };
            let mut ours = Vec::new();
            record.write_event(&mut ours, at, role, &stored);
            let mut reference = serde_json::to_vec(&Reference {
                kind: "artifact_record",
                timestamp: at,
                conn_id: record.conn_id,
                request_id: record.request_id,
                stream_id,
                role,
                artifact_type: artifact_type(role),
                digest: &digest,
                size: stored.size,
                content_type: stored.content_type,
                url,
                store: stored.store,
                deduplicated,
            })
            .unwrap();
            reference.pop();
            reference.extend_from_slice(b",\"summary\":");
            reference.extend_from_slice(&record.summary_json());
            reference.push(b'}');
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(reference).unwrap()
            );
        }
    }

    #[test]
    fn summaries_are_written_as_serde_writes_the_same_fields() {
        #[derive(Serialize)]
        struct Reference<'a> {
            method: &'a str,
            authority: Option<&'a str>,
            status: Option<u16>,
            direction: &'static str,
            protocol: Protocol,
            tls: bool,
            pid: u32,
            exe: Option<&'a str>,
        }
        let cases = [
            (
                "GET",
                None,
                Some(200),
                Protocol::Http1,
                true,
                Some("/usr/bin/curl"),
            ),
            (
                "P\"O",
                Some("h\u{1}\"x\":1"),
                None,
                Protocol::Http2,
                false,
                None,
            ),
            (
                "PUT",
                Some("api.example:8443"),
                Some(0),
                Protocol::Grpc,
                true,
                Some("/o/\\é"),
            ),
        ];
        for (method, authority, status, protocol, tls, exe) in cases {
            let mut record = record(ArtifactRecords::new(Vec::new()), None);
            let r = Arc::get_mut(&mut record).unwrap();
            r.method = method.into();
            r.authority = authority.map(Into::into);
            r.status = status;
            r.protocol = protocol;
            r.tls = tls;
            r.pid = u32::MAX;
            r.exe = exe.map(Into::into);
            let reference = serde_json::to_vec(&Reference {
                method,
                authority,
                status,
                direction: r.direction,
                protocol,
                tls,
                pid: u32::MAX,
                // No process table entry: the executable is unknown.
                exe,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(record.summary_json()).unwrap(),
                String::from_utf8(reference).unwrap()
            );
        }
    }
}
