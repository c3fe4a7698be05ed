//! Shard output as objects and events, handed to every configured store.
//!
//! Each shard thread does this for its own transactions ([`Deliver`] is its
//! sink): hashing bodies (BLAKE3) and serializing events run on every shard in
//! parallel, where the bytes already are, and no queue sits between parsing and
//! the stores. Stores never block a shard: each queues and counts on its own.
//!
//! An event that names objects is held until every object store has kept them
//! (S3: spooled and fsynced) or refused them (the event then says `kept: false`),
//! so an agent killed at any moment never leaves an event naming an object that
//! is nowhere. A shard's events leave in the order it made them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapwire_store::{EventStore, Object, ObjectStore, Receipt};

use crate::capture::procs::ProcessTable;

use super::shard::{Output, Sink};
use super::txn::ObjectRef;

/// Events a shard holds for their objects at most; past it the shard waits for
/// the stores (and its queues push back on the readers) rather than hold more.
const MAX_HELD_EVENTS: usize = 16 * 1024;
/// How long a full hold waits between looks at its oldest event.
const HELD_WAIT: Duration = Duration::from_millis(1);
/// How long stopping waits for held events' objects to be kept.
pub const HELD_DRAIN: Duration = Duration::from_secs(5);

/// Every store an output goes to.
#[derive(Clone)]
pub struct Fanout {
    /// Event stores.
    pub events: Vec<Arc<dyn EventStore>>,
    /// Object stores.
    pub objects: Vec<Arc<dyn ObjectStore>>,
    /// Executables by pid, taken at exec by capture.
    pub processes: Arc<ProcessTable>,
    /// What each HTTP transaction becomes (the plugin stack).
    pub http: crate::plugins::HttpPlan,
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
    pub fn deliver(&self, mut item: Output, held: &mut Held) {
        if matches!(item, Output::Txn(_)) && !self.http.objects && !self.http.events {
            return;
        }
        let receipt = Receipt::new();
        let mut refs = Vec::new();
        if let Output::Txn(txn) = &mut item
            && self.http.objects
        {
            for (i, (role, content_type, bytes)) in txn.take_objects().into_iter().enumerate() {
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
            self.release(held, false);
            if held.queue.len() >= MAX_HELD_EVENTS {
                std::thread::sleep(HELD_WAIT);
            }
        }
        held.queue.push_back(HeldEvent {
            receipt,
            item,
            refs,
        });
        self.release(held, false);
    }

    /// Emits held events from the oldest while their objects are settled; with
    /// `force`, emits them all (unsettled objects reported as not kept).
    /// Returns how many were forced out.
    pub fn release(&self, held: &mut Held, force: bool) -> usize {
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
            self.emit(item, &refs);
        }
        forced
    }

    fn emit(&self, item: Output, refs: &[ObjectRef]) {
        let event = match item {
            Output::Txn(_) if !self.http.events => return,
            Output::Txn(txn) => txn.event_json(refs, self.processes.exe(txn.conn.pid).as_deref()),
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
    held: Held,
}

impl Deliver {
    /// Delivers to `fanout`.
    pub fn new(fanout: Fanout) -> Self {
        Deliver {
            fanout,
            held: Held::default(),
        }
    }

    /// Emits the held events whose objects are now kept (call periodically).
    pub fn release_ready(&mut self) {
        self.fanout.release(&mut self.held, false);
    }

    /// At stop: waits up to `deadline` for held events' objects to be kept,
    /// then emits the rest saying their objects were not kept.
    pub fn drain(&mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        while !self.held.queue.is_empty() && Instant::now() < until {
            self.release_ready();
            std::thread::sleep(HELD_WAIT);
        }
        let forced = self.fanout.release(&mut self.held, true);
        if forced > 0 {
            tracing::warn!(
                events = forced,
                "objects not kept in time at stop; their events say so"
            );
        }
    }
}

impl Sink for Deliver {
    fn send(&mut self, item: Output) {
        self.fanout.deliver(item, &mut self.held);
    }
}
