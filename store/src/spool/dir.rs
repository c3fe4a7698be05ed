//! The spool directory and its in-memory index.
//!
//! Each pending object is one file, `{seq:016x}-{digest}.obj`, holding a small
//! header (magic, content type) and then the object's bytes. It is written as
//! `….tmp` (created with `O_EXCL | O_NOFOLLOW`), fsynced, renamed once whole, and
//! the directory is fsynced after each batch of renames: an object counts as kept
//! only then. `seq` grows with every object, so the oldest pending object is the
//! one with the smallest `seq`: that is the upload order.
//!
//! An object in the spool may be named by an event already sent, so nothing is
//! ever evicted: when the spool is at its limit, new objects are refused.
//!
//! At start the directory must belong to the agent's user and be closed to
//! everyone else; only files with the spool's own names are touched. Each
//! complete file is hashed again and queued only if its bytes still match the
//! digest in its name (a file cut short by a full disk or a crash of the machine
//! is counted and removed, never uploaded under a wrong digest).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::header::{MAGIC, MAX_CONTENT_TYPE_BYTES, header_len, parse_header, truncate};
use super::known::KnownDigests;
use crate::{Digest, Notice};

/// The spool directory's mode when tapwire creates it: payloads are sensitive, so
/// only the agent's user may list or read them.
pub const DIR_MODE: u32 = 0o700;
/// Each spool file's mode.
pub const FILE_MODE: u32 = 0o600;
/// The file locked while a store has the spool open.
pub const LOCK_FILE: &str = ".lock";
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
/// Notices waiting for their objects' uploads, at most (one per request that
/// named a pending object; an S3 outage makes them pile up). Each is an `Arc`
/// and an index, about 40 bytes with its list: 64 Ki cost a few MiB beside
/// what the requests' summaries hold. Past it, a notice is dropped and counted
/// (`artifact_records_dropped`); the object is stored all the same.
pub const MAX_NOTICES: usize = 64 * 1024;

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
    /// The directory belongs to another user.
    #[error(
        "the spool directory `{dir}` is owned by uid {uid} (mode {mode:o}); it must be owned by the agent's uid {euid}"
    )]
    Unsafe {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
        /// The agent's effective uid.
        euid: u32,
    },
}

/// What [`Spool::open`] found from a previous run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Whole objects queued again.
    pub objects: usize,
    /// Files whose bytes no longer match their digest (or whose header is
    /// unreadable): removed and counted, never uploaded.
    pub corrupt: usize,
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
    /// The spool is at its byte or object limit (or the object alone is larger
    /// than the byte limit): the object is refused.
    NoRoom,
}

/// The spool's index. All methods take `&self`; the index sits behind a mutex that
/// only the storage and uploader threads take, never the caller of `put`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Digests uploaded, for lookups without the index's lock
    /// ([`Spool::uploaded`]).
    known: KnownDigests,
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
    /// Content types shared by entries.
    content_types: HashSet<Arc<str>>,
    /// Notices told when an entry is uploaded, by `seq`, each with whether its
    /// request's object was a duplicate of the entry.
    notices: HashMap<u64, Vec<(Notice, bool)>>,
    /// Notices in `notices`, all entries together.
    notice_count: usize,
}

/// What became of a notice for an object the spool already had
/// ([`Spool::notify_digest`]).
#[derive(Debug)]
pub enum Awaited {
    /// It waits for the pending entry's upload.
    Waiting,
    /// The object was uploaded recently: announce it now.
    Uploaded(Notice),
    /// Too many notices wait already: dropped (count it).
    Full,
    /// The entry is gone unstored (refused): nothing to announce.
    Gone,
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

/// The final name of object `seq` with `digest` in `dir`.
fn object_path(dir: &Path, seq: u64, digest: &Digest) -> PathBuf {
    dir.join(format!("{seq:016x}-{}.obj", digest.to_hex()))
}

impl Spool {
    /// Opens (creating if needed, mode 0700) the spool at `dir`, checks who owns
    /// it, removes its own half-written files and queues every complete file whose
    /// bytes match its digest, oldest first.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Recovery), SpoolError> {
        let err = |source| SpoolError::Dir {
            dir: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(err)?;
        check_owner(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
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
        let mut recovery = Recovery::default();
        for dent in fs::read_dir(dir).map_err(err)? {
            let dent = dent.map_err(err)?;
            let path = dent.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(".tmp")
                && parse_stem(stem).is_some()
            {
                remove_file(&path);
                continue;
            }
            let Some((seq, digest)) = name.strip_suffix(".obj").and_then(parse_stem) else {
                continue;
            };
            // Names are ours, so the sequence continues past them whatever their state.
            index.next_seq = index.next_seq.max(seq + 1);
            match verify(&path, &digest) {
                Ok((content_type, offset, len)) => {
                    let content_type = index.intern(&content_type);
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
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "spool file does not match its digest; removed, not uploaded");
                    recovery.corrupt += 1;
                    remove_file(&path);
                }
            }
        }
        recovery.objects = index.slots.len();
        Ok((
            Self {
                dir: dir.to_owned(),
                max_bytes,
                index: Mutex::new(index),
                known: KnownDigests::default(),
                _lock: lock,
            },
            recovery,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent at every
        // step, so a poisoned lock is still usable.
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves room for an object and returns where to write it, or refuses it
    /// when the spool is at its byte or object limit. Nothing is ever evicted: an
    /// event may already name every object in the spool.
    pub fn admit(&self, digest: Digest, content_type: &str, len: u64) -> Admit {
        let offset = header_len(content_type);
        let file_len = u64::from(offset) + len;
        let mut idx = self.lock();
        if idx.by_digest.contains_key(&digest) || idx.recent.contains(&digest) {
            return Admit::Duplicate;
        }
        if idx.bytes + file_len > self.max_bytes || idx.slots.len() >= MAX_OBJECTS {
            return Admit::NoRoom;
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

    /// Whether an object with `digest` is kept: whole in the spool, or uploaded
    /// recently.
    pub fn holds(&self, digest: &Digest) -> bool {
        let idx = self.lock();
        idx.recent.contains(digest)
            || idx
                .by_digest
                .get(digest)
                .and_then(|seq| idx.slots.get(seq))
                .is_some_and(|slot| slot.state != State::Writing)
    }

    /// Whether an object with `digest` was uploaded, as far as a lock-free
    /// table that forgets remembers (a false answer is no proof it was not):
    /// for callers of `put`, which take no lock.
    pub fn uploaded(&self, digest: &Digest) -> bool {
        self.known.contains(digest)
    }

    /// Tells `notice` when entry `seq` is uploaded (`duplicate`: the notice's
    /// object was deduplicated against it). Call before [`Spool::written`].
    /// Returns false (the notice dropped) when [`MAX_NOTICES`] already wait.
    pub fn notify(&self, seq: u64, notice: Notice, duplicate: bool) -> bool {
        let mut idx = self.lock();
        idx.wait(seq, notice, duplicate)
    }

    /// Tells `notice` when the object with `digest`, already pending or
    /// uploaded, is stored.
    pub fn notify_digest(&self, digest: &Digest, notice: Notice) -> Awaited {
        let mut idx = self.lock();
        if let Some(&seq) = idx.by_digest.get(digest) {
            return if idx.wait(seq, notice, true) {
                Awaited::Waiting
            } else {
                Awaited::Full
            };
        }
        if idx.recent.contains(digest) {
            Awaited::Uploaded(notice)
        } else {
            Awaited::Gone
        }
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

    /// `seq` is uploaded: delete its file and remember its digest. Returns the
    /// notices waiting for it, to be told.
    pub fn complete(&self, seq: u64) -> Vec<(Notice, bool)> {
        let mut idx = self.lock();
        let notices = idx.take_notices(seq);
        if let Some(slot) = idx.remove(seq) {
            idx.recent.insert(slot.digest);
            self.known.insert(&slot.digest);
            remove_file(&object_path(&self.dir, seq, &slot.digest));
        }
        notices
    }

    /// `seq` cannot be stored: delete its file and forget it.
    pub fn discard(&self, seq: u64) {
        if let Some(slot) = self.lock().remove(seq) {
            remove_file(&object_path(&self.dir, seq, &slot.digest));
        }
    }

    /// Objects in the spool in any state (writing, queued, uploading).
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

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
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

    /// Adds a notice to entry `seq`'s list, within [`MAX_NOTICES`].
    fn wait(&mut self, seq: u64, notice: Notice, duplicate: bool) -> bool {
        if self.notice_count >= MAX_NOTICES || !self.slots.contains_key(&seq) {
            return false;
        }
        self.notice_count += 1;
        self.notices
            .entry(seq)
            .or_default()
            .push((notice, duplicate));
        true
    }

    fn take_notices(&mut self, seq: u64) -> Vec<(Notice, bool)> {
        let notices = self.notices.remove(&seq).unwrap_or_default();
        self.notice_count -= notices.len();
        notices
    }

    fn remove(&mut self, seq: u64) -> Option<Slot> {
        // Notices of an entry removed unstored are dropped: nothing to announce.
        drop(self.take_notices(seq));
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

/// Refuses a directory another user owns (it could be made to hold anything
/// under the spool's names), and closes one the agent owns to group and others
/// (its files are payloads).
fn check_owner(dir: &Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let err = |source| SpoolError::Dir {
        dir: dir.to_owned(),
        source,
    };
    let meta = fs::metadata(dir).map_err(err)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    if meta.uid() != euid {
        return Err(SpoolError::Unsafe {
            dir: dir.to_owned(),
            uid: meta.uid(),
            mode,
            euid,
        });
    }
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "spool directory was open to group or others; setting it to 700");
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(err)?;
    }
    Ok(())
}

/// `{seq:016x}-{64 hex}` → (seq, digest).
fn parse_stem(stem: &str) -> Option<(u64, Digest)> {
    let (seq, hex) = stem.split_once('-')?;
    if seq.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(seq, 16).ok()?;
    let digest = Digest::from_hex(hex).ok()?;
    Some((seq, digest))
}

/// Reads a spool file, checks its header and that its bytes hash to `digest`:
/// (content type, offset of the bytes, their length).
fn verify(path: &Path, digest: &Digest) -> io::Result<(String, u16, u64)> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut head = [0u8; MAGIC.len() + 1 + MAX_CONTENT_TYPE_BYTES];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let header =
        parse_header(&head[..got]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let content_type = header.content_type.to_owned();
    let mut hasher = blake3::Hasher::new();
    let offset = usize::from(header.offset);
    hasher.update(&head[offset..got]);
    let mut len = (got - offset) as u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
        }
    }
    if hasher.finalize() != *digest {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes do not hash to the digest in the name"),
        ));
    }
    Ok((content_type, header.offset, len))
}

#[cfg(test)]
mod tests {
    use super::super::header::{HeaderError, header};
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
            assert_eq!(recovered, Recovery::default());
            write(&spool, b"one").expect("admitted");
            write(&spool, b"two").expect("admitted");
            let Admit::Write { tmp, .. } = spool.admit(blake3::hash(b"three"), "x", 5) else {
                panic!("three not admitted");
            };
            fs::write(tmp, b"TWSP").expect("half write");
        }
        // Files that are not the spool's own are left alone.
        fs::write(dir.path().join("notes.tmp"), b"mine").expect("foreign file");
        let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            recovered,
            Recovery {
                objects: 2,
                corrupt: 0
            }
        );
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
            names
                .iter()
                .all(|n| n.ends_with(".obj") || n == LOCK_FILE || n == "notes.tmp"),
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

    /// Parts announced, in order.
    #[derive(Default)]
    struct Parts(Mutex<Vec<usize>>);

    impl crate::Announce for Parts {
        fn stored(&self, part: usize, _: crate::Stored<'_>) {
            self.0.lock().unwrap().push(part);
        }
    }

    #[test]
    fn notices_wait_for_the_upload_and_are_dropped_with_an_unstored_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), 1 << 20).expect("open");
        let heard = Arc::new(Parts::default());
        let notice = |part| Notice::new(heard.clone(), part);
        let seq = write(&spool, b"same").expect("admitted");
        assert!(spool.notify(seq, notice(0), false));
        let same = blake3::hash(b"same");
        assert!(matches!(
            spool.notify_digest(&same, notice(1)),
            Awaited::Waiting
        ));
        spool.take_batch(1);
        let told: Vec<(usize, bool)> = spool
            .complete(seq)
            .into_iter()
            .map(|(n, duplicate)| (n.part(), duplicate))
            .collect();
        assert_eq!(
            told,
            [(0, false), (1, true)],
            "the writer's and the duplicate's"
        );
        // Uploaded: a later duplicate is told at once.
        let Awaited::Uploaded(now) = spool.notify_digest(&same, notice(2)) else {
            panic!("uploaded digest");
        };
        assert_eq!(now.part(), 2);
        // Refused: its notices go with it, untold.
        let refused = write(&spool, b"refused").expect("admitted");
        assert!(spool.notify(refused, notice(3), false));
        spool.take_batch(1);
        spool.discard(refused);
        assert!(matches!(
            spool.notify_digest(&blake3::hash(b"refused"), notice(4)),
            Awaited::Gone
        ));
        assert_eq!(spool.lock().notice_count, 0);
        assert!(
            heard.0.lock().unwrap().is_empty(),
            "the spool tells no one itself"
        );
    }

    #[test]
    fn over_the_limit_new_objects_are_refused_and_nothing_is_evicted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let per_file = u64::from(header_len("text/plain")) + 100;
        let (spool, _) = Spool::open(dir.path(), per_file * 3).expect("open");
        let objects: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100]).collect();
        let admitted: Vec<bool> = objects.iter().map(|o| write(&spool, o).is_some()).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.bytes(), per_file * 3);
        let left = spool.take_batch(10);
        let digests: Vec<Digest> = left.iter().map(|e| e.digest).collect();
        let want: Vec<Digest> = objects[..3].iter().map(|o| blake3::hash(o)).collect();
        assert_eq!(digests, want, "the oldest stay");
        assert_eq!(
            spool.admit(blake3::hash(b"new"), "text/plain", 100),
            Admit::NoRoom
        );
        // Room comes back as objects are uploaded.
        spool.complete(left[1].seq);
        assert!(matches!(
            spool.admit(blake3::hash(b"new"), "text/plain", 100),
            Admit::Write { .. }
        ));
        assert_eq!(
            spool.admit(blake3::hash(b"big"), "text/plain", per_file * 3),
            Admit::NoRoom
        );
    }

    #[test]
    fn a_truncated_file_is_detected_counted_and_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (spool, _) = Spool::open(dir.path(), 1 << 20).expect("open");
            write(&spool, b"whole object").expect("admitted");
            write(&spool, b"object cut short by a full disk").expect("admitted");
        }
        let cut = object_path(
            dir.path(),
            1,
            &blake3::hash(b"object cut short by a full disk"),
        );
        let len = fs::metadata(&cut).expect("stat").len();
        File::options()
            .write(true)
            .open(&cut)
            .and_then(|f| f.set_len(len - 5))
            .expect("truncate");
        let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            recovered,
            Recovery {
                objects: 1,
                corrupt: 1
            }
        );
        let batch = spool.take_batch(10);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].digest, blake3::hash(b"whole object"));
        assert!(!cut.exists(), "the damaged file is removed");
        // Its sequence number is not reused.
        assert_eq!(write(&spool, b"next"), Some(2));
    }

    #[test]
    fn an_open_directory_is_closed_and_another_users_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        drop(Spool::open(dir.path(), 1 << 20).expect("open"));
        let mode = fs::metadata(dir.path()).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, DIR_MODE);
        let theirs = dir.path().join("theirs");
        fs::create_dir(&theirs).expect("mkdir");
        std::os::unix::fs::chown(&theirs, Some(65534), None).expect("chown");
        let err = Spool::open(&theirs, 1 << 20).expect_err("another user's directory");
        assert!(
            matches!(err, SpoolError::Unsafe { uid: 65534, .. }),
            "{err}"
        );
    }

    #[test]
    fn header_round_trips_and_short_input_is_an_error() {
        let h = header("text/plain");
        let parsed = parse_header(&h).expect("parses");
        assert_eq!(parsed.content_type, "text/plain");
        assert_eq!(usize::from(parsed.offset), h.len());
        for cut in 0..h.len() {
            assert_eq!(
                parse_header(&h[..cut]),
                Err(HeaderError::Short),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_header(b"TWSPOOL2\0"), Err(HeaderError::Magic));
    }

    #[test]
    fn the_object_count_is_capped_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), u64::MAX).expect("open");
        for i in 0..MAX_OBJECTS as u64 + 10 {
            // Index only: no file is needed to exercise the limit.
            match spool.admit(blake3::hash(&i.to_le_bytes()), "text/plain", 1) {
                Admit::Write { seq, .. } => spool.written(seq),
                Admit::NoRoom if i >= MAX_OBJECTS as u64 => {}
                other => panic!("object {i}: {other:?}"),
            }
        }
        assert_eq!(spool.len(), MAX_OBJECTS);
        let oldest = spool.take_batch(1).pop().expect("an entry");
        assert_eq!(
            oldest.digest,
            blake3::hash(&0u64.to_le_bytes()),
            "the first stays"
        );
    }
}
