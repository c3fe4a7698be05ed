//! Process attributes that do not change while a program runs (its executable),
//! taken when the program starts — at its exec record, or at agent start for
//! processes already running — and kept until shortly after it exits, so an
//! event written after a short-lived client exited still names its program.
//!
//! The control thread writes the table (exec and exit records); the output
//! thread reads it once per event.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long an exited process's attributes are kept: its last transactions
/// may still be in a shard (waiting for the connection's close or a reorder
/// timeout) when it exits.
pub const EXITED_KEPT: Duration = Duration::from_secs(60);

/// Processes remembered at most; past it the oldest exited ones go first, and
/// a live process past it is looked up again when needed.
const MAX_PROCESSES: usize = 65_536;

#[derive(Debug)]
struct Proc {
    /// Kernel time of the exec that started the current program (0 when taken
    /// at agent start).
    exec_ns: u64,
    exe: Option<Arc<str>>,
    exited: Option<Instant>,
}

/// Executables by pid.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: Mutex<HashMap<u32, Proc>>,
}

/// The executable of a running process, from `/proc`.
fn read_exe(pid: u32) -> Option<Arc<str>> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
}

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the attributes of every process running now (agent start).
    pub fn scan(&self, pids: impl IntoIterator<Item = u32>) {
        let found: Vec<(u32, Option<Arc<str>>)> =
            pids.into_iter().map(|pid| (pid, read_exe(pid))).collect();
        let mut procs = self.lock();
        for (pid, exe) in found {
            procs.entry(pid).or_insert(Proc {
                exec_ns: 0,
                exe,
                exited: None,
            });
        }
    }

    /// `pid` exec'd at `ts_ns` (kernel time) the file `filename`. The process
    /// is read at once (it has just exec'd); `filename` stands in if it is
    /// already gone and was given as an absolute path.
    pub fn exec(&self, pid: u32, ts_ns: u64, filename: &[u8]) {
        let exe = read_exe(pid).or_else(|| {
            let name = std::str::from_utf8(filename).ok()?;
            Path::new(name).is_absolute().then(|| Arc::from(name))
        });
        let mut procs = self.lock();
        if procs.len() >= MAX_PROCESSES {
            Self::evict(&mut procs);
        }
        match procs.get_mut(&pid) {
            // Records of two CPUs can arrive out of order: keep the newer exec.
            Some(p) if p.exec_ns > ts_ns => {}
            _ => {
                procs.insert(
                    pid,
                    Proc {
                        exec_ns: ts_ns,
                        exe,
                        exited: None,
                    },
                );
            }
        }
    }

    /// `pid` exited at `ts_ns`; its attributes are released [`EXITED_KEPT`]
    /// later.
    pub fn exit(&self, pid: u32, ts_ns: u64) {
        if let Some(p) = self.lock().get_mut(&pid)
            && p.exec_ns <= ts_ns
        {
            p.exited = Some(Instant::now());
        }
    }

    /// Releases processes that exited more than [`EXITED_KEPT`] ago.
    pub fn expire(&self) {
        let now = Instant::now();
        self.lock()
            .retain(|_, p| p.exited.is_none_or(|t| now.duration_since(t) < EXITED_KEPT));
    }

    fn evict(procs: &mut HashMap<u32, Proc>) {
        procs.retain(|_, p| p.exited.is_none());
        if procs.len() >= MAX_PROCESSES {
            procs.clear();
        }
    }

    /// The executable of `pid`: as taken at its exec or at agent start; for a
    /// process seen neither way (its exec record was lost), read now.
    pub fn exe(&self, pid: u32) -> Option<Arc<str>> {
        if let Some(p) = self.lock().get(&pid) {
            return p.exe.clone();
        }
        let exe = read_exe(pid)?;
        let mut procs = self.lock();
        if procs.len() < MAX_PROCESSES {
            procs.insert(
                pid,
                Proc {
                    exec_ns: 0,
                    exe: Some(Arc::clone(&exe)),
                    exited: None,
                },
            );
        }
        Some(exe)
    }

    /// Processes held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no process is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_outlives_the_process_until_released() {
        let t = ProcessTable::default();
        // A pid that does not exist: the exec's file name stands in.
        let pid = u32::MAX - 7;
        t.exec(pid, 100, b"/usr/bin/curl");
        assert_eq!(t.exe(pid).as_deref(), Some("/usr/bin/curl"));
        t.exit(pid, 200);
        assert_eq!(t.exe(pid).as_deref(), Some("/usr/bin/curl"));
        t.expire();
        assert_eq!(t.len(), 1, "kept for a while after exit");
        // An older exec arriving late does not replace the newer one.
        t.exec(pid, 50, b"/bin/sh");
        assert_eq!(t.exe(pid).as_deref(), Some("/usr/bin/curl"));
        // A relative name cannot stand in.
        t.exec(pid - 1, 100, b"./curl");
        assert_eq!(t.exe(pid - 1), None);
    }

    #[test]
    fn running_processes_are_taken_at_start() {
        let t = ProcessTable::default();
        let me = std::process::id();
        t.scan([me]);
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(t.exe(me).as_deref(), exe.to_str());
    }
}
