//! Shard output as objects and events, handed to every configured store.
//!
//! Each shard thread does this for its own transactions ([`Deliver`] is its
//! sink): hashing bodies (BLAKE3) and serializing events run on every shard in
//! parallel, where the bytes already are, and no queue sits between parsing and
//! the stores. Stores never block a shard: each queues and counts on its own.

use std::sync::Arc;

use bytes::Bytes;
use tapwire_store::{EventStore, Object, ObjectStore};

use super::shard::{Output, Sink};
use super::txn::ObjectRef;

/// Executable paths remembered at most; the cache is cleared past it (pids are
/// reused, so entries must not live forever anyway).
const MAX_EXE_CACHE: usize = 4096;

/// Executable paths by pid, read from `/proc/PID/exe` once per process, on the
/// output thread (never on the shards).
#[derive(Default)]
pub struct ExeCache {
    paths: std::collections::HashMap<u32, Option<String>>,
}

impl ExeCache {
    /// The executable of `pid`, if it can still be read.
    pub fn get(&mut self, pid: u32) -> Option<&str> {
        if self.paths.len() >= MAX_EXE_CACHE && !self.paths.contains_key(&pid) {
            self.paths.clear();
        }
        self.paths
            .entry(pid)
            .or_insert_with(|| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .as_deref()
    }
}

/// Every store an output goes to.
#[derive(Clone)]
pub struct Fanout {
    /// Event stores.
    pub events: Vec<Arc<dyn EventStore>>,
    /// Object stores.
    pub objects: Vec<Arc<dyn ObjectStore>>,
}

impl Fanout {
    /// Stores one shard output: its objects first, then the event naming them.
    pub fn deliver(&self, item: Output, exes: &mut ExeCache) {
        let event = match item {
            Output::Txn(mut txn) => {
                let mut refs = Vec::new();
                for (role, content_type, bytes) in txn.take_objects() {
                    let object = Object::new(content_type, bytes);
                    let url = self
                        .objects
                        .iter()
                        .find_map(|s| s.access_url(&object.digest));
                    refs.push(ObjectRef {
                        role,
                        digest: object.digest.to_hex().to_string(),
                        size: object.bytes.len(),
                        content_type: object.content_type.clone(),
                        url,
                    });
                    for store in &self.objects {
                        store.put(object.clone());
                    }
                }
                txn.event_json(&refs, exes.get(txn.conn.pid))
            }
            Output::Opened(info) => super::txn::open_event_json(&info),
            Output::Closed(summary) => summary.event_json(),
        };
        let event = Bytes::from(event);
        for store in &self.events {
            store.emit(event.clone());
        }
    }
}

/// A shard's sink: delivers each output on the shard's own thread.
pub struct Deliver {
    fanout: Fanout,
    exes: ExeCache,
}

impl Deliver {
    /// Delivers to `fanout`.
    pub fn new(fanout: Fanout) -> Self {
        Deliver {
            fanout,
            exes: ExeCache::default(),
        }
    }
}

impl Sink for Deliver {
    fn send(&mut self, item: Output) {
        self.fanout.deliver(item, &mut self.exes);
    }
}
