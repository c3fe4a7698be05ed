//! The spool directory and its in-memory index.
//!
//! Each pending object is one file, `{seq:016x}-{digest}.obj`, holding a small
//! header (magic, content type) and then the object's bytes. It is written as
//! `….tmp` and renamed once whole, so after a crash a `.obj` file is always
//! complete and a `.tmp` file is always discarded. `seq` grows with every object,
//! so the oldest pending object is the one with the smallest `seq`: that is the
//! upload order and the eviction order when the spool is over its size limit.
//!
//! Files are not fsynced: the spool survives the agent dying (the page cache
//! belongs to the kernel), not the machine losing power.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Digest;

/// The spool directory's mode when tapwire creates it: payloads are sensitive, so
/// only the agent's user may list or read them.
pub const DIR_MODE: u32 = 0o700;
/// Each spool file's mode.
pub const FILE_MODE: u32 = 0o600;
/// The file locked while a store has the spool open.
pub const LOCK_FILE: &str = ".lock";
/// First bytes of every spool file; the `1` is the format version.
pub const MAGIC: &[u8; 8] = b"TWSPOOL1";
/// Longest content type kept in a spool file header (longer ones are cut).
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Objects the spool holds at most; past it the oldest waiting ones are dropped,
/// as past the byte limit. The index costs about 170 bytes per object (map entries,
/// digest, interned content type), so this caps it near 45 MiB however small the
/// objects are.
pub const MAX_OBJECTS: usize = 256 * 1024;
/// Distinct content types shared between index entries; further ones are stored
/// per entry.
const MAX_INTERNED_CONTENT_TYPES: usize = 1024;
/// Digests of uploaded objects remembered for deduplication: 64 Ki × 32 bytes of
/// digest plus set overhead is a few MiB, and covers the repeats a node sees
/// (same error pages, same assets) over minutes to hours.
pub const RECENT_DIGESTS: usize = 64 * 1024;

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory could not be created or listed.
    #[error("cannot open the spool directory `{dir}`")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another running store holds the spool.
    #[error("the spool directory `{dir}` is in use by another process")]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
}

/// One pending object, as the uploader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in arrival order.
    pub seq: u64,
    /// BLAKE3 of the object's bytes: its key.
    pub digest: Digest,
    /// MIME type to upload it with.
    pub content_type: Arc<str>,
    /// Where the object's bytes start in the file.
    pub offset: u64,
    /// The object's length in bytes.
    pub len: u64,
    /// The spool file.
    pub path: PathBuf,
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Being written by the storage thread.
    Writing,
    /// Whole on disk, waiting for the uploader.
    Queued,
    /// Being uploaded.
    InFlight,
    /// Refused by the server for good (credentials); left on disk for the next start.
    Parked,
}

/// One index entry, kept small: the path is derived from `seq` and `digest`.
#[derive(Debug)]
struct Slot {
    digest: Digest,
    content_type: Arc<str>,
    /// Header length: where the object's bytes start in the file.
    offset: u16,
    /// The object's length in bytes.
    len: u64,
    state: State,
}

impl Slot {
    fn file_len(&self) -> u64 {
        u64::from(self.offset) + self.len
    }
}

/// What [`Spool::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write the object to `tmp`, then call [`Spool::written`] with `seq`.
    Write {
        /// The entry's sequence number.
        seq: u64,
        /// Temporary file to write.
        tmp: PathBuf,
        /// Final name to rename to.
        path: PathBuf,
    },
    /// The same digest is pending or was uploaded recently.
    Duplicate,
    /// The object alone is larger than the spool's limit, or the spool is full of
    /// objects that cannot be evicted (all being uploaded).
    NoRoom,
}

/// The spool's index. All methods take `&self`; the index sits behind a mutex that
/// only the storage and uploader threads take, never the caller of `put`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// `LOCK_FILE`, locked exclusively for as long as the spool is open; the
    /// kernel releases the lock when the process dies, however it dies.
    _lock: File,
}

#[derive(Debug, Default)]
struct Index {
    slots: BTreeMap<u64, Slot>,
    /// Sequence numbers in state `Queued`, oldest first.
    queued: BTreeSet<u64>,
    by_digest: HashMap<Digest, u64>,
    recent: RecentDigests,
    /// Bytes of all spool files (headers included).
    bytes: u64,
    next_seq: u64,
    /// Objects removed to make room, since start.
    evicted: u64,
    /// Content types shared by entries.
    content_types: HashSet<Arc<str>>,
}

/// A bounded set of digests, forgetting the oldest first.
#[derive(Debug, Default)]
struct RecentDigests {
    set: HashSet<Digest>,
    order: VecDeque<Digest>,
}

impl RecentDigests {
    fn insert(&mut self, d: Digest) {
        if self.set.insert(d) {
            self.order.push_back(d);
            if self.order.len() > RECENT_DIGESTS
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, d: &Digest) -> bool {
        self.set.contains(d)
    }
}

/// The header written before an object's bytes.
pub fn header(content_type: &str) -> Vec<u8> {
    let ct = truncate(content_type, MAX_CONTENT_TYPE_BYTES);
    let mut h = Vec::with_capacity(MAGIC.len() + 1 + ct.len());
    h.extend_from_slice(MAGIC);
    // `truncate` keeps it at most 255 bytes.
    h.push(u8::try_from(ct.len()).unwrap_or(u8::MAX));
    h.extend_from_slice(ct.as_bytes());
    h
}

/// Length of the header for `content_type` (at most 8 + 1 + 255).
fn header_len(content_type: &str) -> u16 {
    let len = MAGIC.len() + 1 + truncate(content_type, MAX_CONTENT_TYPE_BYTES).len();
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// The final name of object `seq` with `digest` in `dir`.
fn object_path(dir: &Path, seq: u64, digest: &Digest) -> PathBuf {
    dir.join(format!("{seq:016x}-{}.obj", digest.to_hex()))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Spool {
    /// Opens (creating if needed) the spool at `dir`, removes half-written files and
    /// queues every complete one, oldest first. Returns the spool and how many
    /// objects it recovered.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, usize), SpoolError> {
        let err = |source| SpoolError::Dir {
            dir: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(dir.join(LOCK_FILE))
            .map_err(err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::InUse {
                    dir: dir.to_owned(),
                });
            }
            Err(fs::TryLockError::Error(source)) => return Err(err(source)),
        }
        let mut index = Index::default();
        for dent in fs::read_dir(dir).map_err(err)? {
            let dent = dent.map_err(err)?;
            let path = dent.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                if let Err(error) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot remove half-written spool file");
                }
                continue;
            }
            let Some((seq, digest)) = parse_name(name) else {
                continue;
            };
            match read_header(&path) {
                Ok((content_type, offset, file_len)) => {
                    let content_type = index.intern(&content_type);
                    let len = file_len.saturating_sub(u64::from(offset));
                    index.insert(
                        seq,
                        Slot {
                            digest,
                            content_type,
                            offset,
                            len,
                            state: State::Queued,
                        },
                    );
                    index.next_seq = index.next_seq.max(seq + 1);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "discarding unreadable spool file");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let recovered = index.slots.len();
        Ok((
            Self {
                dir: dir.to_owned(),
                max_bytes,
                index: Mutex::new(index),
                _lock: lock,
            },
            recovered,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent at every
        // step, so a poisoned lock is still usable.
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves room for an object and returns where to write it, evicting the
    /// oldest queued (then parked) objects if the spool would go over its limit
    /// (their count is added to [`Spool::evicted`]). Objects being written or
    /// uploaded are never evicted.
    pub fn admit(&self, digest: Digest, content_type: &str, len: u64) -> Admit {
        let offset = header_len(content_type);
        let file_len = u64::from(offset) + len;
        if file_len > self.max_bytes {
            return Admit::NoRoom;
        }
        let mut idx = self.lock();
        if idx.by_digest.contains_key(&digest) || idx.recent.contains(&digest) {
            return Admit::Duplicate;
        }
        while idx.bytes + file_len > self.max_bytes || idx.slots.len() >= MAX_OBJECTS {
            // The oldest waiting object goes first; failing that, the oldest parked
            // one (refused by the server, only retried at the next start).
            let victim = idx.queued.pop_first().or_else(|| {
                idx.slots
                    .iter()
                    .find(|(_, s)| s.state == State::Parked)
                    .map(|(seq, _)| *seq)
            });
            let Some(oldest) = victim else {
                return Admit::NoRoom;
            };
            if let Some(slot) = idx.remove(oldest) {
                tracing::warn!(digest = %slot.digest, "spool full; dropping the oldest object");
                let _ = fs::remove_file(object_path(&self.dir, oldest, &slot.digest));
                idx.evicted += 1;
            }
        }
        let seq = idx.next_seq;
        idx.next_seq += 1;
        let path = object_path(&self.dir, seq, &digest);
        let tmp = path.with_extension("tmp");
        let content_type = idx.intern(truncate(content_type, MAX_CONTENT_TYPE_BYTES));
        idx.insert(
            seq,
            Slot {
                digest,
                content_type,
                offset,
                len,
                state: State::Writing,
            },
        );
        Admit::Write { seq, tmp, path }
    }

    /// The object `seq` is whole on disk under its final name: queue it.
    pub fn written(&self, seq: u64) {
        let mut idx = self.lock();
        if let Some(slot) = idx.slots.get_mut(&seq) {
            slot.state = State::Queued;
            idx.queued.insert(seq);
        }
    }

    /// Writing `seq` failed: forget it (the caller removes the temporary file).
    pub fn abandon(&self, seq: u64) {
        self.lock().remove(seq);
    }

    /// Up to `max` queued entries, oldest first, now marked in flight.
    pub fn take_batch(&self, max: usize) -> Vec<Entry> {
        let mut idx = self.lock();
        let mut out = Vec::with_capacity(max.min(idx.queued.len()));
        while out.len() < max {
            let Some(seq) = idx.queued.pop_first() else {
                break;
            };
            if let Some(slot) = idx.slots.get_mut(&seq) {
                slot.state = State::InFlight;
                out.push(Entry {
                    seq,
                    digest: slot.digest,
                    content_type: Arc::clone(&slot.content_type),
                    offset: u64::from(slot.offset),
                    len: slot.len,
                    path: object_path(&self.dir, seq, &slot.digest),
                });
            }
        }
        out
    }

    /// An upload did not finish (shutting down): queue `seq` again.
    pub fn release(&self, seq: u64) {
        let mut idx = self.lock();
        if let Some(slot) = idx.slots.get_mut(&seq) {
            slot.state = State::Queued;
            idx.queued.insert(seq);
        }
    }

    /// The server refuses `seq` for good for now: keep it on disk, untouched until
    /// the next start.
    pub fn park(&self, seq: u64) {
        let mut idx = self.lock();
        if let Some(slot) = idx.slots.get_mut(&seq) {
            slot.state = State::Parked;
        }
    }

    /// `seq` is uploaded: delete its file and remember its digest.
    pub fn complete(&self, seq: u64) {
        let mut idx = self.lock();
        if let Some(slot) = idx.remove(seq) {
            idx.recent.insert(slot.digest);
            remove_file(&object_path(&self.dir, seq, &slot.digest));
        }
    }

    /// `seq` cannot be stored: delete its file and forget it.
    pub fn discard(&self, seq: u64) {
        if let Some(slot) = self.lock().remove(seq) {
            remove_file(&object_path(&self.dir, seq, &slot.digest));
        }
    }

    /// Objects in the spool in any state (writing, queued, uploading, parked).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether the spool holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Objects waiting for an upload slot.
    pub fn queued(&self) -> usize {
        self.lock().queued.len()
    }

    /// Objects parked after the server refused them.
    pub fn parked(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| s.state == State::Parked)
            .count()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Objects dropped to make room since start.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// The size limit in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes on disk for an object of `len` bytes and this content type.
    pub fn file_len(&self, content_type: &str, len: u64) -> u64 {
        u64::from(header_len(content_type)) + len
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Index {
    fn insert(&mut self, seq: u64, slot: Slot) {
        self.by_digest.insert(slot.digest, seq);
        if slot.state == State::Queued {
            self.queued.insert(seq);
        }
        self.bytes += slot.file_len();
        self.slots.insert(seq, slot);
    }

    fn remove(&mut self, seq: u64) -> Option<Slot> {
        let slot = self.slots.remove(&seq)?;
        self.queued.remove(&seq);
        if self.by_digest.get(&slot.digest) == Some(&seq) {
            self.by_digest.remove(&slot.digest);
        }
        self.bytes = self.bytes.saturating_sub(slot.file_len());
        Some(slot)
    }

    /// A shared copy of `content_type`.
    fn intern(&mut self, content_type: &str) -> Arc<str> {
        if let Some(ct) = self.content_types.get(content_type) {
            return Arc::clone(ct);
        }
        let ct: Arc<str> = Arc::from(content_type);
        if self.content_types.len() < MAX_INTERNED_CONTENT_TYPES {
            self.content_types.insert(Arc::clone(&ct));
        }
        ct
    }
}

fn remove_file(path: &Path) {
    if let Err(error) = fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "cannot remove spool file");
    }
}

/// `{seq:016x}-{64 hex}.obj` → (seq, digest).
fn parse_name(name: &str) -> Option<(u64, Digest)> {
    let stem = name.strip_suffix(".obj")?;
    let (seq, hex) = stem.split_once('-')?;
    if seq.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(seq, 16).ok()?;
    let digest = Digest::from_hex(hex).ok()?;
    Some((seq, digest))
}

/// Reads a spool file's header: (content type, offset of the bytes, file length).
fn read_header(path: &Path) -> io::Result<(String, u16, u64)> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut fixed = [0u8; MAGIC.len() + 1];
    file.read_exact(&mut fixed)?;
    if &fixed[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad spool file magic",
        ));
    }
    let ct_len = usize::from(fixed[MAGIC.len()]);
    let mut ct = vec![0u8; ct_len];
    file.read_exact(&mut ct)?;
    let ct = String::from_utf8(ct)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "content type is not UTF-8"))?;
    let offset = header_len(&ct);
    Ok((ct, offset, file_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(spool: &Spool, bytes: &[u8]) -> Option<u64> {
        let digest = blake3::hash(bytes);
        match spool.admit(digest, "text/plain", bytes.len() as u64) {
            Admit::Write { seq, tmp, path } => {
                let mut data = header("text/plain");
                data.extend_from_slice(bytes);
                fs::write(&tmp, data).expect("write tmp");
                fs::rename(&tmp, &path).expect("rename");
                spool.written(seq);
                Some(seq)
            }
            _ => None,
        }
    }

    #[test]
    fn recovers_complete_files_and_drops_half_written_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("open");
            assert_eq!(recovered, 0);
            write(&spool, b"one").expect("admitted");
            write(&spool, b"two").expect("admitted");
            let Admit::Write { tmp, .. } = spool.admit(blake3::hash(b"three"), "x", 5) else {
                panic!("three not admitted");
            };
            fs::write(tmp, b"TWSP").expect("half write");
        }
        let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(recovered, 2);
        let batch = spool.take_batch(10);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].digest, blake3::hash(b"one"));
        assert_eq!(batch[1].digest, blake3::hash(b"two"));
        assert_eq!(&*batch[0].content_type, "text/plain");
        assert_eq!(batch[0].len, 3);
        let data = fs::read(&batch[1].path).expect("read");
        assert_eq!(&data[batch[1].offset as usize..], b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|d| d.expect("dent").file_name().into_string().expect("utf-8"))
            .collect();
        assert!(
            names.iter().all(|n| n.ends_with(".obj") || n == LOCK_FILE),
            "leftover files: {names:?}"
        );
        // The next object continues the sequence.
        let seq = write(&spool, b"four").expect("admitted");
        assert_eq!(seq, batch[1].seq + 1);
    }

    #[test]
    fn one_open_spool_per_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = Spool::open(dir.path(), 1 << 20).expect("open");
        let second = Spool::open(dir.path(), 1 << 20);
        assert!(
            matches!(second, Err(SpoolError::InUse { .. })),
            "second open: {second:?}"
        );
        drop(first);
        Spool::open(dir.path(), 1 << 20).expect("free again once closed");
    }

    #[test]
    fn the_directory_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let spool_dir = dir.path().join("a/b");
        Spool::open(&spool_dir, 1 << 20).expect("open");
        let mode = fs::metadata(&spool_dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, DIR_MODE);
    }

    #[test]
    fn duplicates_are_refused_while_pending_and_after_upload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), 1 << 20).expect("open");
        let seq = write(&spool, b"same").expect("admitted");
        assert_eq!(write(&spool, b"same"), None);
        spool.take_batch(1);
        spool.complete(seq);
        assert!(spool.is_empty());
        assert_eq!(
            spool.admit(blake3::hash(b"same"), "text/plain", 4),
            Admit::Duplicate
        );
    }

    #[test]
    fn over_the_limit_the_oldest_queued_go_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let per_file = u64::from(header_len("text/plain")) + 100;
        let (spool, _) = Spool::open(dir.path(), per_file * 3).expect("open");
        let objects: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100]).collect();
        for o in &objects {
            write(&spool, o).expect("admitted");
        }
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.evicted(), 2);
        assert_eq!(spool.bytes(), per_file * 3);
        let left = spool.take_batch(10);
        let digests: Vec<Digest> = left.iter().map(|e| e.digest).collect();
        let want: Vec<Digest> = objects[2..].iter().map(|o| blake3::hash(o)).collect();
        assert_eq!(digests, want);
        // Everything left is in flight: nothing can be evicted for a new object.
        assert_eq!(
            spool.admit(blake3::hash(b"new"), "text/plain", 100),
            Admit::NoRoom
        );
        // A parked object (refused by the server) makes room.
        spool.park(left[0].seq);
        assert!(matches!(
            spool.admit(blake3::hash(b"new"), "text/plain", 100),
            Admit::Write { .. }
        ));
        assert_eq!(spool.evicted(), 3);
        assert_eq!(spool.parked(), 0);
        // An object larger than the whole spool never fits.
        assert_eq!(
            spool.admit(blake3::hash(b"big"), "text/plain", per_file * 3),
            Admit::NoRoom
        );
    }

    #[test]
    fn the_object_count_is_capped_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), u64::MAX).expect("open");
        for i in 0..MAX_OBJECTS as u64 + 10 {
            // Index only: no file is needed to exercise the limit.
            match spool.admit(blake3::hash(&i.to_le_bytes()), "text/plain", 1) {
                Admit::Write { seq, .. } => spool.written(seq),
                other => panic!("object {i}: {other:?}"),
            }
        }
        assert_eq!(spool.len(), MAX_OBJECTS);
        assert_eq!(spool.evicted(), 10);
        let oldest = spool.take_batch(1).pop().expect("an entry");
        assert_eq!(
            oldest.digest,
            blake3::hash(&10u64.to_le_bytes()),
            "the first ten went"
        );
    }
}
