//! SIGINT/SIGTERM/SIGHUP handling without async-signal-safety concerns: the
//! signals are blocked in every thread (threads inherit the mask) and are taken
//! with `sigtimedwait`, by the main thread while running and by a watchdog thread
//! while stopping.
//!
//! - SIGINT or SIGTERM stops the agent; a second one during the stop forces an
//!   immediate exit, and so does the stop outlasting its deadline.
//! - SIGHUP never stops the agent.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A signal the agent acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: stop.
    Interrupt,
    /// SIGTERM: stop.
    Terminate,
    /// SIGHUP: reload.
    Hangup,
}

impl Signal {
    /// The signal's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        }
    }
}

/// Exit status of a forced exit (128 + SIGTERM, as a shell reports it).
const FORCED_EXIT: i32 = 143;

/// SIGINT, SIGTERM and SIGHUP, blocked for the process's threads.
#[derive(Clone, Copy)]
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread; call before
    /// spawning threads.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t for all five calls.
        let rc = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // A shell starts background jobs with SIGINT (and `nohup` with SIGHUP)
        // ignored, and an ignored signal is discarded even while blocked: the
        // agent would never see the stop it is sent. Waited for here, they
        // need their default disposition back.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: restoring the default action of a signal this thread
            // has just blocked; no handler is installed.
            if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self { set })
    }

    /// Waits up to `timeout` for one of the signals.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Signal> {
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `self.set` was initialised in `block`; `ts` is valid; siginfo may be null.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        match sig {
            libc::SIGINT => Some(Signal::Interrupt),
            libc::SIGTERM => Some(Signal::Terminate),
            libc::SIGHUP => Some(Signal::Hangup),
            _ => None,
        }
    }

    /// Starts the watchdog for a stop that must end by `deadline`: a second
    /// SIGINT/SIGTERM, or the deadline passing, exits the process at once.
    pub fn watch_stop(self, deadline: Instant) -> io::Result<()> {
        std::thread::Builder::new()
            .name("stop-watchdog".into())
            .spawn(move || {
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        // Acquire pairs with the Release in `stop_finished`.
                        if STOP_FINISHED.load(Ordering::Acquire) {
                            // Everything was delivered and counted; only the
                            // process's own teardown ran late.
                            exit_after_stop(0);
                        }
                        tracing::error!("stopping outlasted its deadline; exiting now");
                        exit_now();
                    }
                    match self.wait_timeout(left) {
                        Some(Signal::Hangup) | None => {}
                        Some(signal) => {
                            tracing::warn!(
                                signal = signal.name(),
                                "second signal while stopping; exiting now"
                            );
                            exit_now();
                        }
                    }
                }
            })
            .map(drop)
    }
}

/// Set once the stop has delivered and logged everything it could: past the
/// deadline the watchdog then exits with success instead of [`FORCED_EXIT`].
static STOP_FINISHED: AtomicBool = AtomicBool::new(false);

/// Marks the stop as finished (stores flushed, final counters logged).
pub fn stop_finished() {
    // Release pairs with the watchdog's Acquire load.
    STOP_FINISHED.store(true, Ordering::Release);
}

/// Exits at once with `code`, probes detached in parallel first.
fn exit_after_stop(code: i32) -> ! {
    crate::capture::teardown::close_hooks_for_exit();
    std::process::exit(code);
}

/// Exits at once with [`FORCED_EXIT`], probes detached in parallel first so the
/// kernel does not keep the process for seconds detaching them one by one.
fn exit_now() -> ! {
    exit_after_stop(FORCED_EXIT)
}
