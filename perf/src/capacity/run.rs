//! Reader threads replaying connections (records in the probes' format) into the pipeline at paced
//! then at paced offered loads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Result;
use tapwire::pipeline::output::Fanout;
use tapwire::pipeline::{Pipeline, PipelineConfig, Router};

use super::frames::{self, Exchange};
use super::stores::Counting;

/// Connections each reader keeps open, round-robin.
const CONNS_PER_READER: u64 = 512;
/// Records between pacing checks.
const PACE_BATCH: u64 = 64;
/// How often a reader publishes its drop counter.
const PUBLISH_EVERY: u64 = 4096;
/// First offered load of the search, payload bytes/s (turned into records/s by
/// the exchange's mean record size): low enough that nothing drops on a laptop.
const START_BYTES_PER_S: f64 = 8e6;
/// Factor between offered loads until the first drop.
const STEP: f64 = 1.5;
/// Most runs per body size (the search stops at the first drop, then narrows).
const MAX_STEPS: usize = 14;
/// Narrowing runs between the last clean load and the first dropping one.
const BISECT: usize = 2;
/// Narrowing runs in a quick run.
const QUICK_BISECT: usize = 1;

/// What to run.
#[derive(Debug, Clone)]
pub struct CapacityPlan {
    /// Reader threads.
    pub readers: usize,
    /// Shard threads.
    pub shards: usize,
    /// Seconds per run.
    pub secs: f64,
    /// Response body sizes, bytes.
    pub bodies: Vec<usize>,
    /// Fewer sweep points.
    pub quick: bool,
}

/// One run at one offered load.
#[derive(Debug, Clone, Copy, Default)]
pub struct Point {
    /// Response body bytes.
    pub body: usize,
    /// Offered records/s.
    pub offered: f64,
    /// Records the readers tried to queue, per second.
    pub pushed_per_s: f64,
    /// Records the shards took, per second.
    pub records_per_s: f64,
    /// Payload bytes the shards took, per second.
    pub bytes_per_s: f64,
    /// Transactions finished, per second.
    pub txns_per_s: f64,
    /// CPU seconds per second of shards, output and stores (process minus readers).
    pub pipeline_cores: f64,
    /// CPU seconds per second of the shard threads (reorder, HTTP parsing,
    /// BLAKE3, event JSON, stores' queues).
    pub shard_cores: f64,
    /// CPU seconds per second of a separate output thread (none since objects
    /// and events are made on the shards; kept for older results).
    pub output_cores: f64,
    /// CPU seconds per second of the readers.
    pub reader_cores: f64,
    /// Records dropped in user space (a shard thread gone).
    pub shard_gone: u64,
    /// Times a reader waited for room in a full shard queue (backpressure).
    pub pushback_waits: u64,
    /// Objects the object store received.
    pub objects: u64,
    /// Events the event store received.
    pub events: u64,
}

impl Point {
    /// Any drop at all.
    pub fn dropped(&self) -> u64 {
        self.shard_gone
    }

    /// Records/s per core of pipeline CPU.
    pub fn records_per_core(&self) -> f64 {
        self.records_per_s / self.pipeline_cores.max(1e-9)
    }

    /// Bytes/s per core of pipeline CPU.
    pub fn bytes_per_core(&self) -> f64 {
        self.bytes_per_s / self.pipeline_cores.max(1e-9)
    }
}

/// Every run.
#[derive(Debug, Clone, Default)]
pub struct CapacityResults {
    /// Reader and shard threads.
    pub readers: usize,
    /// Shard threads.
    pub shards: usize,
    /// Runs, by body size and offered load.
    pub points: Vec<Point>,
}

/// Searches, for each body size, the offered load at which drops begin.
pub fn run(plan: &CapacityPlan) -> Result<CapacityResults> {
    let mut out = CapacityResults {
        readers: plan.readers,
        shards: plan.shards,
        points: Vec::new(),
    };
    for &body in &plan.bodies {
        // Raise the offered load until something drops, then narrow the gap
        // between the last clean load and the first dropping one.
        let mut clean: Option<f64> = None;
        let mut dropping: Option<f64> = None;
        let mean_record = Exchange::new(body).mean_record_bytes();
        let mut rate = START_BYTES_PER_S / mean_record;
        for _ in 0..MAX_STEPS {
            let p = once(plan, body, rate)?;
            log_point(&p);
            out.points.push(p);
            if p.dropped() > 0 {
                dropping = Some(rate);
                break;
            }
            clean = Some(rate);
            rate *= STEP;
        }
        let narrowing = if plan.quick { QUICK_BISECT } else { BISECT };
        if let (Some(mut lo), Some(mut hi)) = (clean, dropping) {
            for _ in 0..narrowing {
                let mid = (lo + hi) / 2.0;
                let p = once(plan, body, mid)?;
                log_point(&p);
                out.points.push(p);
                if p.dropped() > 0 { hi = mid } else { lo = mid }
            }
        }
    }
    out.points.sort_by(|a, b| {
        (a.body, a.offered)
            .partial_cmp(&(b.body, b.offered))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(out)
}

fn log_point(p: &Point) {
    eprintln!(
        "bench: capacity {} B bodies, offered {:.0} records/s: took {:.0}/s ({:.1} MB/s), {:.2} pipeline cores, dropped {} (shard gone), {} pushback waits",
        p.body,
        p.offered,
        p.records_per_s,
        p.bytes_per_s / 1e6,
        p.pipeline_cores,
        p.shard_gone,
        p.pushback_waits
    );
}

fn once(plan: &CapacityPlan, body: usize, offered: f64) -> Result<Point> {
    let events = Arc::new(Counting::default());
    let objects = Arc::new(Counting::default());
    let fanout = Fanout::new(
        vec![events.clone()],
        vec![objects.clone()],
        Arc::default(),
        tapwire::plugins::HttpPlan::default_full(),
    );
    let config = PipelineConfig::new(plan.readers, plan.shards);
    let (pipeline, routers) = Pipeline::start(config, frames::decode, fanout)?;
    let exchange = Arc::new(Exchange::new(body));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(routers.len() + 1));
    let per_reader = offered / routers.len() as f64;
    let cpu0 = process_cpu();
    let handles: Vec<std::thread::JoinHandle<_>> = routers
        .into_iter()
        .enumerate()
        .map(|(i, router)| {
            let (exchange, stop, barrier) = (exchange.clone(), stop.clone(), barrier.clone());
            std::thread::Builder::new()
                .name(format!("reader-{i}"))
                .spawn(move || reader(i as u64, router, &exchange, &stop, &barrier, per_reader))
        })
        .collect::<Result<_, _>>()?;
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(plan.secs));
    stop.store(true, Ordering::Release);
    let mut pushed = 0;
    let mut reader_cpu = 0.0;
    for h in handles {
        let (n, cpu) = h.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
        pushed += n;
        reader_cpu += cpu;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Pipeline threads live for this run only: their lifetime CPU is this run's.
    let threads = crate::overhead::procfs::thread_ticks(std::process::id());
    let tck = crate::overhead::procfs::ticks_per_sec();
    let stage = |name: &str| {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t as f64 / tck)
            .sum::<f64>()
            / elapsed
    };
    let stats = pipeline.stop();
    let cpu = process_cpu() - cpu0;
    // Data records only: each reader also sent an open and a close per connection.
    let records: u64 = stats
        .shards
        .iter()
        .map(|s| s.records)
        .sum::<u64>()
        .saturating_sub(2 * CONNS_PER_READER * plan.readers as u64);
    let bytes: u64 = stats.shards.iter().map(|s| s.bytes).sum();
    let txns: u64 = stats.shards.iter().map(|s| s.transactions).sum();
    Ok(Point {
        body,
        offered,
        pushed_per_s: pushed as f64 / elapsed,
        records_per_s: records as f64 / elapsed,
        bytes_per_s: bytes as f64 / elapsed,
        txns_per_s: txns as f64 / elapsed,
        pipeline_cores: (cpu - reader_cpu).max(0.0) / elapsed,
        reader_cores: reader_cpu / elapsed,
        shard_cores: stage("shard"),
        output_cores: stage("output"),
        shard_gone: stats.routing().shard_gone,
        pushback_waits: stats.routing().pushback_waits,
        objects: objects.items(),
        events: events.items(),
    })
}

/// One reader: its own connections, round-robin, one record each per turn.
/// Returns records pushed and its CPU seconds.
fn reader(
    index: u64,
    mut router: Router,
    exchange: &Exchange,
    stop: &AtomicBool,
    barrier: &Barrier,
    rate: f64,
) -> (u64, f64) {
    let records = exchange.records();
    let first = index * CONNS_PER_READER + 1;
    let conns = first..first + CONNS_PER_READER;
    // (next seq, position in the exchange) per connection.
    let mut state: Vec<(u64, usize)> = vec![(1, 0); CONNS_PER_READER as usize];
    let mut ts = 1u64;
    for conn in conns.clone() {
        router.route(conn, &[&frames::open(conn, ts)]);
    }
    barrier.wait();
    let start = Instant::now();
    let mut pushed = 0u64;
    'outer: loop {
        for (conn, (seq, pos)) in conns.clone().zip(state.iter_mut()) {
            let (flow, payload) = records[*pos];
            ts += 1;
            let h = frames::data(conn, *seq, ts, flow, payload.len());
            router.route(conn, &[&h, payload]);
            *seq += 1;
            *pos = (*pos + 1) % records.len();
            pushed += 1;
            if pushed.is_multiple_of(PUBLISH_EVERY) {
                router.publish();
            }
            if pushed.is_multiple_of(PACE_BATCH) {
                // As a ring reader does when its ring is drained.
                router.wake_pending();
                // Acquire pairs with the Release store that ends the run.
                if stop.load(Ordering::Acquire) {
                    break 'outer;
                }
                let due = Duration::from_secs_f64(pushed as f64 / rate);
                while let Some(ahead) = due.checked_sub(start.elapsed()) {
                    if ahead > Duration::from_micros(200) {
                        std::thread::sleep(Duration::from_micros(100));
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    }
    for (conn, (seq, _)) in conns.zip(state.iter()) {
        router.route(conn, &[&frames::close(conn, *seq, ts)]);
    }
    router.wake_pending();
    router.publish();
    (pushed, thread_cpu())
}

fn thread_cpu() -> f64 {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu() -> f64 {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer and both clock ids exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
