//! Shard output as objects and events, handed to the configured stores: events
//! to every event store, objects to the object stores of the transaction's
//! stack (`http_capture.object_store`, else all).
//!
//! Each shard thread does this for its own transactions ([`Deliver`] is its
//! sink): hashing bodies (BLAKE3, or the digest of the same bytes hashed a
//! moment ago: [`super::digests`]) and serializing events run on every shard
//! in parallel, where the bytes already are, and no queue sits between parsing
//! and the stores. A store whose queue is full makes the shard wait for room, at
//! most a second (`tapwire_store::room`): backpressure into the kernel rings
//! rather than lost objects.
//!
//! An event that names objects is held until every object store has kept them
//! (S3: spooled and fsynced) or refused them (the event then says `kept: false`),
//! so an agent killed at any moment never leaves an event naming an object that
//! is nowhere. A shard's events leave in the order it made them.
//!
//! Each object also carries a notice of its request ([`super::records`]): the
//! object store tells it once the object is stored, and an `artifact_record`
//! event goes out from the store's thread.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapwire_common::config::skip;
use tapwire_store::{EventStore, HoldsReceipt, Object, ObjectStore, Receipt, Ticket};

use std::fmt::Write as _;

use crate::capture::procs::{ProcessCache, ProcessTable};
use crate::plugins::Format;
use crate::plugins::detect::{DetectErrors, Firing};
use crate::plugins::fields::TxnFields;

use super::batch;
use super::budget::{Budget, Charge, Use};
use super::digests::DigestCache;
use super::records::ArtifactRecords;

use super::shard::{Keeps, Output, Sink};
use super::txn::{ObjectParts, ObjectRef, ObjectRefs, UrlTemplates};
use crate::attribution::{AttributionCache, Origin};

/// Events a shard holds for their objects at most; past it the shard waits for
/// the stores (and its queues push back on the readers) rather than hold more.
const MAX_HELD_EVENTS: usize = 16 * 1024;
/// Bytes of the events a shard holds, at most (about: each event's size and
/// what its fields hold on the heap; heads and bodies are dropped once their
/// objects are made): events with large header blocks fill the hold sooner
/// instead of holding up to [`MAX_HELD_EVENTS`] of them. What the hold
/// holds is charged to the memory budget too, never refused
/// ([`Use::Events`]): bodies then find that much less room.
const MAX_HELD_BYTES: usize = 4 << 20;
/// The hold takes its charge in steps of this many bytes and gives it back
/// once a step and more is unused: two atomic operations per step, not per
/// event.
const HELD_CHARGE_STEP: usize = 64 << 10;
/// How long a full hold waits between looks at its oldest event.
const HELD_WAIT: Duration = Duration::from_millis(1);
/// How long stopping waits for held events' objects to be kept.
pub const HELD_DRAIN: Duration = Duration::from_secs(5);

/// Every store an output goes to.
#[derive(Clone)]
pub struct Fanout {
    /// Event stores.
    pub events: Vec<Arc<dyn EventStore>>,
    /// Object stores, in config order (stacks name theirs by index).
    pub objects: Vec<Arc<dyn ObjectStore>>,
    /// Executables by pid, taken at exec by capture.
    pub processes: Arc<ProcessTable>,
    /// What each HTTP transaction becomes (the plugin stack).
    pub http: crate::plugins::HttpPlan,
    /// Where `artifact_record` events go (shared by every shard).
    pub records: Arc<ArtifactRecords>,
}

/// Events waiting for their objects to be kept, oldest first.
pub struct Held {
    queue: VecDeque<HeldEvent>,
    /// What the events in `queue` hold ([`HeldEvent::bytes`]).
    bytes: usize,
    /// The budget `bytes` are charged to, and the charge: `bytes` rounded up
    /// to [`HELD_CHARGE_STEP`]s, with at most a step more.
    budget: Arc<Budget>,
    charge: Charge,
    /// Events let out before their objects were settled, the hold full while
    /// the rings were pressed ([`Fanout::deliver`]).
    forced_early: u64,
}

struct HeldEvent {
    /// What the stores that took its objects say (`None`: it has none): the
    /// receipt of its request record, or one of its own when no record is
    /// made (no event store).
    receipt: Option<Arc<dyn HoldsReceipt>>,
    item: Output,
    refs: ObjectRefs,
    /// Emit the event (false: the transaction's stack has no `report_usage`;
    /// held only for its objects' order).
    event: bool,
    /// `detect_errors` rules that fired and report an issue.
    issues: Vec<Firing>,
    /// What it holds, about (taken as it is held).
    bytes: usize,
}

impl HeldEvent {
    /// The event to hold, with what it holds: its own size, its item's and
    /// what they hold on the heap.
    fn new(
        receipt: Option<Arc<dyn HoldsReceipt>>,
        item: Output,
        refs: ObjectRefs,
        event: bool,
        issues: Vec<Firing>,
    ) -> Self {
        let item_bytes = match &item {
            Output::Txn(txn) => txn.held_bytes(),
            Output::Opened(info) => size_of_val(&**info),
            Output::Closed(summary) => size_of_val(&**summary),
        };
        let refs_bytes = if refs.spilled() {
            refs.capacity() * size_of::<ObjectRef>()
        } else {
            0
        };
        let bytes =
            size_of::<Self>() + item_bytes + refs_bytes + issues.capacity() * size_of::<Firing>();
        Self {
            receipt,
            item,
            refs,
            event,
            issues,
            bytes,
        }
    }
}

impl Default for Held {
    fn default() -> Self {
        Self::charged_to(Budget::unlimited())
    }
}

impl Held {
    /// An empty hold whose events are charged to `budget`.
    fn charged_to(budget: Arc<Budget>) -> Self {
        Held {
            queue: VecDeque::new(),
            bytes: 0,
            budget,
            charge: Charge::default(),
            forced_early: 0,
        }
    }

    /// True while the hold has no room for an event of `bytes` (an empty
    /// hold takes any one event).
    fn full_for(&self, bytes: usize) -> bool {
        self.queue.len() >= MAX_HELD_EVENTS
            || (!self.queue.is_empty() && self.bytes + bytes > MAX_HELD_BYTES)
    }

    fn push_back(&mut self, event: HeldEvent) {
        self.bytes += event.bytes;
        self.queue.push_back(event);
        let charged = self.charge.bytes();
        if self.bytes > charged {
            let more = (self.bytes - charged).next_multiple_of(HELD_CHARGE_STEP);
            self.charge.grow_anyway(&self.budget, more, Use::Events);
        }
    }

    fn pop_front(&mut self) -> Option<HeldEvent> {
        let event = self.queue.pop_front()?;
        self.bytes -= event.bytes;
        if self.queue.is_empty() {
            self.charge.release();
        } else {
            let spare = self.charge.bytes() - self.bytes;
            if spare > HELD_CHARGE_STEP {
                self.charge.shrink(spare - spare % HELD_CHARGE_STEP);
            }
        }
        Some(event)
    }
}

impl Fanout {
    /// Outputs to these stores, as `http` says.
    pub fn new(
        events: Vec<Arc<dyn EventStore>>,
        objects: Vec<Arc<dyn ObjectStore>>,
        processes: Arc<ProcessTable>,
        http: crate::plugins::HttpPlan,
    ) -> Self {
        Fanout {
            records: ArtifactRecords::new(events.clone()),
            events,
            objects,
            processes,
            http,
        }
    }

    /// What of a message reaches anything: header blocks an object store
    /// takes; body bytes an object store takes or an access log writes.
    pub fn keeps(&self) -> Keeps {
        let stores = !self.objects.is_empty();
        Keeps {
            heads: self.http.any_stack(|s| s.reads_heads(stores)),
            bodies: self.http.any_stack(|s| s.reads_bodies(stores)),
        }
    }

    /// Hands one shard output's objects to its object stores and holds its
    /// event until they are kept (see the module doc); emits whatever held
    /// events are ready.
    pub fn deliver(&self, mut item: Output, look: &mut Lookups, held: &mut Held) {
        if self.filtered(&item, &mut look.procs) {
            self.processes.count_filtered_late();
            return;
        }
        let mut receipt = None;
        let mut refs = ObjectRefs::new();
        let mut event = true;
        let mut issues = Vec::new();
        if let Output::Txn(txn) = &mut item {
            let stack = self.http.stack_for(txn.domain());
            if !stack.records() {
                return;
            }
            txn.request_id = look.request_ids.next();
            if stack.metrics {
                crate::status::http_metrics::observe(txn);
            }
            let rules =
                !stack.capture.rules.is_empty() || stack.access.is_some() || stack.detect.is_some();
            // The executable is looked up only for rules, access logs, error
            // detection, Qtap's layouts and `artifact_record` summaries; the
            // URL only for the first three.
            let records = stack.stores() && !self.events.is_empty();
            let exe = if rules || records || stack.capture.format != Format::Parts {
                look.procs.exe(&self.processes, txn.conn.pid)
            } else {
                None
            };
            if rules {
                look.url.clear();
                let _ = write!(look.url, "{}", txn.url());
            }
            let fields = TxnFields {
                txn,
                exe: exe.as_deref(),
                url: &look.url,
            };
            if let Some(access) = &stack.access {
                let (mode, format) = access.for_txn(&fields);
                crate::plugins::access_log::log(&fields, mode, format);
            }
            if !stack.stores() {
                return;
            }
            event = stack.events;
            let (level, format) = stack.capture_for(&fields);
            if let Some(detect) = &stack.detect {
                issues = detect.check(txn, &look.url);
            }
            let stores = stack.object_stores(&self.objects);
            // No object store takes this stack's objects: none are made (no
            // digest, nothing named in the events).
            let mut objects = if stores.is_empty() {
                ObjectParts::new()
            } else {
                crate::plugins::capture::objects(txn, level, format, exe.as_deref())
            };
            if !issues.is_empty() {
                if !stores.is_empty() {
                    let record = DetectErrors::recorded(&issues);
                    crate::plugins::detect::record(txn, record, &mut objects);
                }
                issues.retain(|f| f.report);
            }
            let record = (!objects.is_empty() && !stores.is_empty() && !self.events.is_empty())
                .then(|| {
                    let roles = objects.iter().map(|(role, _, _)| *role).collect();
                    self.records.request(txn, exe.clone(), roles)
                });
            // The objects hold what is kept of the heads and bodies (Qtap's
            // layouts copied them): the event, held until they are kept,
            // needs neither.
            txn.drop_payload();
            // One template for all the transaction's objects.
            let url = (!objects.is_empty())
                .then(|| stores.iter().find_map(|s| s.access_url()))
                .flatten()
                .map(|u| look.urls.copy_of(u));
            // The objects' tickets share one receipt; a transaction without
            // objects has none, and its event waits for nothing.
            if !objects.is_empty() {
                let receipt = &*receipt.insert(match &record {
                    Some(record) => Arc::clone(record) as Arc<dyn HoldsReceipt>,
                    None => Receipt::new(),
                });
                for (i, (role, content_type, bytes)) in objects.into_iter().enumerate() {
                    let object = Object {
                        digest: look.digests.digest(&bytes),
                        content_type,
                        bytes,
                    };
                    refs.push(ObjectRef {
                        role,
                        digest: object.digest,
                        size: object.bytes.len(),
                        content_type: object.content_type.clone(),
                        url: url.clone(),
                        kept: true,
                    });
                    let ticket = |i| {
                        let ticket = Ticket::on(Arc::clone(receipt), i);
                        match &record {
                            Some(record) => ticket.with_notice(record.notice(i)),
                            None => ticket,
                        }
                    };
                    // The last store takes the object itself: `Bytes` made from a
                    // `Vec` allocates its shared count on its first clone.
                    if let Some((last, rest)) = stores.split_last() {
                        for store in rest {
                            store.put_with(object.clone(), ticket(i));
                        }
                        last.put_with(object, ticket(i));
                    }
                }
            }
        }
        let event = HeldEvent::new(receipt, item, refs, event, issues);
        while held.full_for(event.bytes) {
            self.release(look, held, false);
            if !held.full_for(event.bytes) {
                break;
            }
            if tapwire_store::room::pressed() {
                // The kernel's rings are nearly full behind this shard: the
                // oldest event goes out now, naming its unsettled objects as
                // not kept, rather than the shard waiting while the kernel
                // drops whole records.
                self.release_oldest(look, held);
            } else {
                std::thread::sleep(HELD_WAIT);
            }
        }
        held.push_back(event);
        self.release(look, held, false);
    }

    /// True if a `tap.filters` entry skips what `item` carries. The probes
    /// apply filters from the moment user space decides them (at the
    /// program's exec); a connection tracked before that still arrives here.
    fn filtered(&self, item: &Output, procs: &mut ProcessCache) -> bool {
        if !self.processes.has_filters() {
            return false;
        }
        let (pid, txn_tls) = match item {
            Output::Txn(txn) => (txn.conn.pid, Some(txn.tls)),
            Output::Opened(info) => (info.pid, None),
            Output::Closed(summary) => (summary.conn.pid, None),
        };
        let skip = procs.lookup(&self.processes, pid).1;
        if skip == 0 {
            return false;
        }
        skip & skip::PROCESS != 0
            || txn_tls
                .is_some_and(|tls| skip & skip::PAYLOAD != 0 || (tls && skip & skip::TLS != 0))
    }

    /// Emits the oldest held event now, its objects not yet settled named as
    /// not kept (they may still be stored: the event then under-reports,
    /// never names an object that is nowhere).
    fn release_oldest(&self, look: &mut Lookups, held: &mut Held) {
        if let Some(oldest) = held.pop_front() {
            held.forced_early += 1;
            self.let_out(oldest, false, look);
        }
    }

    /// Emits held events from the oldest while their objects are settled; with
    /// `force`, emits them all (unsettled objects reported as not kept).
    /// Returns how many were forced out.
    pub fn release(&self, look: &mut Lookups, held: &mut Held, force: bool) -> usize {
        let mut forced = 0;
        while let Some(front) = held.queue.front() {
            let settled = front.receipt.as_ref().is_none_or(|r| r.receipt().settled());
            if !settled && !force {
                break;
            }
            forced += usize::from(!settled);
            let Some(front) = held.pop_front() else {
                break;
            };
            self.let_out(front, settled, look);
        }
        forced
    }

    /// Emits `held`'s event: its objects a store refused, and all of them
    /// unless `settled`, named as not kept.
    fn let_out(&self, held: HeldEvent, settled: bool, look: &mut Lookups) {
        let HeldEvent {
            receipt,
            item,
            mut refs,
            event,
            issues,
            bytes: _,
        } = held;
        for (i, r) in refs.iter_mut().enumerate() {
            if !settled || receipt.as_ref().is_some_and(|r| !r.receipt().kept(i)) {
                r.kept = false;
                r.url = None;
            }
        }
        if event || !issues.is_empty() {
            self.emit(item, &refs, event, &issues, look);
        }
    }

    /// Emits `item`'s event (a transaction's only with `event`) and the
    /// `issue` events of `issues`.
    fn emit(
        &self,
        item: Output,
        refs: &[ObjectRef],
        event: bool,
        issues: &[Firing],
        look: &mut Lookups,
    ) {
        let send = |event: Vec<u8>| batch::emit(&self.events, Bytes::from(event));
        let event = match item {
            Output::Txn(txn) => {
                let place = look.places.get(txn.conn.cgroup_id, txn.conn.pid);
                let origin = Origin {
                    host: &look.host,
                    place: &place,
                };
                let exe = look.procs.exe(&self.processes, txn.conn.pid);
                if event {
                    batch::emit_with(&self.events, |out| {
                        txn.write_event_json(out, refs, exe.as_deref(), &origin);
                    });
                }
                for firing in issues {
                    send(crate::plugins::detect::issue_json(
                        &txn,
                        firing,
                        refs,
                        exe.as_deref(),
                        &origin,
                    ));
                }
                txn.recycle();
                return;
            }
            Output::Opened(info) => {
                let place = look.places.get(info.cgroup_id, info.pid);
                let origin = Origin {
                    host: &look.host,
                    place: &place,
                };
                super::txn::open_event_json(&info, &origin)
            }
            Output::Closed(summary) => {
                let place = look.places.get(summary.conn.cgroup_id, summary.conn.pid);
                let origin = Origin {
                    host: &look.host,
                    place: &place,
                };
                summary.event_json(&origin)
            }
        };
        send(event);
    }
}

/// What events say about where a process runs: the node's name, and its
/// container and pod, read once per cgroup by the shard that first needs it,
/// after parsing.
pub struct Lookups {
    host: String,
    places: AttributionCache,
    /// A transaction's URL for rules, reused.
    url: String,
    /// This shard's request ids.
    request_ids: RequestIds,
    /// Digests of this shard's recent objects.
    digests: DigestCache,
    /// This shard's copies of the process table's entries.
    procs: ProcessCache,
    /// This shard's copies of its stores' URL templates.
    urls: UrlTemplates,
}

impl Lookups {
    /// The node's name read now; cgroups as they come.
    pub fn new() -> Self {
        Self {
            host: crate::attribution::node_name(),
            places: AttributionCache::default(),
            url: String::new(),
            request_ids: RequestIds::new(),
            digests: DigestCache::default(),
            procs: ProcessCache::default(),
            urls: UrlTemplates::default(),
        }
    }
}

/// Request ids one shard hands out: a block of 2^40 of its own, taken once
/// from a shared counter, so ids are unique across shards without any
/// per-request synchronisation.
struct RequestIds {
    next: u64,
}

/// Ids per block: 2^40 requests (about 35 years at 1,000 per second).
const REQUEST_ID_BLOCK_BITS: u32 = 40;

impl RequestIds {
    fn new() -> Self {
        static BLOCKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // Relaxed: only uniqueness matters, which the RMW gives.
        let block = BLOCKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            next: (block << REQUEST_ID_BLOCK_BITS) + 1,
        }
    }

    fn next(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }
}

impl Default for Lookups {
    fn default() -> Self {
        Self::new()
    }
}

/// A shard's sink: delivers each output on the shard's own thread.
///
/// The stores sit behind a mutex only this shard takes, once per output, so a
/// reload can replace them between two deliveries; uncontended, it costs one
/// atomic exchange on a line this core owns.
pub struct Deliver {
    fanout: Arc<Mutex<Fanout>>,
    look: Lookups,
    held: Held,
    /// [`Fanout::keeps`] as of the last delivery, so that the shard asks
    /// without a lock per record (a reload that adds the first object store
    /// is seen from the next delivery on).
    keeps: Keeps,
}

impl Deliver {
    /// Delivers to `fanout`.
    pub fn new(fanout: Fanout) -> Self {
        Self::shared(Arc::new(Mutex::new(fanout)))
    }

    /// Delivers to whatever stores `slot` holds at the time.
    pub fn shared(slot: Arc<Mutex<Fanout>>) -> Self {
        let keeps = slot.lock().unwrap_or_else(|e| e.into_inner()).keeps();
        Deliver {
            fanout: slot,
            look: Lookups::new(),
            held: Held::default(),
            keeps,
        }
    }

    /// Charges the events it holds to `budget` (by default to none).
    pub fn charged_to(mut self, budget: Arc<Budget>) -> Self {
        self.held = Held::charged_to(budget);
        self
    }

    /// Events let out before their objects were settled, in all
    /// ([`ShardStats::events_let_out_early`](super::shard::ShardStats)).
    pub fn let_out_early(&self) -> u64 {
        self.held.forced_early
    }

    /// Whether events wait for their objects to be kept.
    pub fn holds_events(&self) -> bool {
        !self.held.queue.is_empty()
    }

    /// Emits the held events whose objects are now kept (call periodically).
    pub fn release_ready(&mut self) {
        self.with_fanout(|fanout, look, held| {
            fanout.release(look, held, false);
        });
    }

    /// Runs `f` on the stores the slot holds now, then notes what they keep.
    fn with_fanout(&mut self, f: impl FnOnce(&Fanout, &mut Lookups, &mut Held)) {
        let Deliver {
            fanout,
            look,
            held,
            keeps,
        } = self;
        let fanout = fanout.lock().unwrap_or_else(|e| e.into_inner());
        f(&fanout, look, held);
        *keeps = fanout.keeps();
    }

    /// At stop: waits up to `deadline` for held events' objects to be kept,
    /// then emits the rest saying their objects were not kept.
    pub fn drain(&mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        while !self.held.queue.is_empty() && Instant::now() < until {
            self.release_ready();
            std::thread::sleep(HELD_WAIT);
        }
        let Deliver {
            fanout, look, held, ..
        } = self;
        let forced = fanout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(look, held, true);
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
        self.with_fanout(|fanout, look, held| {
            super::records::at_one_instant(|| fanout.deliver(item, look, held))
        });
    }

    fn keeps(&self) -> Keeps {
        self.keeps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::filters::ProcessFilters;
    use crate::pipeline::input::{ConnInfo, Role};
    use crate::plugins::Level;
    use tapwire_store::StoreStats;

    /// Keeps every event.
    #[derive(Default)]
    struct Collect(Mutex<Vec<Bytes>>);

    impl Collect {
        /// The events emitted so far, parsed.
        fn json(&self) -> Vec<serde_json::Value> {
            let events = self.0.lock().unwrap();
            events
                .iter()
                .map(|e| serde_json::from_slice(e).unwrap())
                .collect()
        }
    }

    impl EventStore for Collect {
        fn id(&self) -> &str {
            "collect"
        }
        fn emit(&self, event: Bytes) {
            self.0.lock().unwrap().push(event);
        }
        fn stats(&self) -> tapwire_store::StoreStats {
            StoreStats::default()
        }
        fn shutdown(&self, _: Duration) {}
    }

    fn opened(pid: u32) -> Output {
        Output::Opened(Box::new(ConnInfo {
            conn_id: u64::from(pid),
            pid,
            tid: pid,
            comm: "curl".into(),
            cgroup_id: 1,
            local: "127.0.0.1:50000".parse().unwrap(),
            remote: "127.0.0.1:80".parse().unwrap(),
            role: Role::Client,
            ts_ns: 1,
        }))
    }

    /// Keeps objects and announces each at once, as if stored.
    struct Keep {
        id: &'static str,
        got: Mutex<Vec<tapwire_store::Digest>>,
        url: tapwire_store::s3::AccessUrl,
    }

    impl Keep {
        fn new(id: &'static str) -> Arc<Self> {
            Arc::new(Keep {
                id,
                got: Mutex::default(),
                url: tapwire_store::s3::AccessUrl::new("s3://here/{{DIGEST}}", "s3", "here", id),
            })
        }
    }

    impl ObjectStore for Keep {
        fn id(&self) -> &str {
            self.id
        }
        fn put_with(&self, object: Object, mut ticket: tapwire_store::Ticket) {
            if let Some(notice) = ticket.take_notice() {
                notice.stored(tapwire_store::Stored {
                    store: self.id,
                    digest: &object.digest,
                    size: object.bytes.len() as u64,
                    content_type: &object.content_type,
                    url: Some(&self.url),
                    deduplicated: false,
                });
            }
            self.got.lock().unwrap().push(object.digest);
            ticket.kept();
        }
        fn access_url(&self) -> Option<&tapwire_store::s3::AccessUrl> {
            None
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
        fn shutdown(&self, _: Duration) {}
    }

    fn get(pid: u32, head: &[u8]) -> Output {
        let Output::Opened(conn) = opened(pid) else {
            unreachable!()
        };
        let mut request = super::super::txn::Message::default();
        request.head = head.to_vec();
        Output::Txn(Box::new(super::super::txn::Transaction {
            conn: *conn,
            request_id: 0,
            tid: pid,
            stream_id: None,
            egress: true,
            protocol: super::super::txn::Protocol::Http1,
            tls: false,
            tls_sni: None,
            method: "GET".into(),
            authority: Some("svc.test".into()),
            path: "/".into(),
            status: Some(200),
            grpc_status: None,
            request,
            response: Default::default(),
            start_ns: 1,
            end_ns: 2,
            truncated: false,
            gap: false,
            incomplete_headers: false,
        }))
    }

    #[test]
    fn a_named_store_alone_gets_the_objects_and_each_is_recorded_for_its_request() {
        let events = Arc::new(Collect::default());
        let (a, b) = (Keep::new("a"), Keep::new("b"));
        let mut http = crate::plugins::HttpPlan::default_full();
        http.default.capture.store = Some(crate::plugins::StoreRoute {
            id: "b".into(),
            index: 1,
        });
        let fanout = Fanout::new(
            vec![events.clone()],
            vec![a.clone(), b.clone()],
            Arc::default(),
            http,
        );
        let (mut look, mut held) = (Lookups::new(), Held::default());
        let head = b"GET / HTTP/1.1\r\nHost: svc.test\r\n\r\n";
        fanout.deliver(get(u32::MAX - 5, head), &mut look, &mut held);
        fanout.deliver(get(u32::MAX - 5, head), &mut look, &mut held);
        assert!(a.got.lock().unwrap().is_empty(), "store `a` is not named");
        let digest = blake3::hash(head);
        assert_eq!(*b.got.lock().unwrap(), [digest, digest]);
        let got = events.json();
        let of = |kind: &str| -> Vec<&serde_json::Value> {
            got.iter().filter(|v| v["type"] == kind).collect()
        };
        let (records, requests) = (of("artifact_record"), of("http_transaction"));
        assert_eq!((records.len(), requests.len()), (2, 2));
        assert_ne!(requests[0]["request_id"], requests[1]["request_id"]);
        for (record, request) in records.iter().zip(&requests) {
            assert_eq!(record["request_id"], request["request_id"]);
            assert_eq!(record["conn_id"], request["conn_id"]);
            assert_eq!(record["digest"], digest.to_hex().as_str());
            assert_eq!(record["role"], "request_headers");
            assert_eq!(record["artifact_type"], "req-headers");
            assert_eq!(record["store"], "b");
            assert_eq!(record["url"], format!("s3://here/{}", digest.to_hex()));
            assert_eq!(
                record["summary"],
                serde_json::json!({"method": "GET", "authority": "svc.test", "status": 200,
                    "direction": "egress-internal", "protocol": "http1", "tls": false,
                    "pid": u32::MAX - 5, "exe": null})
            );
        }
    }

    /// Takes objects and never settles them (a spool whose disk hangs).
    #[derive(Default)]
    struct Stalled(Mutex<Vec<tapwire_store::Ticket>>);

    impl Stalled {
        /// Keeps the oldest `n` objects taken (all, if fewer).
        fn keep(&self, n: usize) {
            let tickets: Vec<_> = {
                let mut taken = self.0.lock().unwrap();
                let n = n.min(taken.len());
                taken.drain(..n).collect()
            };
            tickets.into_iter().for_each(tapwire_store::Ticket::kept);
        }
    }

    impl ObjectStore for Stalled {
        fn id(&self) -> &str {
            "stalled"
        }
        fn put_with(&self, _: Object, ticket: tapwire_store::Ticket) {
            self.0.lock().unwrap().push(ticket);
        }
        fn access_url(&self) -> Option<&tapwire_store::s3::AccessUrl> {
            None
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
        fn shutdown(&self, _: Duration) {}
    }

    /// The rings' pressure is one for the process: tests that press it, or
    /// need it unpressed, take turns.
    static PRESSURE: Mutex<()> = Mutex::new(());

    /// The pressure's turn, and a fanout of the default plan to an event
    /// store that collects and an object store that never settles.
    fn stalled_fanout() -> (
        std::sync::MutexGuard<'static, ()>,
        Arc<Collect>,
        Arc<Stalled>,
        Fanout,
    ) {
        let turn = PRESSURE.lock().unwrap_or_else(|e| e.into_inner());
        let events = Arc::new(Collect::default());
        let stalled = Arc::new(Stalled::default());
        let fanout = Fanout::new(
            vec![events.clone()],
            vec![stalled.clone()],
            Arc::default(),
            crate::plugins::HttpPlan::default_full(),
        );
        (turn, events, stalled, fanout)
    }

    #[test]
    fn a_full_hold_lets_its_oldest_event_out_while_the_rings_are_pressed() {
        let (_turn, events, stalled, fanout) = stalled_fanout();
        let (mut look, mut held) = (Lookups::new(), Held::default());
        let head = b"GET / HTTP/1.1\r\nHost: svc.test\r\n\r\n";
        // Filled, by count or by bytes, whichever comes first.
        fanout.deliver(get(7, head), &mut look, &mut held);
        let one = held.bytes;
        while !held.full_for(one) {
            fanout.deliver(get(7, head), &mut look, &mut held);
        }
        let full = held.queue.len();
        assert!(events.0.lock().unwrap().is_empty(), "all are held");
        // Pressed, a full hold does not wait for the store (unpressed, this
        // store would keep it waiting for ever).
        let mut pressure = tapwire_store::room::Pressure::default();
        pressure.set(true);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            fanout.deliver(get(7, head), &mut look, &mut held);
            fanout.deliver(get(7, head), &mut look, &mut held);
            let _ = tx.send(held);
        });
        let held = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a full hold waited for a store that never settles");
        drop(pressure);
        assert_eq!(held.queue.len(), full);
        assert_eq!(held.forced_early, 2);
        let out = events.json();
        let txns: Vec<&serde_json::Value> = out
            .iter()
            .filter(|v| v["type"] == "http_transaction")
            .collect();
        assert_eq!(txns.len(), 2, "the two oldest: {out:?}");
        for t in txns {
            let objects = t["objects"].as_array().expect("objects");
            assert!(!objects.is_empty());
            assert!(objects.iter().all(|o| o["kept"] == false), "{t}");
        }
        // The objects the store still holds are not lost to it.
        assert_eq!(stalled.0.lock().unwrap().len(), full + 2);
    }

    /// A transaction with a request head of `head_bytes` bytes whose fields
    /// hold about as much, distinct for each `n` (no digest already kept).
    fn get_large(pid: u32, head_bytes: usize, n: usize) -> Output {
        let value = format!("{n:08}{}", "v".repeat(head_bytes - 8));
        let head = format!("GET / HTTP/1.1\r\nHost: svc.test\r\nX-Large: {value}\r\n\r\n");
        let mut item = get(pid, head.as_bytes());
        if let Output::Txn(txn) = &mut item {
            txn.request.headers.push(b"x-large", value.as_bytes());
        }
        item
    }

    #[test]
    fn the_hold_is_bounded_in_bytes_and_waits_for_the_store_past_them() {
        let (_turn, events, stalled, fanout) = stalled_fanout();
        let (mut look, mut held) = (Lookups::new(), Held::default());
        // 32 KiB of fields each: the bytes fill the hold long before the count.
        let mut n = 0;
        fanout.deliver(get_large(7, 32 << 10, n), &mut look, &mut held);
        let one = held.bytes;
        assert!(one > 32 << 10, "{one}");
        while !held.full_for(one) {
            n += 1;
            fanout.deliver(get_large(7, 32 << 10, n), &mut look, &mut held);
        }
        assert!(held.bytes <= MAX_HELD_BYTES, "{}", held.bytes);
        let full = held.queue.len();
        assert_eq!(full, MAX_HELD_BYTES / one, "{one}");
        assert!(events.0.lock().unwrap().is_empty(), "all are held");
        // Not pressed: the next one waits for the store, and goes in once the
        // store keeps the oldest objects.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            fanout.deliver(get_large(7, 32 << 10, n + 1), &mut look, &mut held);
            let _ = tx.send(held);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a full hold took more"
        );
        // The held events' objects are kept; the waiting one's (made before
        // it waits, the last) is not.
        let waiting = stalled.0.lock().unwrap().len() - 1;
        stalled.keep(waiting);
        let held = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the hold took the event once the store kept the objects");
        assert_eq!(held.forced_early, 0);
        assert_eq!(held.queue.len(), 1, "the others went out as kept");
        assert_eq!(held.bytes, one);
        assert_eq!(events.0.lock().unwrap().len(), full);
    }

    #[test]
    fn the_hold_is_charged_to_the_budget_and_gives_it_back() {
        let (_turn, events, stalled, fanout) = stalled_fanout();
        let budget = Budget::new(16 << 20);
        let (mut look, mut held) = (Lookups::new(), Held::charged_to(budget.clone()));
        let mut n = 0;
        fanout.deliver(get_large(7, 32 << 10, n), &mut look, &mut held);
        let one = held.bytes;
        while !held.full_for(one) {
            n += 1;
            fanout.deliver(get_large(7, 32 << 10, n), &mut look, &mut held);
        }
        // Charged in steps: what the events hold, and less than a step more.
        let used = budget.used();
        assert!(
            used >= held.bytes && used < held.bytes + HELD_CHARGE_STEP,
            "{used} for {}",
            held.bytes
        );
        // Bodies find that much less room: 12 MiB fit the bodies' share
        // (14 MiB) of an empty budget, not beside a full hold.
        let body = 12 << 20;
        assert!(
            !budget.try_take(body, Use::Body),
            "a body took the hold's room"
        );
        // Never refused: past the budget, events are still taken.
        let small = Budget::new(1 << 20);
        let mut over = Held::charged_to(small.clone());
        for i in 0..64 {
            fanout.deliver(get_large(7, 32 << 10, i), &mut look, &mut over);
        }
        assert_eq!(over.queue.len(), 64);
        assert!(over.bytes > 2 << 20, "{}", over.bytes);
        let used = small.used();
        assert!(
            used >= over.bytes && used < over.bytes + HELD_CHARGE_STEP,
            "{used} for {}",
            over.bytes
        );
        // Let out (objects kept), the room is given back.
        stalled.keep(usize::MAX);
        fanout.release(&mut look, &mut held, false);
        fanout.release(&mut look, &mut over, false);
        assert!(held.queue.is_empty() && over.queue.is_empty());
        assert_eq!(budget.used(), 0);
        assert_eq!(small.used(), 0);
        assert!(budget.try_take(body, Use::Body));
        assert_eq!(events.0.lock().unwrap().len(), n + 1 + 64);
    }

    #[test]
    fn a_held_event_keeps_no_head_or_body_once_its_objects_are_made() {
        let events = Arc::new(Collect::default());
        let stalled = Arc::new(Stalled::default());
        let mut http = crate::plugins::HttpPlan::default_full();
        // Qtap's layout copies heads and bodies into one object.
        http.default.capture.format = Format::Json;
        let fanout = Fanout::new(
            vec![events.clone()],
            vec![stalled.clone()],
            Arc::default(),
            http,
        );
        let budget = super::super::budget::Budget::new(1 << 20);
        let mut item = get(7, b"GET / HTTP/1.1\r\nHost: svc.test\r\n\r\n");
        if let Output::Txn(txn) = &mut item {
            txn.response.head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            txn.response.push_body(&[b'x'; 10_000], &budget);
        }
        assert!(budget.used() >= 10_000);
        let (mut look, mut held) = (Lookups::new(), Held::default());
        fanout.deliver(item, &mut look, &mut held);
        assert_eq!(stalled.0.lock().unwrap().len(), 1, "one object, held");
        assert_eq!(budget.used(), 0, "the body's room is given back");
        let Some(HeldEvent {
            item: Output::Txn(txn),
            ..
        }) = held.queue.front()
        else {
            panic!("the event is held");
        };
        for m in [&txn.request, &txn.response] {
            assert_eq!((m.head.capacity(), m.body.capacity()), (0, 0));
        }
        // What the event reports of them is unchanged.
        assert_eq!(txn.response.body_bytes, 10_000);
        assert!(!txn.response.shed && !txn.truncated);
        // Once the store keeps the object, the event says so, and the body's
        // size.
        stalled.keep(usize::MAX);
        fanout.release(&mut look, &mut held, false);
        let out = events.json();
        let [t] = &out[..] else {
            panic!("one event: {out:?}");
        };
        assert_eq!(t["response_body_bytes"], 10_000, "{t}");
        assert_eq!(t["truncated"], false, "{t}");
        let objects = t["objects"].as_array().expect("objects");
        assert_eq!(objects.len(), 1, "{t}");
        assert_eq!(objects[0]["kept"], true, "{t}");
    }

    #[test]
    fn without_an_object_store_no_objects_are_made_and_bodies_are_not_kept() {
        let events = Arc::new(Collect::default());
        let http = crate::plugins::HttpPlan::default_full();
        let fanout = Fanout::new(vec![events.clone()], Vec::new(), Arc::default(), http);
        assert_eq!(
            fanout.keeps(),
            Keeps {
                heads: false,
                bodies: false
            }
        );
        let (mut look, mut held) = (Lookups::new(), Held::default());
        fanout.deliver(
            get(u32::MAX - 6, b"GET / HTTP/1.1\r\n\r\n"),
            &mut look,
            &mut held,
        );
        let got = events.0.lock().unwrap();
        let event: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
        assert_eq!(event["type"], "http_transaction");
        assert_eq!(event["objects"], serde_json::json!([]));

        let with_store = Fanout::new(
            Vec::new(),
            vec![Keep::new("a")],
            Arc::default(),
            crate::plugins::HttpPlan::default_full(),
        );
        assert_eq!(with_store.keeps(), Keeps::ALL);
    }

    #[test]
    fn heads_are_kept_from_level_headers_and_bodies_at_full_only() {
        for (level, heads, bodies) in [
            (Level::None, false, false),
            (Level::Summary, false, false),
            (Level::Headers, true, false),
            (Level::Full, true, true),
        ] {
            let mut http = crate::plugins::HttpPlan::default_full();
            http.default.capture.level = level;
            let fanout = Fanout::new(Vec::new(), vec![Keep::new("a")], Arc::default(), http);
            assert_eq!(fanout.keeps(), Keeps { heads, bodies }, "{level:?}");
        }
    }

    #[test]
    fn events_of_a_filtered_process_are_dropped_and_counted() {
        let filters: crate::config::Filters =
            serde_yaml::from_str("custom: [{exe: /curl}]").unwrap();
        let processes = Arc::new(ProcessTable::new(
            ProcessFilters::compile(&filters).unwrap(),
        ));
        // Pids that do not exist: their exec's file name stands in.
        let (filtered, kept) = (u32::MAX - 3, u32::MAX - 4);
        processes.exec(filtered, 1, b"/usr/bin/curl");
        processes.exec(kept, 1, b"/usr/bin/wget");
        let events = Arc::new(Collect::default());
        let fanout = Fanout::new(
            vec![events.clone()],
            Vec::new(),
            Arc::clone(&processes),
            crate::plugins::HttpPlan::default_full(),
        );
        let (mut look, mut held) = (Lookups::new(), Held::default());
        fanout.deliver(opened(filtered), &mut look, &mut held);
        fanout.deliver(opened(kept), &mut look, &mut held);
        let got = events.0.lock().unwrap();
        assert_eq!(got.len(), 1);
        let event: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
        assert_eq!(event["pid"], kept);
        assert_eq!(processes.filtered_late(), 1);
    }
}
