//! Files to put TLS uprobes in: every TLS library (by file name, see
//! [`libraries::LIBRARIES`]) mapped by a process or found in the usual library
//! directories, and executables that carry a TLS library themselves (node links
//! OpenSSL statically; every Go program links `crypto/tls`). Each file is
//! inspected once per inode, however many processes map it.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::{FileExt as _, MetadataExt as _},
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
    pub points: Arc<[ProbePoint]>,
}

/// Plans of forgotten files kept for their next sighting; past this the
/// oldest is dropped (a sighting then reads the file again).
const FORGOTTEN_PLANS: usize = 1024;

/// What identifies a file's contents without reading them: identity, size,
/// and modification and change times (ns), which any write or replacement
/// of the file moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Stamp {
    id: FileId,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            id: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Plans kept by content (build id and size) for copies of a TLS file; past
/// this, copies of further builds are read and planned each time.
const CONTENT_PLANS: usize = 256;

/// Bytes compared at each probe point before a plan is reused for a copy.
const CHECK_BYTES: usize = 16;

/// A plan kept by content, with the bytes at each point it was made from.
struct Planned {
    kind: LibraryKind,
    points: Arc<[ProbePoint]>,
    /// `CHECK_BYTES` (or up to the end of the file) at each point's offset.
    code: Vec<Vec<u8>>,
}

impl Planned {
    fn new(data: &[u8], kind: LibraryKind, points: Arc<[ProbePoint]>) -> Self {
        let code = points
            .iter()
            .map(|p| {
                let at = usize::try_from(p.file_offset).unwrap_or(usize::MAX);
                data.get(at..)
                    .map(|rest| rest[..rest.len().min(CHECK_BYTES)].to_vec())
                    .unwrap_or_default()
            })
            .collect();
        Self { kind, points, code }
    }

    /// The plan, if `file` has the same bytes at every point.
    fn verified(&self, file: &File) -> Option<(LibraryKind, Arc<[ProbePoint]>)> {
        let mut buf = [0u8; CHECK_BYTES];
        for (point, code) in self.points.iter().zip(&self.code) {
            let buf = &mut buf[..code.len()];
            file.read_exact_at(buf, point.file_offset).ok()?;
            if buf != &code[..] {
                return None;
            }
        }
        Some((self.kind, Arc::clone(&self.points)))
    }
}

/// The build id of an ELF file (GNU `NT_GNU_BUILD_ID`, or Go's build id
/// note), read from its program headers without reading the rest.
fn build_id(file: &File) -> Option<Vec<u8>> {
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    /// Go's `NT_GO_BUILDID` note type, in a note named `Go`.
    const NT_GO_BUILDID: u32 = 4;
    let cache = object::read::ReadCache::new(file);
    let data = &cache;
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    for segment in header.program_headers(endian, data).ok()? {
        let Ok(Some(mut notes)) = segment.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            let (name, n_type) = (note.name(), note.n_type(endian));
            if (name == b"GNU" && n_type == object::elf::NT_GNU_BUILD_ID)
                || (name == b"Go" && n_type == NT_GO_BUILDID)
            {
                return Some(note.desc().to_vec());
            }
        }
    }
    None
}

/// Files inspected so far, by inode: `Some` when it has TLS functions.
#[derive(Default)]
pub struct Targets {
    /// Plans of TLS files by content, `(size, build id)`.
    by_content: HashMap<(u64, Vec<u8>), Planned>,
    seen: HashMap<FileId, (Stamp, Option<Arc<TlsTarget>>)>,
    /// Plans of files forgotten (no process mapped them), oldest first: a
    /// file seen again unchanged is not read again.
    forgotten: std::collections::VecDeque<(Stamp, LibraryKind, Arc<[ProbePoint]>)>,
}

/// `file`, mapped read-only: inspecting it touches only the pages its
/// headers, symbol tables and probed code sit on (an executable of hundreds
/// of MiB costs its symbol tables, not its size, and nothing stays resident
/// once the mapping is dropped).
fn map_file(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is private and read-only and lives only while the
    // file is inspected. Executables and libraries are not written in place
    // while mapped (the kernel refuses writes to a running executable; package
    // managers replace libraries by rename), so the bytes do not change under
    // the parser.
    unsafe { memmap2::Mmap::map(file) }
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
        let stamp = Stamp::of(&meta);
        let id = stamp.id;
        if let Some((_, known)) = self.seen.get(&id) {
            return known.clone();
        }
        if let Some(at) = self.forgotten.iter().position(|f| f.0 == stamp) {
            let (_, kind, points) = self.forgotten.remove(at)?;
            let target = Arc::new(TlsTarget {
                path: path.to_path_buf(),
                id,
                kind,
                points,
            });
            self.seen.insert(id, (stamp, Some(Arc::clone(&target))));
            return Some(target);
        }
        let file = File::open(path).ok()?;
        let content = build_id(&file).map(|build| (stamp.size, build));
        if let Some((kind, points)) = content
            .as_ref()
            .and_then(|c| self.by_content.get(c))
            .and_then(|known| known.verified(&file))
        {
            // A copy of a file already planned (a container image's libssl, a
            // program copied elsewhere): same build, same size, same
            // instructions at every point.
            let target = Arc::new(TlsTarget {
                path: path.to_path_buf(),
                id,
                kind,
                points,
            });
            self.seen.insert(id, (stamp, Some(Arc::clone(&target))));
            return Some(target);
        }
        let data = map_file(&file).ok()?;
        let planned = match libraries::plan(&data) {
            Ok((kind, points)) => Some((kind, Arc::<[ProbePoint]>::from(points))),
            Err(PlacementError::NoSymbols | PlacementError::Parse(_)) => None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot plan tls probes");
                None
            }
        };
        let target = planned.as_ref().map(|(kind, points)| {
            Arc::new(TlsTarget {
                path: path.to_path_buf(),
                id,
                kind: *kind,
                points: Arc::clone(points),
            })
        });
        if let (Some(content), Some((kind, points))) = (content, planned)
            && self.by_content.len() < CONTENT_PLANS
        {
            // The first plan of a build stays (a changed copy does not
            // replace it).
            self.by_content
                .entry(content)
                .or_insert_with(|| Planned::new(&data, kind, points));
        }
        self.seen.insert(id, (stamp, target.clone()));
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

    /// Forgets the file `id` and the path it was opened by: its next
    /// sighting opens it again, and reads it again only if it changed.
    pub fn forget(&mut self, id: FileId) {
        if let Some((stamp, Some(target))) = self.seen.remove(&id) {
            if self.forgotten.len() == FORGOTTEN_PLANS {
                self.forgotten.pop_front();
            }
            self.forgotten
                .push_back((stamp, target.kind, Arc::clone(&target.points)));
        }
    }

    /// Every known TLS target.
    pub fn known(&self) -> Vec<Arc<TlsTarget>> {
        self.seen.values().filter_map(|(_, t)| t.clone()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

    #[test]
    fn a_copy_reuses_the_plan_and_a_changed_copy_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.so"),
            dir.path().join("b.so"),
            dir.path().join("c.so"),
        );
        for p in [&a, &b, &c] {
            std::fs::copy(LIBSSL, p).unwrap();
        }
        let id = build_id(&File::open(&a).unwrap()).expect("libssl has a build id");
        assert!(id.len() >= 16, "{id:?}");
        let mut targets = Targets::default();
        let first = targets.inspect(&a).expect("libssl is a tls target");
        assert_eq!(targets.by_content.len(), 1);
        // A copy: a new inode, the same plan without planning again.
        let copy = targets.inspect(&b).expect("the copy is a tls target");
        assert_ne!(copy.id, first.id);
        assert_eq!(copy.path, b);
        assert!(Arc::ptr_eq(&copy.points, &first.points));
        // A copy with other bytes at a probe point (same build id and size)
        // is planned from its own bytes.
        let at = first.points[0].file_offset;
        let f = std::fs::OpenOptions::new().write(true).open(&c).unwrap();
        f.write_all_at(&[0x90], at).unwrap();
        drop(f);
        let known = targets.by_content.values().next().unwrap();
        assert!(known.verified(&File::open(&b).unwrap()).is_some());
        assert!(known.verified(&File::open(&c).unwrap()).is_none());
        let changed = targets.inspect(&c);
        assert!(changed.is_none_or(|t| !Arc::ptr_eq(&t.points, &first.points)));
    }

    #[test]
    fn a_forgotten_file_seen_again_unchanged_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.so");
        std::fs::copy(LIBSSL, &a).unwrap();
        let mut targets = Targets::default();
        let first = targets.inspect(&a).unwrap();
        targets.forget(first.id);
        assert!(targets.seen.is_empty());
        let again = targets.inspect(&a).unwrap();
        assert!(Arc::ptr_eq(&again.points, &first.points));
        assert!(targets.forgotten.is_empty());
    }
}
