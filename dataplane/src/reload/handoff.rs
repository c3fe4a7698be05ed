//! Handing the output thread a new set of stores while it holds nothing: the
//! reload pauses it between two deliveries, replaces stores, and resumes it
//! with the new [`Fanout`]. The output thread pays one relaxed load per loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::pipeline::output::Fanout;
use crate::status::health::Beat;

/// The reload's side and the output thread's side of the handoff.
#[derive(Default)]
pub struct OutputHandoff {
    requested: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    paused: bool,
    resume: bool,
    next: Option<Fanout>,
}

impl OutputHandoff {
    /// Asks the output thread to stop between deliveries and waits until it has,
    /// at most `timeout`; false if it did not (it is then not paused).
    pub fn pause(&self, timeout: Duration) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.resume = false;
        // Release pairs with the Acquire load in `checkpoint`.
        self.requested.store(true, Ordering::Release);
        let (mut state, result) = self
            .changed
            .wait_timeout_while(state, timeout, |s| !s.paused)
            .unwrap_or_else(|e| e.into_inner());
        if result.timed_out() && !state.paused {
            // A thread arriving late must not wait for a resume nobody sends.
            self.requested.store(false, Ordering::Release);
            state.resume = true;
            return false;
        }
        true
    }

    /// Lets a paused output thread go on, delivering to `next`.
    pub fn resume(&self, next: Fanout) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.next = Some(next);
        state.resume = true;
        self.changed.notify_all();
    }

    /// Called by the output thread between deliveries: when a pause is asked,
    /// waits for the resume and installs the new stores. It keeps beating while
    /// it waits: a pause is not a stall.
    #[inline]
    pub fn checkpoint(&self, fanout: &mut Fanout, beat: &mut Beat) {
        // Acquire pairs with the Release store in `pause`.
        if !self.requested.load(Ordering::Acquire) {
            return;
        }
        // Let go of the stores while paused: a replaced S3 store's spool must be
        // closed before a new store opens the same directory.
        *fanout = Fanout {
            events: Vec::new(),
            objects: Vec::new(),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.paused = true;
        self.changed.notify_all();
        while !state.resume {
            state = self
                .changed
                .wait_timeout(state, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            beat.beat();
        }
        if let Some(next) = state.next.take() {
            *fanout = next;
        }
        state.paused = false;
        state.resume = false;
        self.requested.store(false, Ordering::Release);
    }
}
