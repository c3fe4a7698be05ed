//! The output thread: turns shard output into objects and events and hands them to
//! every configured store.
//!
//! Hashing bodies (BLAKE3) and serializing events happen here, off the shards.
//! Stores never block this thread: each queues and drops on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tapwire_store::{EventStore, Object, ObjectStore};

use super::shard::Output;
use super::txn::ObjectRef;

/// How long the output thread sleeps when every queue is empty.
const IDLE_SLEEP: Duration = Duration::from_millis(1);

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
    /// What each HTTP transaction becomes (the plugin stack).
    pub http: crate::plugins::HttpPlan,
}

impl Fanout {
    /// Stores one shard output: its objects first, then the event naming them.
    pub fn deliver(&self, item: Output, exes: &mut ExeCache) {
        let event = match item {
            Output::Txn(txn) => {
                if !self.http.objects && !self.http.events {
                    return;
                }
                let mut refs = Vec::new();
                let objects = if self.http.objects {
                    txn.objects()
                } else {
                    Vec::new()
                };
                for (role, content_type, bytes) in objects {
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
                if !self.http.events {
                    return;
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

/// Drains `queues` into `fanout` until `stop` is set and the queues are empty.
pub fn run(mut queues: Vec<rtrb::Consumer<Output>>, fanout: Fanout, stop: Arc<AtomicBool>) {
    let mut exes = ExeCache::default();
    loop {
        let mut moved = 0usize;
        for queue in &mut queues {
            while let Ok(item) = queue.pop() {
                fanout.deliver(item, &mut exes);
                moved += 1;
            }
        }
        if moved == 0 {
            // Acquire pairs with the Release store in `Pipeline::stop`: once seen,
            // every shard has finished pushing.
            if stop.load(Ordering::Acquire) && queues.iter().all(|q| q.is_empty()) {
                return;
            }
            std::thread::sleep(IDLE_SLEEP);
        }
    }
}
