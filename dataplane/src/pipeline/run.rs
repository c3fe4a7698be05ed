//! Wiring: the queues between readers, shards and the output thread, and the
//! shard threads themselves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::output::{self, Fanout};
use super::queue::{FrameConsumer, FrameProducer, frame_queue};
use super::shard::{Decode, Output, Shard, ShardStats};

/// Bytes of all (reader, shard) frame queues together. Queues are allocated up front,
/// so the budget is split between the readers × shards pairs.
pub const FRAME_QUEUE_BUDGET_BYTES: usize = 64 << 20;
/// Bytes of one (reader, shard) frame queue at most: 4 MiB holds a few hundred
/// full-size records, enough to ride out a shard's brief stall without drops.
pub const MAX_FRAME_QUEUE_BYTES: usize = 4 << 20;
/// Bytes of one frame queue at least: a few dozen full-size records.
pub const MIN_FRAME_QUEUE_BYTES: usize = 1 << 20;
/// Transactions each shard's output queue holds.
pub const OUTPUT_QUEUE_ITEMS: usize = 16 * 1024;
/// Frames a shard takes from one queue before looking at the next.
const SHARD_BATCH: usize = 256;
/// How often a shard checks reorder timeouts and publishes its counters.
const SHARD_TICK: Duration = Duration::from_millis(50);
/// How long a shard sleeps when all its queues are empty.
const SHARD_IDLE: Duration = Duration::from_micros(200);

/// Pipeline sizes.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Reader threads (one per CPU ring).
    pub readers: usize,
    /// Shard threads.
    pub shards: usize,
}

/// Routes a reader's frames to shards; one per reader thread, not shared.
pub struct Router {
    queues: Vec<FrameProducer>,
    dropped: u64,
    published: Arc<AtomicU64>,
}

impl Router {
    /// Queues `frame` (made of `parts`) for the shard owning `conn_id`. A full
    /// queue drops the frame and counts it; nothing blocks.
    #[inline]
    pub fn route(&mut self, conn_id: u64, parts: &[&[u8]]) {
        let shard = shard_of(conn_id, self.queues.len());
        if self.queues[shard].push(parts).is_err() {
            self.dropped += 1;
        }
    }

    /// Publishes the drop count; call now and then, not per frame.
    pub fn publish(&self) {
        self.published.store(self.dropped, Ordering::Relaxed);
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
    /// Frames dropped because a shard queue was full, per reader.
    pub queue_full: Vec<u64>,
    /// Each shard's counters.
    pub shards: Vec<ShardStats>,
}

impl PipelineStats {
    /// Every shard's counters added up.
    pub fn total(&self) -> ShardStats {
        self.shards
            .iter()
            .fold(ShardStats::default(), |a, b| a.sum(b))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.publish();
    }
}

/// The running shards and output thread.
pub struct Pipeline {
    stop_shards: Arc<AtomicBool>,
    stop_output: Arc<AtomicBool>,
    shards: Vec<JoinHandle<()>>,
    output: Option<JoinHandle<()>>,
    shard_stats: Vec<Arc<Mutex<ShardStats>>>,
    reader_drops: Vec<Arc<AtomicU64>>,
    handoff: Arc<crate::reload::OutputHandoff>,
}

impl Pipeline {
    /// Starts the shard and output threads; returns one [`Router`] per reader.
    pub fn start(
        config: PipelineConfig,
        decode: Decode,
        fanout: Fanout,
    ) -> std::io::Result<(Self, Vec<Router>)> {
        let shards = config.shards.max(1);
        let readers = config.readers.max(1);
        let queue_bytes = (FRAME_QUEUE_BUDGET_BYTES / (readers * shards))
            .clamp(MIN_FRAME_QUEUE_BYTES, MAX_FRAME_QUEUE_BYTES);
        let mut consumers: Vec<Vec<FrameConsumer>> = (0..shards).map(|_| Vec::new()).collect();
        let mut routers = Vec::new();
        let mut reader_drops = Vec::new();
        for _ in 0..readers {
            let mut queues = Vec::with_capacity(shards);
            for consumer_list in consumers.iter_mut() {
                let (p, c) = frame_queue(queue_bytes);
                queues.push(p);
                consumer_list.push(c);
            }
            let published = Arc::new(AtomicU64::new(0));
            reader_drops.push(published.clone());
            routers.push(Router {
                queues,
                dropped: 0,
                published,
            });
        }
        let stop_shards = Arc::new(AtomicBool::new(false));
        let stop_output = Arc::new(AtomicBool::new(false));
        let mut outputs = Vec::new();
        let mut handles = Vec::new();
        let mut shard_stats = Vec::new();
        for (i, queues) in consumers.into_iter().enumerate() {
            let (tx, rx) = rtrb::RingBuffer::<Output>::new(OUTPUT_QUEUE_ITEMS);
            outputs.push(rx);
            let stats = Arc::new(Mutex::new(ShardStats::default()));
            shard_stats.push(stats.clone());
            let stop = stop_shards.clone();
            let shard = Shard::new(decode, tx);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("shard-{i}"))
                    .spawn(move || run_shard(shard, queues, stats, stop))?,
            );
        }
        let stop = stop_output.clone();
        let handoff = Arc::new(crate::reload::OutputHandoff::default());
        let output_handoff = Arc::clone(&handoff);
        let output = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || output::run(outputs, fanout, stop, &output_handoff))?;
        let pipeline = Pipeline {
            stop_shards,
            stop_output,
            shards: handles,
            output: Some(output),
            shard_stats,
            reader_drops,
            handoff,
        };
        Ok((pipeline, routers))
    }

    /// How a reload hands the output thread new stores.
    pub fn output_handoff(&self) -> &crate::reload::OutputHandoff {
        &self.handoff
    }

    /// Counters so far (as of each thread's last publication).
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            queue_full: self
                .reader_drops
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .collect(),
            shards: self
                .shard_stats
                .iter()
                .map(|s| *s.lock().expect("stats lock"))
                .collect(),
        }
    }

    /// Drains the queues, stops the threads and waits for them. Call after the
    /// readers have stopped (their routers dropped).
    pub fn stop(mut self) -> PipelineStats {
        // Release pairs with the Acquire loads in the shard and output loops.
        self.stop_shards.store(true, Ordering::Release);
        for handle in self.shards.drain(..) {
            let _ = handle.join();
        }
        self.stop_output.store(true, Ordering::Release);
        if let Some(output) = self.output.take() {
            let _ = output.join();
        }
        self.stats()
    }
}

fn now_ns() -> u64 {
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
    mut shard: Shard<rtrb::Producer<Output>>,
    mut queues: Vec<FrameConsumer>,
    stats: Arc<Mutex<ShardStats>>,
    stop: Arc<AtomicBool>,
) {
    let mut last_tick = Instant::now();
    let mut beat =
        crate::status::health::register(std::thread::current().name().unwrap_or("shard"));
    loop {
        // One clock read per round, not per record.
        let now = now_ns();
        let mut moved = 0;
        for queue in &mut queues {
            for _ in 0..SHARD_BATCH {
                if queue.pop(|frame| shard.offer(frame, now)).is_none() {
                    break;
                }
                moved += 1;
            }
        }
        #[cfg(feature = "fault-injection")]
        if moved > 0 {
            crate::status::fault::stall_point("shard");
        }
        if last_tick.elapsed() >= SHARD_TICK {
            beat.beat();
            shard.tick(now);
            *stats.lock().expect("stats lock") = shard.stats;
            last_tick = Instant::now();
        }
        if moved == 0 {
            // Acquire pairs with the Release in `Pipeline::stop`.
            if stop.load(Ordering::Acquire) {
                shard.tick(u64::MAX);
                *stats.lock().expect("stats lock") = shard.stats;
                return;
            }
            std::thread::sleep(SHARD_IDLE);
        }
    }
}
