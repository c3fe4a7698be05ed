//! Shard output as objects and events, handed to every configured store.
//!
//! Each shard thread does this for its own transactions ([`Deliver`] is its
//! sink): hashing bodies (BLAKE3) and serializing events run on every shard in
//! parallel, where the bytes already are, and no queue sits between parsing and
//! the stores. A store whose queue is full makes the shard wait for room, at
//! most a second (`tapwire_store::room`): backpressure into the kernel rings
//! rather than lost objects.
//!
//! An event that names objects is held until every object store has kept them
//! (S3: spooled and fsynced) or refused them (the event then says `kept: false`),
//! so an agent killed at any moment never leaves an event naming an object that
//! is nowhere. A shard's events leave in the order it made them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapwire_common::config::skip;
use tapwire_store::{EventStore, Object, ObjectStore, Receipt};

use std::fmt::Write as _;

use crate::capture::procs::ProcessTable;
use crate::plugins::Format;
use crate::plugins::detect::{DetectErrors, Firing};
use crate::plugins::fields::TxnFields;

use super::shard::{Output, Sink};
use super::txn::ObjectRef;
use crate::attribution::{AttributionCache, Origin};

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
    /// Emit the event (false: the transaction's stack has no `report_usage`;
    /// held only for its objects' order).
    event: bool,
    /// `detect_errors` rules that fired and report an issue.
    issues: Vec<Firing>,
}

impl Fanout {
    /// Hands one shard output's objects to every object store and holds its
    /// event until they are kept (see the module doc); emits whatever held
    /// events are ready.
    pub fn deliver(&self, mut item: Output, look: &mut Lookups, held: &mut Held) {
        if self.filtered(&item) {
            self.processes.count_filtered_late();
            return;
        }
        let receipt = Receipt::new();
        let mut refs = Vec::new();
        let mut event = true;
        let mut issues = Vec::new();
        if let Output::Txn(txn) = &mut item {
            let stack = self.http.stack_for(txn.domain());
            if !stack.records() {
                return;
            }
            if stack.metrics {
                crate::status::http_metrics::observe(txn);
            }
            let rules =
                !stack.capture.rules.is_empty() || stack.access.is_some() || stack.detect.is_some();
            // The executable is looked up only for rules, access logs, error
            // detection and Qtap's layouts; the URL only for the first three.
            let exe = if rules || stack.capture.format != Format::Parts {
                self.processes.exe(txn.conn.pid)
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
            let mut objects = crate::plugins::capture::objects(txn, level, format, exe.as_deref());
            if !issues.is_empty() {
                let record = DetectErrors::recorded(&issues);
                crate::plugins::detect::record(txn, record, &mut objects);
                issues.retain(|f| f.report);
            }
            for (i, (role, content_type, bytes)) in objects.into_iter().enumerate() {
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
            self.release(look, held, false);
            if held.queue.len() >= MAX_HELD_EVENTS {
                std::thread::sleep(HELD_WAIT);
            }
        }
        held.queue.push_back(HeldEvent {
            receipt,
            item,
            refs,
            event,
            issues,
        });
        self.release(look, held, false);
    }

    /// True if a `tap.filters` entry skips what `item` carries. The probes
    /// apply filters from the moment user space decides them (at the
    /// program's exec); a connection tracked before that still arrives here.
    fn filtered(&self, item: &Output) -> bool {
        if !self.processes.has_filters() {
            return false;
        }
        let (pid, txn_tls) = match item {
            Output::Txn(txn) => (txn.conn.pid, Some(txn.tls)),
            Output::Opened(info) => (info.pid, None),
            Output::Closed(summary) => (summary.conn.pid, None),
        };
        let skip = self.processes.skip(pid);
        if skip == 0 {
            return false;
        }
        skip & skip::PROCESS != 0
            || txn_tls
                .is_some_and(|tls| skip & skip::PAYLOAD != 0 || (tls && skip & skip::TLS != 0))
    }

    /// Emits held events from the oldest while their objects are settled; with
    /// `force`, emits them all (unsettled objects reported as not kept).
    /// Returns how many were forced out.
    pub fn release(&self, look: &mut Lookups, held: &mut Held, force: bool) -> usize {
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
                event,
                issues,
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
            if event || !issues.is_empty() {
                self.emit(item, &refs, event, &issues, look);
            }
        }
        forced
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
        let send = |event: Vec<u8>| {
            let event = Bytes::from(event);
            for store in &self.events {
                store.emit(event.clone());
            }
        };
        let event = match item {
            Output::Txn(txn) => {
                let place = look.places.get(txn.conn.cgroup_id, txn.conn.pid);
                let origin = Origin {
                    host: &look.host,
                    place: &place,
                };
                let exe = self.processes.exe(txn.conn.pid);
                if event {
                    send(txn.event_json(refs, exe.as_deref(), &origin));
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
}

impl Lookups {
    /// The node's name read now; cgroups as they come.
    pub fn new() -> Self {
        Self {
            host: crate::attribution::node_name(),
            places: AttributionCache::default(),
            url: String::new(),
        }
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
            look: Lookups::new(),
            held: Held::default(),
        }
    }

    /// Emits the held events whose objects are now kept (call periodically).
    pub fn release_ready(&mut self) {
        let Deliver { fanout, look, held } = self;
        let fanout = fanout.lock().unwrap_or_else(|e| e.into_inner());
        fanout.release(look, held, false);
    }

    /// At stop: waits up to `deadline` for held events' objects to be kept,
    /// then emits the rest saying their objects were not kept.
    pub fn drain(&mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        while !self.held.queue.is_empty() && Instant::now() < until {
            self.release_ready();
            std::thread::sleep(HELD_WAIT);
        }
        let Deliver { fanout, look, held } = self;
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
        let Deliver { fanout, look, held } = self;
        let fanout = fanout.lock().unwrap_or_else(|e| e.into_inner());
        fanout.deliver(item, look, held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::filters::ProcessFilters;
    use crate::pipeline::input::{ConnInfo, Role};
    use tapwire_store::StoreStats;

    /// Keeps every event.
    #[derive(Default)]
    struct Collect(Mutex<Vec<Bytes>>);

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
        let fanout = Fanout {
            events: vec![events.clone()],
            objects: Vec::new(),
            processes: Arc::clone(&processes),
            http: crate::plugins::HttpPlan::default_full(),
        };
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
