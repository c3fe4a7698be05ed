//! Liveness: every pipeline thread (ring readers and shards)
//! registers a [`Heartbeat`] and bumps it once per loop. Each of them loops at
//! least once a second, busy or idle (a reader's poll timeout, a shard's idle
//! tick), so a heartbeat that has not moved for [`STALL_LIMIT`]
//! means the thread is stuck inside one call with its work waiting behind it.
//!
//! A bump is one relaxed store of a thread-local count, made once per loop (a
//! batch), never per record. The status server samples the counts once a
//! second and remembers when each last changed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a pipeline thread may go without completing a loop before
/// `/healthz` fails. Loops take milliseconds; 10 s is far past any pause a
/// healthy thread makes (a slow stdout reader, a large body hashed at once).
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Every registered heartbeat.
static REGISTRY: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

/// One thread's heartbeat, bumped by the thread.
#[derive(Debug, Default)]
pub struct Heartbeat {
    beats: AtomicU64,
    retired: AtomicBool,
}

/// The thread's side: bump once per loop; dropping it retires the heartbeat.
#[derive(Debug)]
pub struct Beat {
    shared: Arc<Heartbeat>,
    count: u64,
}

impl Beat {
    /// Records one completed loop.
    #[inline]
    pub fn beat(&mut self) {
        self.count = self.count.wrapping_add(1);
        // Relaxed: the sampler only needs to see the value change eventually.
        self.shared.beats.store(self.count, Ordering::Relaxed);
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        self.shared.retired.store(true, Ordering::Relaxed);
    }
}

struct Watched {
    name: String,
    heartbeat: Arc<Heartbeat>,
    last_value: u64,
    last_change: Instant,
}

/// Registers a thread named `name` (e.g. `shard-0`); call on that thread.
pub fn register(name: impl Into<String>) -> Beat {
    let heartbeat = Arc::new(Heartbeat::default());
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Watched {
            name: name.into(),
            heartbeat: Arc::clone(&heartbeat),
            last_value: 0,
            last_change: Instant::now(),
        });
    Beat {
        shared: heartbeat,
        count: 0,
    }
}

/// Samples every heartbeat (forgetting retired ones) and returns the threads
/// stalled for at least `limit`, with how long.
pub fn stalled(limit: Duration) -> Vec<(String, Duration)> {
    let now = Instant::now();
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    registry.retain(|w| !w.heartbeat.retired.load(Ordering::Relaxed));
    let mut out = Vec::new();
    for w in registry.iter_mut() {
        let value = w.heartbeat.beats.load(Ordering::Relaxed);
        if value != w.last_value {
            w.last_value = value;
            w.last_change = now;
        }
        let idle = now.duration_since(w.last_change);
        if idle >= limit {
            out.push((w.name.clone(), idle));
        }
    }
    out
}

/// Threads currently watched.
pub fn watched() -> usize {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    registry.retain(|w| !w.heartbeat.retired.load(Ordering::Relaxed));
    registry.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_stops_beating_is_reported_and_a_retired_one_is_not() {
        let mut moving = register("test-moving");
        let _stuck = register("test-stuck");
        let gone = register("test-gone");
        drop(gone);
        stalled(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(30));
        moving.beat();
        let names: Vec<String> = stalled(Duration::from_millis(20))
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("test-"))
            .collect();
        assert_eq!(names, ["test-stuck"]);
    }
}
