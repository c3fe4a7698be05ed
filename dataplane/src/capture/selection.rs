//! Capture selection: pid with descendants, executable, cgroup — applied in
//! the kernel (the `SELECTED*` maps), so unselected processes cost a map
//! lookup or two. TLS uprobes are attached per file whatever the selection:
//! they fire in every process, and the probes return at once in one that is
//! not selected.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
};

use super::targets::all_pids;

/// What to capture. Empty: everything.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// These processes and their descendants.
    pub pids: Vec<u32>,
    /// Processes running these executables.
    pub exes: Vec<PathBuf>,
    /// Processes in these cgroup v2 directories.
    pub cgroups: Vec<PathBuf>,
}

/// Errors resolving a selection.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// A `--exe` or `--cgroup` path could not be inspected.
    #[error("cannot stat `{path}`")]
    Stat {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The selection resolved against the running system.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Inode numbers of the selected executables.
    pub exe_inodes: Vec<u64>,
    /// cgroup ids (the cgroup directory's inode number on cgroup v2).
    pub cgroup_ids: Vec<u64>,
    /// Processes selected now, with `config::select` bits.
    pub pids: HashMap<u32, u32>,
}

impl Selection {
    /// True when everything is captured.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.exes.is_empty() && self.cgroups.is_empty()
    }

    /// Resolves paths to inodes and finds the processes selected now: the named
    /// pids and all their descendants, processes running a named executable.
    pub fn resolve(&self) -> Result<Resolved, SelectionError> {
        use tapwire_common::config::select;
        let stat = |path: &PathBuf| {
            std::fs::metadata(path)
                .map(|m| m.ino())
                .map_err(|source| SelectionError::Stat {
                    path: path.clone(),
                    source,
                })
        };
        let mut r = Resolved {
            exe_inodes: self.exes.iter().map(stat).collect::<Result<_, _>>()?,
            cgroup_ids: self.cgroups.iter().map(stat).collect::<Result<_, _>>()?,
            ..Resolved::default()
        };
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for pid in all_pids() {
            if let Some(ppid) = parent_of(pid) {
                children.entry(ppid).or_default().push(pid);
            }
            if !r.exe_inodes.is_empty()
                && let Ok(m) = std::fs::metadata(format!("/proc/{pid}/exe"))
                && r.exe_inodes.contains(&m.ino())
            {
                *r.pids.entry(pid).or_default() |= select::EXE;
            }
        }
        let mut todo: Vec<u32> = self.pids.clone();
        let mut done = HashSet::new();
        while let Some(pid) = todo.pop() {
            if !done.insert(pid) {
                continue;
            }
            *r.pids.entry(pid).or_default() |= select::PID;
            todo.extend(children.get(&pid).into_iter().flatten().copied());
        }
        Ok(r)
    }
}

/// Parent pid from `/proc/<pid>/stat` (field 4, after the parenthesised comm).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
