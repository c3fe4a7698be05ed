//! Shard output as objects and events, handed to every configured store.
//!
//! Each shard thread does this for its own transactions ([`Deliver`] is its
//! sink): hashing bodies (BLAKE3) and serializing events run on every shard in
//! parallel, where the bytes already are, and no queue sits between parsing and
//! the stores. Stores never block a shard: each queues and counts on its own.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tapwire_store::{EventStore, Object, ObjectStore};

use super::shard::{Output, Sink};
use super::txn::ObjectRef;
use crate::attribution::{Attribution, AttributionCache, Origin};

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
    pub fn deliver(&self, item: Output, exes: &mut ExeCache, places: &mut Places) {
        let event = match item {
            Output::Txn(mut txn) => {
                crate::status::http_metrics::observe(&txn);
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
                let place = places.cache.get(txn.conn.cgroup_id, txn.conn.pid);
                let origin = places.origin(&place);
                txn.event_json(&refs, exes.get(txn.conn.pid), &origin)
            }
            Output::Opened(info) => {
                let place = places.cache.get(info.cgroup_id, info.pid);
                super::txn::open_event_json(&info, &places.origin(&place))
            }
            Output::Closed(summary) => {
                let place = places.cache.get(summary.conn.cgroup_id, summary.conn.pid);
                summary.event_json(&places.origin(&place))
            }
        };
        let event = Bytes::from(event);
        for store in &self.events {
            store.emit(event.clone());
        }
    }
}

/// A shard's sink: delivers each output on the shard's own thread.
///
/// The stores sit behind a mutex only this shard takes, once per output, so a
/// reload can replace them between two deliveries;
/// uncontended, it costs one atomic exchange on a line this core owns.
pub struct Deliver {
    fanout: Arc<Mutex<Fanout>>,
    exes: ExeCache,
    places: Places,
}

impl Deliver {
    /// Delivers to `fanout`.
    pub fn new(fanout: Fanout) -> Self {
        Self::shared(Arc::new(Mutex::new(fanout)))
    }

    /// Delivers to whatever stores `slot` holds at the time.
    pub fn shared(slot: Arc<Mutex<Fanout>>) -> Self {
        Deliver {
            fanout: slot,
            exes: ExeCache::default(),
            places: Places::new(),
        }
    }
}

impl Sink for Deliver {
    fn send(&mut self, item: Output) {
        let fanout = self.fanout.lock().unwrap_or_else(|e| e.into_inner());
        fanout.deliver(item, &mut self.exes, &mut self.places);
    }
}

/// The node's name and each cgroup's container and pod, looked up once per
/// cgroup by the shard that first sees it, off the parsing path.
pub struct Places {
    host: String,
    cache: AttributionCache,
}

impl Places {
    /// The node's name read now; cgroups as they come.
    pub fn new() -> Self {
        Self {
            host: crate::attribution::node_name(),
            cache: AttributionCache::default(),
        }
    }

    fn origin<'a>(&'a self, place: &'a Attribution) -> Origin<'a> {
        Origin {
            host: &self.host,
            place,
        }
    }
}

impl Default for Places {
    fn default() -> Self {
        Self::new()
    }
}
