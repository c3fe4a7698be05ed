//! Detaching every probe at once, for a forced exit.
//!
//! The kernel detaches a uprobe with a grace period of its own (RCU tasks
//! trace), and at process exit it closes descriptors one after another: with a
//! few dozen probes a plain `exit` stays in the kernel for seconds after the
//! agent has decided to go. Closing the probes' descriptors from many threads
//! at once lets those grace periods overlap, so the process is gone in about
//! one of them.

use std::os::fd::RawFd;

/// Most threads used to close descriptors.
const MAX_CLOSERS: usize = 64;

/// File descriptors of this process that hold kernel hooks: perf events (uprobes,
/// tracepoints) and BPF links.
fn hook_fds() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_str()?;
            (target == "anon_inode:[perf_event]" || target == "anon_inode:bpf_link").then_some(fd)
        })
        .collect()
}

/// Releases every hook descriptor concurrently and waits until the kernel has
/// detached them. Each number is pointed at `/dev/null` (`dup2`) rather than
/// closed, so the probes' owners still hold valid descriptors until the process
/// exits. Only for a process about to exit.
pub fn close_hooks_for_exit() {
    let fds = hook_fds();
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    let null = std::os::fd::AsRawFd::as_raw_fd(&null);
    if fds.is_empty() {
        return;
    }
    let per_thread = fds.len().div_ceil(MAX_CLOSERS);
    std::thread::scope(|s| {
        for chunk in fds.chunks(per_thread) {
            s.spawn(move || {
                for &fd in chunk {
                    // SAFETY: both descriptors are open; `fd` stays open (now on
                    // /dev/null) for its owner, which only closes it.
                    unsafe { libc::dup2(null, fd) };
                }
            });
        }
    });
}
