//! Files to put TLS uprobes in: every TLS library (by file name, see
//! [`libraries::LIBRARIES`]) mapped by a process or found in the usual library
//! directories, and executables that carry a TLS library themselves (node links
//! OpenSSL statically; every Go program links `crypto/tls`). Each file is
//! inspected once per inode, however many processes map it.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    libraries::{self, LibraryKind},
    placement::{PlacementError, ProbePoint},
};

/// Directories searched for TLS libraries at start, so a library no process has
/// mapped yet is probed before its first user starts.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

/// A file identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// A file with TLS functions and where to probe them.
#[derive(Debug)]
pub struct TlsTarget {
    /// A path that opens it.
    pub path: PathBuf,
    /// Its identity.
    pub id: FileId,
    /// The TLS library it carries.
    pub kind: LibraryKind,
    /// Planned probe points.
    pub points: Vec<ProbePoint>,
}

/// Files inspected so far, by inode: `Some` when it has TLS functions.
#[derive(Default)]
pub struct Targets {
    seen: HashMap<FileId, Option<Arc<TlsTarget>>>,
}

/// The file at `path`, mapped read-only: inspecting it touches only the pages
/// its headers, symbol tables and probed code sit on (an executable of
/// hundreds of MiB costs its symbol tables, not its size, and nothing stays
/// resident once the mapping is dropped).
fn map_file(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the mapping is private and read-only and lives only while the
    // file is inspected. Executables and libraries are not written in place
    // while mapped (the kernel refuses writes to a running executable; package
    // managers replace libraries by rename), so the bytes do not change under
    // the parser.
    unsafe { memmap2::Mmap::map(&file) }
}

/// True for file names of TLS shared libraries.
fn is_tls_library(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(libraries::kind_of_file_name)
        .is_some()
}

impl Targets {
    /// The target for the file at `path`, inspecting it on first sight.
    pub fn inspect(&mut self, path: &Path) -> Option<Arc<TlsTarget>> {
        let meta = std::fs::metadata(path).ok()?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if let Some(known) = self.seen.get(&id) {
            return known.clone();
        }
        let target = map_file(path)
            .ok()
            .and_then(|data| match libraries::plan(&data) {
                Ok((kind, points)) => Some(Arc::new(TlsTarget {
                    path: path.to_path_buf(),
                    id,
                    kind,
                    points,
                })),
                Err(PlacementError::NoSymbols | PlacementError::Parse(_)) => None,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot plan tls probes");
                    None
                }
            });
        self.seen.insert(id, target.clone());
        target
    }

    /// Every TLS target a process uses now: mapped TLS libraries and its
    /// executable, opened through `/proc/<pid>/root` so container paths work.
    pub fn of_process(&mut self, pid: u32) -> Vec<Arc<TlsTarget>> {
        let mut out: Vec<Arc<TlsTarget>> = Vec::new();
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            for line in maps.lines() {
                // address perms offset dev inode path
                let Some(path) = line.split_whitespace().nth(5) else {
                    continue;
                };
                let path = Path::new(path);
                if path.is_absolute() && is_tls_library(path) && !paths.iter().any(|p| p == path) {
                    paths.push(path.to_path_buf());
                }
            }
        }
        for path in paths {
            let full = root.join(path.strip_prefix("/").unwrap_or(&path));
            if let Some(t) = self.inspect(&full)
                && !out.iter().any(|o| o.id == t.id)
            {
                out.push(t);
            }
        }
        if let Some(t) = self.inspect(Path::new(&format!("/proc/{pid}/exe")))
            && !out.iter().any(|o| o.id == t.id)
        {
            out.push(t);
        }
        out
    }

    /// TLS libraries in the usual directories, whether or not mapped yet.
    pub fn system_libraries(&mut self) -> Vec<Arc<TlsTarget>> {
        let mut out: Vec<Arc<TlsTarget>> = Vec::new();
        for dir in LIBRARY_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if is_tls_library(&path)
                    && let Some(t) = self.inspect(&path)
                    && !out.iter().any(|o| o.id == t.id)
                {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Every known TLS target.
    pub fn known(&self) -> Vec<Arc<TlsTarget>> {
        self.seen.values().flatten().cloned().collect()
    }
}

/// Pids of all processes now.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}
