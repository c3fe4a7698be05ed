//! `artifact_record` events: one per object a request stored, per object store,
//! once that store holds the object durably (S3: uploaded, or found there
//! already; stdout: its line written). Qtap's `ArtifactRecord`, in tapwire's
//! event schema (`docs/stdout.md`).
//!
//! The shard only attaches a [`Notice`] to each object's ticket: an `Arc` of
//! the request's [`RequestRecord`] and the object's index. The store tells the
//! notice from its own thread after the fact, and the event is serialized and
//! emitted there, so the shard pays neither. Event stores never block and
//! count what they drop; an object store counts the notices it had to drop
//! (`artifact_records_dropped`).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tapwire_store::{Announce, EventStore, Notice, Stored};

use super::event_fields::{self, WallTime};
use super::txn::{ObjectRole, Protocol, Transaction};
use crate::capture::procs::ProcessTable;

/// Where `artifact_record` events go: the event stores now running (a reload
/// replaces them).
pub struct ArtifactRecords {
    events: Mutex<Vec<Arc<dyn EventStore>>>,
    processes: Arc<ProcessTable>,
}

impl ArtifactRecords {
    /// Records emitted to `events`; executables read from `processes`.
    pub fn new(events: Vec<Arc<dyn EventStore>>, processes: Arc<ProcessTable>) -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(events),
            processes,
        })
    }

    /// From now on, records go to `events`.
    pub fn set_event_stores(&self, events: &[Arc<dyn EventStore>]) {
        *self.lock() = events.to_vec();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn EventStore>>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A record for `txn`'s objects of `roles` (in object order).
    pub fn request(
        self: &Arc<Self>,
        txn: &Transaction,
        exe: Option<Arc<str>>,
        parts: Box<[ObjectRole]>,
    ) -> Arc<RequestRecord> {
        Arc::new(RequestRecord {
            records: Arc::clone(self),
            conn_id: txn.conn.conn_id,
            request_id: txn.request_id,
            stream_id: txn.stream_id,
            parts,
            pid: txn.conn.pid,
            exe,
            method: txn.method.as_str().into(),
            authority: txn.authority.as_deref().map(Into::into),
            status: txn.status,
            direction: event_fields::direction_word(txn.egress, txn.conn.remote.ip()),
            protocol: txn.protocol,
            tls: txn.tls,
        })
    }

    fn emit(&self, event: Bytes) {
        for store in self.lock().iter() {
            store.emit(event.clone());
        }
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
    parts: Box<[ObjectRole]>,
    pid: u32,
    /// The executable, if already looked up; else looked up when announcing.
    exe: Option<Arc<str>>,
    method: Box<str>,
    authority: Option<Box<str>>,
    status: Option<u16>,
    direction: &'static str,
    protocol: Protocol,
    tls: bool,
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

impl Announce for RequestRecord {
    fn stored(&self, part: usize, stored: Stored<'_>) {
        let Some(role) = self.parts.get(part).copied() else {
            debug_assert!(false, "object {part} of {}", self.parts.len());
            return;
        };
        #[derive(Serialize)]
        struct Summary<'a> {
            method: &'a str,
            authority: Option<&'a str>,
            status: Option<u16>,
            direction: &'static str,
            protocol: Protocol,
            tls: bool,
            pid: u32,
            exe: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Event<'a> {
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
            summary: Summary<'a>,
        }
        let looked_up;
        let exe = match &self.exe {
            Some(exe) => Some(&**exe),
            None => {
                looked_up = self.records.processes.exe(self.pid);
                looked_up.as_deref()
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let event = Event {
            kind: "artifact_record",
            timestamp: WallTime(now),
            conn_id: self.conn_id,
            request_id: self.request_id,
            stream_id: self.stream_id,
            role,
            artifact_type: artifact_type(role),
            digest: stored.digest,
            size: stored.size,
            content_type: stored.content_type,
            url: stored.url,
            store: stored.store,
            deduplicated: stored.deduplicated,
            summary: Summary {
                method: &self.method,
                authority: self.authority.as_deref(),
                status: self.status,
                direction: self.direction,
                protocol: self.protocol,
                tls: self.tls,
                pid: self.pid,
                exe,
            },
        };
        let json = serde_json::to_vec(&event).expect("event serializes");
        self.records.emit(Bytes::from(json));
    }
}
