//! SIGINT/SIGTERM (stop) and SIGHUP (reload the config) handling without
//! async-signal-safety concerns: the signals are blocked in every thread
//! (threads inherit the mask) and the main thread waits for them with `sigwait`.

use std::io;

/// SIGINT, SIGTERM and SIGHUP, blocked for the process's threads.
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
        Ok(Self { set })
    }

    /// Waits up to `timeout` for SIGINT, SIGTERM or SIGHUP; returns its name if one came.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<&'static str> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.set` was initialised in `block`; `ts` is valid; siginfo may be null.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (sig > 0).then(|| name(sig))
    }

    /// Waits for SIGINT, SIGTERM or SIGHUP and returns its name.
    pub fn wait(&self) -> &'static str {
        let mut sig = 0;
        // SAFETY: `self.set` was initialised in `block`; `sig` is a valid out-pointer.
        while unsafe { libc::sigwait(&self.set, &mut sig) } != 0 {}
        name(sig)
    }
}

/// The name of one of the handled signals.
fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "SIGTERM",
    }
}
