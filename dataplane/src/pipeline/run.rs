//! Wiring: the frame queues between readers and shards, and the shard threads.
//!
//! A full frame queue pushes back: the reader waits for room while holding its
//! ring's record, so the kernel ring (larger, and counted per CPU when it
//! overflows) absorbs the burst and no record is dropped in user space. An idle
//! shard parks; a reader wakes a parked shard it queued frames for once its
//! ring is drained (or after [`WAKE_AFTER_FRAMES`] frames, so a long batch
//! keeps the shard busy), not once per frame: a context switch per record
//! would cost more than parsing it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::budget::{Budget, DEFAULT_MEMORY_BUDGET, Plan};
use super::output::{self, Deliver, Fanout};
use super::queue::{FrameConsumer, FrameProducer, frame_queue};
use super::shard::{DEFAULT_IDLE_TIMEOUT, Decode, Shard, ShardStats};
use crate::capture::ringbuf::RingFill;
use tapwire_store::room::Pressure;

/// Frames a shard takes from one queue before looking at the next.
const SHARD_BATCH: usize = 256;
/// How often a shard checks reorder timeouts and publishes its counters.
const SHARD_TICK: Duration = Duration::from_millis(50);
/// How often an idle shard ticks: one that has taken no frame for
/// [`SHARD_IDLE_AFTER_NS`] (past every reordering hole's and exit grace's
/// timeout) and holds no event for its objects. Deadlines left then (a
/// connection's idle timeout, an exit waiting for a stalled reader) are
/// minutes or seconds long; an idle agent wakes once a second per shard, not
/// twenty times. A reader's frame wakes it at once.
const SHARD_IDLE_TICK: Duration = Duration::from_secs(1);
/// Time without a frame after which a shard ticks at [`SHARD_IDLE_TICK`].
const SHARD_IDLE_AFTER_NS: u64 = 2_000_000_000;
/// Frames a reader queues for a shard before waking it in the middle of a
/// batch.
pub const WAKE_AFTER_FRAMES: u32 = 64;
/// How long a reader waits between tries when a shard's queue is full.
const PUSHBACK_WAIT: Duration = Duration::from_micros(20);

/// Pipeline sizes.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Reader threads (one per CPU ring).
    pub readers: usize,
    /// Shard threads wanted (fewer when the memory budget cannot hold their
    /// queues; see [`Plan`]).
    pub shards: usize,
    /// The memory budget in bytes.
    pub memory_budget: usize,
    /// A connection silent this long gives up its buffered transactions.
    pub idle_timeout: Duration,
}

impl PipelineConfig {
    /// `readers` and `shards` with the default memory budget.
    pub fn new(readers: usize, shards: usize) -> Self {
        PipelineConfig {
            readers,
            shards,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A shard as its readers see it: its thread (to wake) and whether it sleeps.
#[derive(Clone)]
struct ShardWake {
    thread: Thread,
    parked: Arc<AtomicBool>,
}

impl ShardWake {
    #[inline]
    fn wake(&self) {
        // Pairs with the fence in `park_until_woken`: either the shard sees the
        // frame just queued, or this load sees it parked.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) {
            self.thread.unpark();
        }
    }
}

/// Routes a reader's frames to shards; one per reader thread, not shared.
pub struct Router {
    queues: Vec<FrameProducer>,
    shards: Vec<ShardWake>,
    /// Per shard: frames queued since it was last woken.
    unwoken: Vec<u32>,
    counters: RouterCounters,
    published: Arc<Mutex<RouterCounters>>,
    stalls: Arc<ReaderStalls>,
    /// This reader's index in `stalls`.
    index: usize,
    /// The reader's ring and the fill, in percent, from which the reader,
    /// when it waits for a full shard queue, presses ([`Router::watch`]).
    ring: Option<(RingFill, u32)>,
    /// This reader's say in whether objects are shed.
    pressure: Pressure,
}

/// The ring fill at which a waiting reader presses, given the probes'
/// graceful-overload mark: that mark (the probes copy only prefixes past it,
/// so bodies are being lost already), and never past this.
const SHED_MARK_MAX: u32 = 90;

/// The ring fill, in percent, past which a reader waiting for a shard
/// presses ([`Router::watch`]), for graceful overload at `overload_percent`.
pub fn shed_mark(overload_percent: u32) -> u32 {
    overload_percent.min(SHED_MARK_MAX)
}

/// Time during which at least one reader waited for room in a full shard
/// queue. Shards take it off their clock: while a reader waits, the records
/// behind it (in its ring) are held up, so neither a reordering hole nor a
/// process's exit grace may run out meanwhile. Without this, a shard that
/// got a process's exit record from one reader released its connections
/// while another reader, stalled behind a third party's full queue, still
/// held their last records. Also each reader's drained time
/// ([`ReaderStalls::drained_ns`]), past which a shard may release an exited
/// process's connections.
#[derive(Debug, Default)]
pub struct ReaderStalls {
    /// Readers waiting now.
    waiting: AtomicU32,
    /// When the current stall began (the first reader of it started waiting).
    since_ns: AtomicU64,
    /// Length of the stalls that ended.
    ended_ns: AtomicU64,
    /// Per reader: a time (`CLOCK_MONOTONIC`) before which every record of
    /// its ring has been routed (its ring was found empty after it). A
    /// router whose reader never says (the capacity bench drives routers
    /// itself) is not waited for.
    drained_ns: Box<[AtomicU64]>,
}

impl ReaderStalls {
    fn new(readers: usize) -> Self {
        Self {
            drained_ns: (0..readers).map(|_| AtomicU64::new(u64::MAX)).collect(),
            ..Self::default()
        }
    }

    /// The time before which every reader has routed every record of its
    /// ring: a record written before it is in a shard's queue or past it.
    pub fn drained_ns(&self) -> u64 {
        self.drained_ns
            .iter()
            .map(|t| t.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    fn begin(&self) {
        if self.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.since_ns.store(now_ns(), Ordering::Release);
        }
    }

    fn end(&self) {
        // The last reader out closes the stall. A reader that starts waiting
        // in between opens a new one; the few nanoseconds either way only
        // make a shard's clock run a little slower.
        let since = self.since_ns.load(Ordering::Acquire);
        if self.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ended_ns
                .fetch_add(now_ns().saturating_sub(since), Ordering::AcqRel);
        }
    }

    /// Nanoseconds readers have stalled so far, an ongoing stall included.
    pub fn stalled_ns(&self, now_ns: u64) -> u64 {
        let ended = self.ended_ns.load(Ordering::Acquire);
        if self.waiting.load(Ordering::Acquire) == 0 {
            return ended;
        }
        ended + now_ns.saturating_sub(self.since_ns.load(Ordering::Acquire))
    }
}

/// A reader's routing counters.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct RouterCounters {
    /// Times a full shard queue made the reader wait (backpressure).
    pub pushback_waits: u64,
    /// Frames dropped because their shard thread was gone (it panicked).
    pub shard_gone: u64,
}

impl Router {
    /// Queues `frame` (made of `parts`) for the shard owning `conn_id`, waiting
    /// while that shard's queue is full.
    #[inline]
    pub fn route(&mut self, conn_id: u64, parts: &[&[u8]]) {
        self.push(shard_of(conn_id, self.queues.len()), parts);
    }

    /// Queues `frame` for every shard (records about a process, not one
    /// connection).
    pub fn broadcast(&mut self, parts: &[&[u8]]) {
        for shard in 0..self.queues.len() {
            self.push(shard, parts);
        }
    }

    #[inline]
    fn push(&mut self, shard: usize, parts: &[&[u8]]) {
        let queue = &mut self.queues[shard];
        if queue.push(parts).is_ok() {
            let unwoken = &mut self.unwoken[shard];
            *unwoken += 1;
            if *unwoken >= WAKE_AFTER_FRAMES {
                *unwoken = 0;
                self.shards[shard].wake();
            }
            return;
        }
        self.unwoken[shard] = 0;
        self.counters.pushback_waits += 1;
        self.stalls.begin();
        loop {
            self.shards[shard].wake();
            if queue.is_abandoned() {
                self.counters.shard_gone += 1;
                break;
            }
            std::thread::sleep(PUSHBACK_WAIT);
            if queue.push(parts).is_ok() {
                self.shards[shard].wake();
                break;
            }
            if let Some((fill, mark)) = &self.ring {
                self.pressure.set(fill.percent() >= *mark);
            }
        }
        self.pressure.set(false);
        self.stalls.end();
    }

    /// Watches the reader's ring: while the reader waits for a full shard
    /// queue and the ring is at least `mark` percent full, it presses: the
    /// S3 store's queue refuses objects instead of making shards wait for
    /// room (`tapwire_store::room`), and a shard's full event hold lets its
    /// oldest event out. A shard held up by a store (the spool's disk
    /// stalled) then goes on, and the ring drains before the kernel must
    /// drop whole records: bodies are lost, counted, before metadata.
    pub fn watch(&mut self, fill: RingFill, mark: u32) {
        self.ring = Some((fill, mark));
    }

    /// The reader's ring was found empty after `at_ns` (`CLOCK_MONOTONIC`,
    /// read before the records were taken): every record written before then
    /// is routed. Shards release an exited process's connections only once
    /// every reader has passed the exit, so that the connections' last
    /// records, in a ring whose reader lagged, are not left behind.
    pub fn drained_until(&self, at_ns: u64) {
        self.stalls.drained_ns[self.index].store(at_ns, Ordering::Release);
    }

    /// Wakes every shard given frames since it was last woken: call when the
    /// reader's ring is drained, so no frame waits for a shard that sleeps.
    pub fn wake_pending(&mut self) {
        for (shard, unwoken) in self.unwoken.iter_mut().enumerate() {
            if *unwoken > 0 {
                *unwoken = 0;
                self.shards[shard].wake();
            }
        }
    }

    /// Publishes the counters; call now and then, not per frame.
    pub fn publish(&self) {
        *self.published.lock().expect("router counters") = self.counters;
    }
}

/// Which shard owns a connection: a multiplicative hash so sequential ids spread.
#[inline]
pub fn shard_of(conn_id: u64, shards: usize) -> usize {
    ((conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % shards as u64) as usize
}

/// Counters of the whole pipeline.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PipelineStats {
    /// Each reader's routing counters.
    pub readers: Vec<RouterCounters>,
    /// Each shard's counters.
    pub shards: Vec<ShardStats>,
    /// Buffered bytes charged to the memory budget now.
    pub budget_used: usize,
    /// The memory budget's share for bodies and reorder windows.
    pub budget_limit: usize,
}

impl PipelineStats {
    /// Every shard's counters added up.
    pub fn total(&self) -> ShardStats {
        self.shards
            .iter()
            .fold(ShardStats::default(), |a, b| a.sum(b))
    }

    /// Every reader's counters added up.
    pub fn routing(&self) -> RouterCounters {
        self.readers
            .iter()
            .fold(RouterCounters::default(), |a, b| RouterCounters {
                pushback_waits: a.pushback_waits + b.pushback_waits,
                shard_gone: a.shard_gone + b.shard_gone,
            })
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.publish();
    }
}

/// The running shards.
pub struct Pipeline {
    stop_shards: Arc<AtomicBool>,
    shards: Vec<(JoinHandle<()>, ShardWake)>,
    shard_stats: Vec<Arc<Mutex<ShardStats>>>,
    reader_counters: Vec<Arc<Mutex<RouterCounters>>>,
    budget: Arc<Budget>,
    plan: Plan,
    stores: Vec<Arc<Mutex<Fanout>>>,
}

impl Pipeline {
    /// Starts the shard threads; returns one [`Router`] per reader.
    pub fn start(
        config: PipelineConfig,
        decode: Decode,
        fanout: Fanout,
    ) -> std::io::Result<(Self, Vec<Router>)> {
        let readers = config.readers.max(1);
        let plan = Plan::new(config.memory_budget, readers, config.shards);
        let budget = Budget::new(plan.buffered_bytes);
        let mut producers: Vec<Vec<FrameProducer>> = (0..readers).map(|_| Vec::new()).collect();
        let mut consumers: Vec<Vec<FrameConsumer>> = (0..plan.shards).map(|_| Vec::new()).collect();
        for reader_queues in producers.iter_mut() {
            for shard_queues in consumers.iter_mut() {
                let (p, c) = frame_queue(plan.frame_queue_bytes);
                reader_queues.push(p);
                shard_queues.push(c);
            }
        }
        let stop_shards = Arc::new(AtomicBool::new(false));
        let stalls = Arc::new(ReaderStalls::new(readers));
        let mut shards = Vec::new();
        let mut shard_stats = Vec::new();
        let mut stores = Vec::new();
        for (i, queues) in consumers.into_iter().enumerate() {
            let stats = Arc::new(Mutex::new(ShardStats::default()));
            shard_stats.push(stats.clone());
            let stop = stop_shards.clone();
            let parked = Arc::new(AtomicBool::new(false));
            let slot = Arc::new(Mutex::new(fanout.clone()));
            stores.push(slot.clone());
            let mut shard = Shard::with_budget(
                decode,
                Deliver::shared(slot).charged_to(budget.clone()),
                budget.clone(),
            );
            shard.set_idle_timeout(config.idle_timeout);
            let asleep = parked.clone();
            let reader_stalls = stalls.clone();
            let handle = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || run_shard(shard, queues, stats, stop, asleep, reader_stalls))?;
            let thread = handle.thread().clone();
            shards.push((handle, ShardWake { thread, parked }));
        }
        let wakes: Vec<ShardWake> = shards.iter().map(|(_, w)| w.clone()).collect();
        let mut reader_counters = Vec::new();
        let routers = producers
            .into_iter()
            .enumerate()
            .map(|(index, queues)| {
                let published = Arc::new(Mutex::new(RouterCounters::default()));
                reader_counters.push(published.clone());
                Router {
                    unwoken: vec![0; queues.len()],
                    queues,
                    shards: wakes.clone(),
                    counters: RouterCounters::default(),
                    published,
                    stalls: stalls.clone(),
                    index,
                    ring: None,
                    pressure: Pressure::default(),
                }
            })
            .collect();
        let pipeline = Pipeline {
            stop_shards,
            shards,
            shard_stats,
            reader_counters,
            budget,
            plan,
            stores,
        };
        Ok((pipeline, routers))
    }

    /// Each shard's stores, which `reload::reload` replaces.
    pub fn store_slots(&self) -> &[Arc<Mutex<Fanout>>] {
        &self.stores
    }

    /// How the memory budget was split.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// Counters so far (as of each thread's last publication).
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            readers: self
                .reader_counters
                .iter()
                .map(|c| *c.lock().expect("router counters"))
                .collect(),
            shards: self
                .shard_stats
                .iter()
                .map(|s| *s.lock().expect("stats lock"))
                .collect(),
            budget_used: self.budget.used(),
            budget_limit: self.budget.limit(),
        }
    }

    /// Drains the queues, flushes what open connections hold, stops the threads
    /// and waits for them. Call after the readers have stopped (their routers
    /// dropped).
    pub fn stop(mut self) -> PipelineStats {
        // Release pairs with the Acquire loads in the shard loops.
        self.stop_shards.store(true, Ordering::Release);
        for (handle, wake) in self.shards.drain(..) {
            wake.thread.unpark();
            let _ = handle.join();
        }
        self.stats()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists. This is the
    // clock bpf_ktime_get_ns reads, so record timestamps compare with it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn run_shard(
    mut shard: Shard<Deliver>,
    mut queues: Vec<FrameConsumer>,
    stats: Arc<Mutex<ShardStats>>,
    stop: Arc<AtomicBool>,
    parked: Arc<AtomicBool>,
    stalls: Arc<ReaderStalls>,
) {
    let mut last_tick = Instant::now();
    let mut last_now = 0;
    // When this shard last took a frame (`CLOCK_MONOTONIC` ns).
    let mut last_moved = now_ns();
    // Every record the readers routed before this time has been taken.
    let mut taken_until = 0;
    let mut beat =
        crate::status::health::register(std::thread::current().name().unwrap_or("shard"));
    // Events are handed to the stores once per round, each store's as one block.
    super::batch::start();
    loop {
        // One clock read per round, not per record. Time this thread spent
        // waiting for a store's room is not counted: the records it would
        // wait for in reordering were held up with it; nor is time a reader
        // spent waiting for room in a shard's queue ([`ReaderStalls`]). The
        // clock never runs back.
        let mono = now_ns();
        let now = mono
            .saturating_sub(tapwire_store::room::waited_ns())
            .saturating_sub(stalls.stalled_ns(mono))
            .max(last_now);
        last_now = now;
        // Read before the queues: what the readers had routed by then is in
        // them, so once they are all found empty it has all been taken.
        let routed = stalls.drained_ns();
        let mut moved = 0;
        let mut emptied = true;
        for queue in &mut queues {
            let mut taken = 0;
            while taken < SHARD_BATCH {
                if queue.pop(|frame| shard.offer(frame, now)).is_none() {
                    break;
                }
                taken += 1;
            }
            emptied &= taken < SHARD_BATCH;
            moved += taken;
        }
        if emptied {
            taken_until = routed;
        }
        if moved > 0 {
            last_moved = mono;
        }
        shard.set_clocks(mono, taken_until);
        #[cfg(feature = "fault-injection")]
        if moved > 0 {
            crate::status::fault::stall_point("shard");
        }
        if last_tick.elapsed() >= SHARD_TICK {
            beat.beat();
            shard.tick(now);
            shard.sink_mut().release_ready();
            shard.stats.events_let_out_early = shard.sink_mut().let_out_early();
            *stats.lock().expect("stats lock") = shard.stats;
            last_tick = Instant::now();
        }
        super::batch::flush();
        if moved == 0 {
            // Acquire pairs with the Release in `Pipeline::stop`.
            if stop.load(Ordering::Acquire) {
                shard.stop();
                shard.sink_mut().drain(output::HELD_DRAIN);
                super::batch::stop();
                shard.stats.events_let_out_early = shard.sink_mut().let_out_early();
                *stats.lock().expect("stats lock") = shard.stats;
                return;
            }
            let idle = mono.saturating_sub(last_moved) >= SHARD_IDLE_AFTER_NS
                && !shard.sink_mut().holds_events();
            let tick = if idle { SHARD_IDLE_TICK } else { SHARD_TICK };
            park_until_woken(&parked, &queues, tick);
        }
    }
}

/// Parks until a reader queues a frame (or `timeout`, for the tick).
fn park_until_woken(parked: &AtomicBool, queues: &[FrameConsumer], timeout: Duration) {
    parked.store(true, Ordering::Relaxed);
    // Pairs with the fence in `ShardWake::wake`: a frame queued before the
    // reader saw `parked` is seen by the check below.
    fence(Ordering::SeqCst);
    if queues.iter().all(|q| q.queued_bytes() == 0) {
        std::thread::park_timeout(timeout);
    }
    parked.store(false, Ordering::Relaxed);
}
