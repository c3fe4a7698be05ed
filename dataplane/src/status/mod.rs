//! The status server (`--httpd-listen`, default `127.0.0.1:10001`): `GET
//! /healthz`, `GET /readyz` and `GET /metrics` (Prometheus text format), on a
//! thread of its own, reading numbers the agent publishes once a second. It
//! touches nothing on the capture path.
//!
//! - [`health`]: heartbeats of the pipeline threads and the stall rule.
//! - [`ready`]: readiness (probes attached, every store reached once).
//! - [`metrics`]: the published snapshot and its Prometheus encoding.
//! - [`http_metrics`]: request counters by bounded labels, kept by the shards.
//! - [`server`]: the HTTP listener.

pub mod client;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod gather;
pub mod health;
pub mod http_metrics;
pub mod metrics;
pub mod ready;
pub mod server;

pub use server::{DEFAULT_LISTEN, StatusServer};

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the status server shows, shared with the agent.
#[derive(Default)]
pub struct Status {
    /// Readiness conditions.
    pub ready: ready::Readiness,
    /// The latest counters, replaced by the agent once a second.
    snapshot: Mutex<Arc<metrics::Snapshot>>,
    /// Reloads done and the last one's outcome.
    reloads: Mutex<(u64, Option<Result<String, String>>)>,
    reloaded: Condvar,
}

impl Status {
    /// Replaces the published counters.
    pub fn publish(&self, snapshot: metrics::Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// Records a reload's outcome (the message `tapwire reload-config` shows).
    pub fn reloaded(&self, result: Result<String, String>) {
        let mut reloads = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        reloads.0 += 1;
        reloads.1 = Some(result);
        self.reloaded.notify_all();
    }

    /// Asks the agent to reload (a SIGHUP to itself, which the main thread
    /// handles) and waits at most `timeout` for the outcome.
    pub fn request_reload(&self, timeout: Duration) -> Option<Result<String, String>> {
        let reloads = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        let before = reloads.0;
        // SAFETY: kill with our own pid and a valid signal has no preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        let (reloads, _) = self
            .reloaded
            .wait_timeout_while(reloads, timeout, |r| r.0 == before)
            .unwrap_or_else(|e| e.into_inner());
        if reloads.0 == before {
            return None;
        }
        reloads.1.clone()
    }

    /// The latest published counters.
    pub fn snapshot(&self) -> Arc<metrics::Snapshot> {
        Arc::clone(&self.snapshot.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
