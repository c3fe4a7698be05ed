//! The output thread: turns shard output into objects and events and hands them to
//! every configured store.
//!
//! Hashing bodies (BLAKE3) and serializing events happen here, off the shards.
//! Stores never block this thread: each queues and drops on its own.
//!
//! An event that names objects is held until every object store has kept them
//! (spooled and synced) or refused them (the event then says `kept: false`), so
//! an agent killed at any moment never leaves an event naming an object that is
//! nowhere. Events leave in the order they were made.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapwire_store::{EventStore, Object, ObjectStore, Receipt};

use super::shard::Output;
use super::txn::ObjectRef;

/// How long the output thread sleeps when every queue is empty.
const IDLE_SLEEP: Duration = Duration::from_millis(1);

/// Events held for their objects at most; past it the output thread waits for
/// the stores (and the shards' queues fill behind it) rather than hold more.
const MAX_HELD_EVENTS: usize = 16 * 1024;
/// How long stopping waits for held events' objects to be kept.
const HELD_DRAIN: Duration = Duration::from_secs(5);

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

/// Events waiting for their objects to be kept, oldest first.
#[derive(Default)]
pub struct Held {
    queue: VecDeque<HeldEvent>,
}

struct HeldEvent {
    receipt: Arc<Receipt>,
    item: Output,
    refs: Vec<ObjectRef>,
}

impl Fanout {
    /// Hands one shard output's objects to every object store and holds its
    /// event until they are kept (see the module doc); emits whatever held
    /// events are ready.
    pub fn deliver(&self, item: Output, exes: &mut ExeCache, held: &mut Held) {
        let receipt = Receipt::new();
        let mut refs = Vec::new();
        if let Output::Txn(txn) = &item {
            for (i, (role, content_type, bytes)) in txn.objects().into_iter().enumerate() {
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
                    kept: true,
                });
                for store in &self.objects {
                    store.put_with(object.clone(), receipt.ticket(i));
                }
            }
        }
        while held.queue.len() >= MAX_HELD_EVENTS {
            self.release(exes, held, false);
            if held.queue.len() >= MAX_HELD_EVENTS {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
        held.queue.push_back(HeldEvent {
            receipt,
            item,
            refs,
        });
        self.release(exes, held, false);
    }

    /// Emits held events from the oldest while their objects are settled; with
    /// `force`, emits them all (unsettled objects reported as not kept).
    /// Returns how many were forced out.
    pub fn release(&self, exes: &mut ExeCache, held: &mut Held, force: bool) -> usize {
        let mut forced = 0;
        while let Some(front) = held.queue.front() {
            let settled = front.receipt.settled();
            if !settled && !force {
                break;
            }
            forced += usize::from(!settled);
            let Some(HeldEvent {
                receipt,
                item,
                mut refs,
            }) = held.queue.pop_front()
            else {
                break;
            };
            for (i, r) in refs.iter_mut().enumerate() {
                if !settled || !receipt.kept(i) {
                    r.kept = false;
                    r.url = None;
                }
            }
            self.emit(item, &refs, exes);
        }
        forced
    }

    fn emit(&self, item: Output, refs: &[ObjectRef], exes: &mut ExeCache) {
        let event = match item {
            Output::Txn(txn) => txn.event_json(refs, exes.get(txn.conn.pid)),
            Output::Opened(info) => super::txn::open_event_json(&info),
            Output::Closed(summary) => summary.event_json(),
        };
        let event = Bytes::from(event);
        for store in &self.events {
            store.emit(event.clone());
        }
    }
}

/// Drains `queues` into `fanout` until `stop` is set and the queues are empty,
/// then waits (up to [`HELD_DRAIN`]) for held events' objects to be kept.
pub fn run(mut queues: Vec<rtrb::Consumer<Output>>, fanout: Fanout, stop: Arc<AtomicBool>) {
    let mut exes = ExeCache::default();
    let mut held = Held::default();
    loop {
        let mut moved = 0usize;
        for queue in &mut queues {
            while let Ok(item) = queue.pop() {
                fanout.deliver(item, &mut exes, &mut held);
                moved += 1;
            }
        }
        if moved == 0 {
            fanout.release(&mut exes, &mut held, false);
            // Acquire pairs with the Release store in `Pipeline::stop`: once seen,
            // every shard has finished pushing.
            if stop.load(Ordering::Acquire) && queues.iter().all(|q| q.is_empty()) {
                break;
            }
            std::thread::sleep(IDLE_SLEEP);
        }
    }
    let until = Instant::now() + HELD_DRAIN;
    while !held.queue.is_empty() && Instant::now() < until {
        fanout.release(&mut exes, &mut held, false);
        std::thread::sleep(IDLE_SLEEP);
    }
    let forced = fanout.release(&mut exes, &mut held, true);
    if forced > 0 {
        tracing::warn!(
            events = forced,
            "objects not kept in time at stop; their events say so"
        );
    }
}
