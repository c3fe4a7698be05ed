//! Process attributes that do not change while a program runs (its executable,
//! and what `tap.filters` skips of it), taken when the program starts — at its exec record, or at agent start for
//! processes already running — and kept until shortly after it exits, so an
//! event written after a short-lived client exited still names its program.
//!
//! The control thread writes the table (exec and exit records); the output
//! thread reads it once per event.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::filters::ProcessFilters;

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
    /// `config::skip` bits of `tap.filters` for this program.
    skip: u32,
    exited: Option<Instant>,
}

/// Executables (and filter decisions) by pid.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: Mutex<HashMap<u32, Proc>>,
    filters: ProcessFilters,
    /// Events dropped in user space because a filter skips their process: a
    /// connection tracked between the program's exec and the decision
    /// reaching the probes.
    filtered_late: AtomicU64,
    /// Programs a filter skips whose decision was written into the probes'
    /// map (at their exec, or at agent start).
    filtered_programs: AtomicU64,
    /// Bumped after any pid's entry is replaced or removed, so that a
    /// [`ProcessCache`] knows its copies may be stale.
    generation: AtomicU64,
    /// This table among all the tables of the process, so that a cache
    /// moved to another table does not take its generation for its own.
    id: TableId,
}

/// A number no other [`ProcessTable`] of this process has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TableId(u64);

impl Default for TableId {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TableId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The executable of a running process, from `/proc`.
fn read_exe(pid: u32) -> Option<Arc<str>> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
}

impl ProcessTable {
    /// An empty table deciding `filters` for each program it learns.
    pub fn new(filters: ProcessFilters) -> Self {
        Self {
            filters,
            ..Self::default()
        }
    }

    /// True when `tap.filters` has entries.
    pub fn has_filters(&self) -> bool {
        !self.filters.is_empty()
    }

    /// The `config::skip` bits for the program `pid` runs now (read from
    /// `/proc`; 0 if it is gone).
    pub fn skip_running(&self, pid: u32) -> u32 {
        self.decide(read_exe(pid).as_deref())
    }

    /// The `config::skip` bits for a program at `exe`.
    fn decide(&self, exe: Option<&str>) -> u32 {
        exe.map_or(0, |e| self.filters.skip(e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the attributes of every process running now (agent start).
    /// Returns the processes a filter applies to, with their `config::skip`
    /// bits.
    pub fn scan(&self, pids: impl IntoIterator<Item = u32>) -> Vec<(u32, u32)> {
        let found: Vec<(u32, Option<Arc<str>>)> =
            pids.into_iter().map(|pid| (pid, read_exe(pid))).collect();
        let mut filtered = Vec::new();
        let mut procs = self.lock();
        for (pid, exe) in found {
            let skip = self.decide(exe.as_deref());
            if skip != 0 {
                filtered.push((pid, skip));
            }
            procs.entry(pid).or_insert(Proc {
                exec_ns: 0,
                exe,
                skip,
                exited: None,
            });
        }
        filtered
    }

    /// `pid` exec'd at `ts_ns` (kernel time) the file `filename`. The process
    /// is read at once (it has just exec'd); `filename` stands in if it is
    /// already gone and was given as an absolute path. Returns the
    /// `config::skip` bits of the process's current program.
    pub fn exec(&self, pid: u32, ts_ns: u64, filename: &[u8]) -> u32 {
        let exe = read_exe(pid).or_else(|| {
            let name = std::str::from_utf8(filename).ok()?;
            Path::new(name).is_absolute().then(|| Arc::from(name))
        });
        let skip = self.decide(exe.as_deref());
        let mut procs = self.lock();
        if procs.len() >= MAX_PROCESSES {
            Self::evict(&mut procs);
            self.changed();
        }
        match procs.get_mut(&pid) {
            // Records of two CPUs can arrive out of order: keep the newer exec.
            Some(p) if p.exec_ns > ts_ns => p.skip,
            _ => {
                procs.insert(
                    pid,
                    Proc {
                        exec_ns: ts_ns,
                        exe,
                        skip,
                        exited: None,
                    },
                );
                self.changed();
                skip
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
        let mut procs = self.lock();
        let before = procs.len();
        procs.retain(|_, p| p.exited.is_none_or(|t| now.duration_since(t) < EXITED_KEPT));
        if procs.len() != before {
            self.changed();
        }
    }

    fn evict(procs: &mut HashMap<u32, Proc>) {
        procs.retain(|_, p| p.exited.is_none());
        if procs.len() >= MAX_PROCESSES {
            procs.clear();
        }
    }

    /// An entry was replaced or removed (called with the table locked,
    /// after the change).
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes so far that may make a [`ProcessCache`]'s copies stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The executable of `pid`: as taken at its exec or at agent start; for a
    /// process seen neither way (its exec record was lost), read now.
    pub fn exe(&self, pid: u32) -> Option<Arc<str>> {
        self.lookup(pid).0
    }

    /// The `config::skip` bits `tap.filters` gives `pid`'s program (0: none).
    pub fn skip(&self, pid: u32) -> u32 {
        self.lookup(pid).1
    }

    /// Counts one event dropped because a filter skips its process.
    pub fn count_filtered_late(&self) {
        self.filtered_late.fetch_add(1, Ordering::Relaxed);
    }

    /// Events dropped so far because a filter skips their process.
    pub fn filtered_late(&self) -> u64 {
        self.filtered_late.load(Ordering::Relaxed)
    }

    /// Counts one program whose filter decision reached the probes.
    pub fn count_filtered_program(&self) {
        self.filtered_programs.fetch_add(1, Ordering::Relaxed);
    }

    /// Programs so far whose filter decision reached the probes.
    pub fn filtered_programs(&self) -> u64 {
        self.filtered_programs.load(Ordering::Relaxed)
    }

    fn lookup(&self, pid: u32) -> (Option<Arc<str>>, u32) {
        if let Some(p) = self.lock().get(&pid) {
            return (p.exe.clone(), p.skip);
        }
        let Some(exe) = read_exe(pid) else {
            // Gone already (its exec and start were both missed): remembered
            // as exited, so its other late events do not read `/proc` again,
            // and released with the exited.
            let mut procs = self.lock();
            if procs.len() < MAX_PROCESSES {
                procs.entry(pid).or_insert(Proc {
                    exec_ns: 0,
                    exe: None,
                    skip: 0,
                    exited: Some(Instant::now()),
                });
            }
            return (None, 0);
        };
        let skip = self.decide(Some(&exe));
        let mut procs = self.lock();
        if procs.len() < MAX_PROCESSES {
            procs.insert(
                pid,
                Proc {
                    exec_ns: 0,
                    exe: Some(Arc::clone(&exe)),
                    skip,
                    exited: None,
                },
            );
        }
        (Some(exe), skip)
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

/// Processes a cache holds at most; past it, it starts again.
const MAX_CACHED: usize = 4096;

/// One thread's copies of [`ProcessTable`] entries, for the lookups made
/// per transaction: no lock, and an executable `Arc` of the thread's own, so
/// that threads do not move one reference count's cache line between them.
/// All copies are dropped when the table's [`ProcessTable::generation`]
/// moves (an exec, a release).
#[derive(Default)]
pub struct ProcessCache {
    /// The table and its generation the copies were taken from (id 0: none).
    table: u64,
    generation: u64,
    by_pid: HashMap<u32, (Option<Arc<str>>, u32), foldhash::fast::RandomState>,
}

impl ProcessCache {
    /// The executable of `pid` and the `config::skip` bits of its program,
    /// as [`ProcessTable::exe`] and [`ProcessTable::skip`] give them.
    pub fn lookup(&mut self, table: &ProcessTable, pid: u32) -> &(Option<Arc<str>>, u32) {
        let generation = table.generation();
        if (table.id.0, generation) != (self.table, self.generation)
            || self.by_pid.len() >= MAX_CACHED
        {
            self.by_pid.clear();
            (self.table, self.generation) = (table.id.0, generation);
        }
        self.by_pid.entry(pid).or_insert_with(|| {
            let (exe, skip) = table.lookup(pid);
            (exe.map(|e| Arc::from(&*e)), skip)
        })
    }

    /// The executable of `pid` ([`ProcessTable::exe`]).
    pub fn exe(&mut self, table: &ProcessTable, pid: u32) -> Option<Arc<str>> {
        self.lookup(table, pid).0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapwire_common::config::skip;

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
    fn a_cache_follows_execs_and_releases() {
        let t = ProcessTable::default();
        let mut cache = ProcessCache::default();
        let pid = u32::MAX - 11;
        t.exec(pid, 100, b"/usr/bin/curl");
        assert_eq!(cache.exe(&t, pid).as_deref(), Some("/usr/bin/curl"));
        // A new program in the same process is seen at once.
        t.exec(pid, 200, b"/usr/bin/wget");
        assert_eq!(cache.exe(&t, pid).as_deref(), Some("/usr/bin/wget"));
        // Released: the pid is looked up again (gone: no executable).
        t.exit(pid, 300);
        assert_eq!(cache.exe(&t, pid).as_deref(), Some("/usr/bin/wget"));
        // A machine up for less than EXITED_KEPT cannot date an exit that
        // long ago: say so, rather than overflow.
        let Some(long_ago) = Instant::now().checked_sub(EXITED_KEPT) else {
            panic!("the monotonic clock is younger than {EXITED_KEPT:?}: rerun later");
        };
        t.lock().get_mut(&pid).unwrap().exited = Some(long_ago);
        t.expire();
        assert_eq!(cache.exe(&t, pid), None);
        // Another table (another configuration's filters): nothing of the
        // first is taken for it, whatever the two tables' generations.
        let (first, other) = (ProcessTable::default(), ProcessTable::default());
        first.exec(pid, 100, b"/usr/bin/curl");
        other.exec(pid, 100, b"/usr/bin/true");
        assert_eq!(first.generation(), other.generation());
        assert_eq!(cache.exe(&first, pid).as_deref(), Some("/usr/bin/curl"));
        assert_eq!(cache.exe(&other, pid).as_deref(), Some("/usr/bin/true"));
        // The copy is the cache's own, not the table's reference.
        let me = std::process::id();
        let mine = cache.exe(&t, me).unwrap();
        let table = t.exe(me).unwrap();
        assert_eq!(mine, table);
        assert!(!Arc::ptr_eq(&mine, &table));
    }

    #[test]
    fn a_process_gone_before_it_was_seen_is_looked_up_once() {
        let t = ProcessTable::default();
        let pid = u32::MAX - 9;
        assert_eq!(t.exe(pid), None);
        assert_eq!(t.len(), 1, "remembered as gone");
        assert_eq!(t.exe(pid), None);
        // A later exec of that pid is taken as usual.
        t.exec(pid, 100, b"/usr/bin/curl");
        assert_eq!(t.exe(pid).as_deref(), Some("/usr/bin/curl"));
    }

    #[test]
    fn running_processes_are_taken_at_start() {
        let t = ProcessTable::default();
        let me = std::process::id();
        assert_eq!(t.scan([me]), []);
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(t.exe(me).as_deref(), exe.to_str());
        assert_eq!(t.skip(me), 0);
    }

    #[test]
    fn filters_are_decided_per_program() {
        let filters: crate::config::Filters =
            serde_yaml::from_str("custom: [{exe: /curl}, {exe: /sh, only: [http]}]").unwrap();
        let t = ProcessTable::new(ProcessFilters::compile(&filters).unwrap());
        let pid = u32::MAX - 9;
        assert_eq!(t.exec(pid, 100, b"/usr/bin/curl"), skip::PROCESS);
        assert_eq!(t.skip(pid), skip::PROCESS);
        // The same pid exec'd another program.
        assert_eq!(t.exec(pid, 200, b"/bin/sh"), skip::PAYLOAD);
        // A late, older exec does not change the decision.
        assert_eq!(t.exec(pid, 150, b"/usr/bin/curl"), skip::PAYLOAD);
        assert_eq!(t.exec(pid - 1, 100, b"/usr/bin/true"), 0);
    }
}
