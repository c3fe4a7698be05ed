//! The spool directory and its in-memory index.
//!
//! Pending objects are appended to segment files, `{n:016x}.seg`, each object
//! behind a header holding its digest, length and content type
//! ([`super::header`]). The storage thread appends a batch of objects with one
//! vectored write and makes it durable with one `fdatasync`; an object counts
//! as kept only then. A new segment is created with `O_EXCL | O_NOFOLLOW` and
//! the directory fsynced once; a segment is sealed when it passes
//! [`SEGMENT_BYTES`] or the storage thread goes idle, and deleted once every
//! object in it is uploaded (or refused). Objects are uploaded oldest first, in
//! the order they were written.
//!
//! One file per object, as the spool was first laid out, cost a create, a
//! rename, an fsync of the file and of the directory, and an unlink per
//! object: with distinct bodies, the kernel's file creation and deletion
//! were the largest part of the agent's CPU.
//!
//! An object in the spool may be named by an event already sent, so nothing is
//! ever evicted: when the spool is at its limit, new objects are refused. Its
//! size counts whole segments, so bytes of uploaded objects count until their
//! segment is deleted.
//!
//! At start the directory must belong to the agent's user and be closed to
//! everyone else; only files with the spool's own names are touched. Every
//! object in every segment is hashed again and queued only if its bytes still
//! match the digest in its header: an object cut short by a crash of the
//! machine or a full disk is counted and never uploaded under a wrong digest.
//! A segment's objects uploaded before a crash are uploaded again (the same
//! key and bytes). Files of the one-file-per-object layout,
//! `{seq:016x}-{digest}.obj`, are checked and queued the same way.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ahead::{self, Ahead, Ready};
use super::header::{
    MAX_CONTENT_TYPE_BYTES, MAX_HEADER_BYTES, header_len, parse_header, parse_v1_header, truncate,
};
use super::known::KnownDigests;
use crate::{Digest, Notice, WrittenAhead};

/// The spool directory's mode when tapwire creates it: payloads are sensitive, so
/// only the agent's user may list or read them.
pub const DIR_MODE: u32 = 0o700;
/// Each spool file's mode.
pub const FILE_MODE: u32 = 0o600;
/// The file locked while a store has the spool open.
pub const LOCK_FILE: &str = ".lock";
/// A segment is sealed once it holds this many bytes: large enough that
/// creating and deleting segments costs nothing beside the objects, small
/// enough that a segment kept on disk by one object still waiting for its
/// upload holds little else.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// Objects the spool holds at most; past it new objects are refused, as
/// past the byte limit. The index costs about 150 bytes per object (its
/// slot, the digest's place in the lookup table, the queue), so this caps it
/// near 38 MiB however small the objects are (73 MiB with a tree of slots
/// and whole digests as keys). A store may hold fewer
/// ([`Spool::hold_at_most`], [`objects_within`]).
pub const MAX_OBJECTS: usize = 256 * 1024;
/// Objects a spool holds at least, however little memory its index is given.
pub const MIN_OBJECTS: usize = 4096;
/// Memory the index takes per object, rounded up from what was measured:
/// 38.7 MiB for [`MAX_OBJECTS`] entries, 155 bytes each.
pub const INDEX_BYTES_PER_OBJECT: u64 = 160;

/// Objects whose index entries fit in `index_bytes` of memory, within
/// [`MIN_OBJECTS`]..=[`MAX_OBJECTS`].
pub fn objects_within(index_bytes: u64) -> usize {
    count_within(
        index_bytes,
        INDEX_BYTES_PER_OBJECT,
        MIN_OBJECTS,
        MAX_OBJECTS,
    )
}

/// How many things of `each` bytes fit in `bytes`, within `least..=most`.
fn count_within(bytes: u64, each: u64, least: usize, most: usize) -> usize {
    usize::try_from(bytes / each)
        .unwrap_or(usize::MAX)
        .clamp(least, most)
}
/// Distinct content types shared between index entries; further ones are stored
/// per entry.
const MAX_INTERNED_CONTENT_TYPES: usize = 1024;
/// Digests of uploaded objects remembered for deduplication: 64 Ki × 32 bytes of
/// digest plus set overhead is a few MiB, and covers the repeats a node sees
/// (same error pages, same assets) over minutes to hours.
pub const RECENT_DIGESTS: usize = 64 * 1024;
/// Notices waiting in memory for their objects' uploads, at most (one per
/// request that named a pending object; an S3 outage or a slow bucket makes
/// them pile up), unless a store sets fewer ([`Spool::notices_at_most`],
/// [`notices_within`]). Past it, a notice's announcement is written ahead
/// and waits on disk ([`super::ahead`]) while the spool has room.
pub const MAX_NOTICES: usize = 64 * 1024;
/// Notices a spool keeps in memory at least, however little memory they are
/// given.
pub const MIN_NOTICES: usize = 1024;
/// Share of the spool's byte limit kept for announcements written ahead
/// (1/8): objects stop short of it. An announcement names an object already
/// kept, so it goes before a new object: when a backlog filled the spool with
/// objects, the announcements of the requests naming them, past those
/// waiting in memory, found no room and were dropped (104,621–136,466 per
/// bench round with distinct bodies, perf/results/2026-12-03-vm-store-memory.md).
pub const ANNOUNCEMENT_SHARE: u64 = 8;
/// Memory a waiting notice takes: its request's summary, about 280 bytes
/// with its share of the request record and its entry's list (64 Ki cost
/// about 17 MiB).
pub const NOTICE_BYTES: u64 = 280;

/// Notices that fit in `bytes` of memory, within
/// [`MIN_NOTICES`]..=[`MAX_NOTICES`].
pub fn notices_within(bytes: u64) -> usize {
    count_within(bytes, NOTICE_BYTES, MIN_NOTICES, MAX_NOTICES)
}

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
    /// Objects whose bytes no longer match their digest, or cut short, or
    /// whose header is unreadable: never uploaded, counted.
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
    /// The file that holds it.
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

/// One index entry.
#[derive(Debug)]
struct Slot {
    digest: Digest,
    content_type: Arc<str>,
    /// The segment that holds it (meaningless while `Writing`).
    segment: u64,
    /// Where the object's bytes start in the segment.
    offset: u64,
    /// The object's length in bytes.
    len: u64,
    /// Header and bytes: what it adds to its segment.
    record: u64,
    state: State,
}

/// Index entries by sequence number. Numbers are handed out in increasing
/// order and entries leave about in that order (oldest uploaded first), so
/// they sit in a ring sorted by number, found by binary search: a slot's own
/// size per entry, where a `BTreeMap` filled by ascending keys left its nodes
/// half empty. An entry that leaves before older ones leaves an empty place;
/// once empty places outnumber the entries, the ring is compacted (an upload
/// that keeps failing while newer ones finish cannot make it grow without
/// bound), so it holds at most about twice its entries.
#[derive(Debug, Default)]
struct Slots {
    ring: Places,
    /// Entries held (places that are not empty).
    live: usize,
    /// Places the ring holds at most while it can compact instead: the
    /// spool's object limit and [`SLOTS_SLACK`] (0: no limit).
    most: usize,
}

/// Empty places the ring may hold beyond its entries before it is compacted.
const SLOTS_SLACK: usize = 1024;

/// A place in the ring: an entry's number, and the entry unless it left.
type Place = (u64, Option<Slot>);

/// Places in a chunk: 192 KiB.
const CHUNK_PLACES: usize = 2048;

/// The ring's places, oldest first, in chunks of [`CHUNK_PLACES`]. It grows
/// a chunk at a time and frees its oldest chunk once every place in it is
/// gone, so it never copies its places to grow nor holds two buffers at
/// once: a `VecDeque` grew by doubling, and at the default budget's object
/// limit held its old ring of 12.5 MiB and its new one of 17.7 MiB together,
/// at the moment a backlog was largest; and it gave room back by copying
/// again once the backlog drained.
#[derive(Debug, Default)]
struct Places {
    /// Every chunk full but the last.
    chunks: VecDeque<Vec<Place>>,
    /// Places at the start of the first chunk that are gone.
    head: usize,
    len: usize,
}

impl Places {
    fn len(&self) -> usize {
        self.len
    }

    /// The chunk and the index in it of place `i`.
    fn locate(&self, i: usize) -> (usize, usize) {
        let at = self.head + i;
        (at / CHUNK_PLACES, at % CHUNK_PLACES)
    }

    fn get(&self, i: usize) -> Option<&Place> {
        if i >= self.len {
            return None;
        }
        let (chunk, at) = self.locate(i);
        self.chunks.get(chunk)?.get(at)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Place> {
        if i >= self.len {
            return None;
        }
        let (chunk, at) = self.locate(i);
        self.chunks.get_mut(chunk)?.get_mut(at)
    }

    fn front(&self) -> Option<&Place> {
        self.get(0)
    }

    fn back(&self) -> Option<&Place> {
        self.get(self.len.checked_sub(1)?)
    }

    fn push_back(&mut self, place: Place) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK_PLACES => last.push(place),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_PLACES);
                chunk.push(place);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// Forgets the oldest place (an empty one: nothing is dropped but its
    /// number), and frees its chunk once the chunk's last place is gone.
    fn forget_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.head += 1;
        if self.len == 0 {
            self.chunks.clear();
            self.head = 0;
        } else if self.head == CHUNK_PLACES {
            self.chunks.pop_front();
            self.head = 0;
        }
    }

    /// Where the place numbered `seq` is, by binary search.
    fn search(&self, seq: u64) -> Option<usize> {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.get(mid)?.0.cmp(&seq) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Keeps only the places `keep` names, in order. Each chunk is freed as
    /// soon as its places are moved: the rebuild holds about the places
    /// kept and one chunk more.
    fn retain(&mut self, mut keep: impl FnMut(&Place) -> bool) {
        let old = std::mem::take(self);
        let mut skip = old.head;
        for chunk in old.chunks {
            for place in chunk.into_iter().skip(std::mem::take(&mut skip)) {
                if keep(&place) {
                    self.push_back(place);
                }
            }
        }
    }

    /// Places the chunks have room for.
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.chunks.len() * CHUNK_PLACES
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &Place> {
        (0..self.len).filter_map(|i| self.get(i))
    }
}

impl Slots {
    /// Where entry `seq` sits in the ring. Numbers are consecutive until the
    /// ring is compacted, so the entry is first looked for `seq - front`
    /// places in: one read, where a binary search over a backlog of 100 k
    /// entries (about 100 bytes each) took some 17 cache misses, several
    /// times per object. After a compaction (rare: an upload stuck while
    /// newer ones finish) numbers skip places, and the search finds it.
    fn place(&self, seq: u64) -> Option<usize> {
        let front = self.ring.front()?.0;
        let guess = usize::try_from(seq.checked_sub(front)?).ok()?;
        if self.ring.get(guess).is_some_and(|(s, _)| *s == seq) {
            return Some(guess);
        }
        self.ring.search(seq)
    }

    fn get(&self, seq: u64) -> Option<&Slot> {
        self.ring.get(self.place(seq)?)?.1.as_ref()
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let place = self.place(seq)?;
        self.ring.get_mut(place)?.1.as_mut()
    }

    fn contains(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }

    /// Adds entry `seq`, newer than every entry held. At [`Slots::most`]
    /// places the ring is compacted first while it has empty places (it has
    /// more than [`SLOTS_SLACK`] whenever the spool admits an object, so a
    /// compaction is rare); entries recovered at start may pass the limit.
    fn push(&mut self, seq: u64, slot: Slot) {
        debug_assert!(
            self.ring.back().is_none_or(|(last, _)| *last < seq),
            "entry {seq} is not the newest"
        );
        if self.most > 0 && self.ring.len() >= self.most && self.ring.len() > self.live {
            self.ring.retain(|(_, slot)| slot.is_some());
        }
        self.ring.push_back((seq, Some(slot)));
        self.live += 1;
    }

    /// Removes entry `seq`.
    fn remove(&mut self, seq: u64) -> Option<Slot> {
        let place = self.place(seq)?;
        let slot = self.ring.get_mut(place)?.1.take()?;
        self.live -= 1;
        while matches!(self.ring.front(), Some((_, None))) {
            self.ring.forget_front();
        }
        if self.ring.len() > 2 * self.live + SLOTS_SLACK {
            self.ring.retain(|(_, slot)| slot.is_some());
        }
        Some(slot)
    }

    /// Entries held.
    fn len(&self) -> usize {
        self.live
    }

    /// Places in the ring, entries and empty ones.
    #[cfg(test)]
    fn places(&self) -> usize {
        self.ring.len()
    }
}

/// Where an entry's digest goes in [`Index::by_digest`]: its first eight
/// bytes (a BLAKE3 digest's bytes are uniform; two digests that share them
/// are told apart by the slot's whole digest).
fn digest_key(digest: &Digest) -> u64 {
    let bytes: &[u8; 32] = digest.as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"))
}

/// A file of objects.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Objects in it still waiting for their upload (or in flight).
    live: usize,
    /// Bytes of its objects, headers included.
    bytes: u64,
    /// Still being appended to: not deleted when `live` reaches zero.
    open: bool,
}

/// How much waits in a spool ([`Spool::levels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLevels {
    /// Objects in any state (writing, queued, uploading).
    pub objects: u64,
    /// Bytes on disk, objects' segments and announcements' files.
    pub bytes: u64,
    /// Announcements held in memory until their objects are uploaded.
    pub announcements: u64,
    /// Announcements written ahead to disk, waiting the same way.
    pub announcements_ahead: u64,
}

/// What [`Spool::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Append the object to the open segment, then call [`Spool::written`]
    /// with `seq` (or [`Spool::abandon`]).
    Write {
        /// The entry's sequence number.
        seq: u64,
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
    /// Entries the index holds at most ([`MAX_OBJECTS`] unless a store set
    /// fewer).
    max_objects: usize,
    index: Mutex<Index>,
    /// Digests uploaded, for lookups without the index's lock
    /// ([`Spool::uploaded`]).
    known: KnownDigests,
    /// `LOCK_FILE`, locked exclusively for as long as the spool is open; the
    /// kernel releases the lock when the process dies, however it dies.
    _lock: File,
}

/// The index's tables: foldhash, seeded per process. Their keys are
/// sequence numbers the spool hands out and digests of captured bytes, which
/// no peer can choose; SipHash, the standard library's default, was a
/// visible cost of the storage thread with a distinct object per request.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = HashSet<K, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Index {
    slots: Slots,
    /// Sequence numbers in state `Queued`, oldest first.
    queued: BTreeSet<u64>,
    /// Entries by the first eight bytes of their digest ([`digest_key`]);
    /// the slot's own digest confirms a match ([`Index::pending`]).
    by_digest: Map<u64, u64>,
    /// Entries whose digest's first eight bytes were taken by another
    /// entry's when they came (about never: 2^-64 for two digests).
    collided: Map<Digest, u64>,
    recent: RecentDigests,
    segments: Map<u64, Segment>,
    /// The number of the next segment created.
    next_segment: u64,
    /// Bytes of all segments, and reserved for objects being written.
    bytes: u64,
    next_seq: u64,
    /// Content types shared by entries.
    content_types: Set<Arc<str>>,
    /// Notices told when an entry is uploaded, by `seq`, each with whether its
    /// request's object was a duplicate of the entry.
    notices: Map<u64, Vec<(Notice, bool)>>,
    /// Notices in `notices`, all entries together.
    notice_count: usize,
    /// Notices in memory at most ([`MAX_NOTICES`]).
    max_notices: usize,
    /// Announcements written ahead, waiting on disk.
    ahead: Ahead,
}

/// What became of a notice for an object the spool already had
/// ([`Spool::notify_digest`]).
#[derive(Debug)]
pub enum Awaited {
    /// It waits for the pending entry's upload.
    Waiting,
    /// The object was uploaded recently: announce it now.
    Uploaded(Notice),
    /// Too many notices wait in memory already: it waits for entry `seq`
    /// no longer (write it ahead, [`Spool::wait_ahead`]).
    Full(Notice, u64),
    /// The entry is gone unstored (refused): nothing to announce.
    Gone,
}

/// What became of an announcement written ahead ([`Spool::wait_ahead`]).
#[derive(Debug, PartialEq, Eq)]
pub enum AheadWait {
    /// It waits on disk for the entry's upload.
    Waiting,
    /// The entry is uploaded already: make it now.
    Now,
    /// The entry is gone unstored: nothing to announce.
    Gone,
    /// The spool is at its byte limit: dropped (count it).
    Full,
}

/// A bounded set of digests, forgetting the oldest first.
#[derive(Debug, Default)]
struct RecentDigests {
    set: Set<Digest>,
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

/// Segment `n`'s file in `dir`.
fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016x}.seg"))
}

/// A file the spool found in its directory at start.
#[derive(Debug)]
enum Found {
    /// A file of the one-file-per-object layout: its sequence number and digest.
    V1 { seq: u64, digest: Digest },
    /// A segment and its number.
    Segment(u64),
}

impl Spool {
    /// Opens (creating if needed, mode 0700) the spool at `dir`, checks who owns
    /// it, and queues every object of every segment whose bytes match its
    /// digest, oldest first.
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
        let mut found = Vec::new();
        for dent in fs::read_dir(dir).map_err(err)? {
            let path = dent.map_err(err)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(n) = numbered(name, ".seg") {
                found.push(Found::Segment(n));
            } else if let Some((seq, digest)) = name.strip_suffix(".obj").and_then(parse_stem) {
                found.push(Found::V1 { seq, digest });
            } else if name.strip_suffix(".tmp").and_then(parse_stem).is_some()
                || numbered(name, ahead::SUFFIX).is_some()
            {
                // Half written by the one-file-per-object layout; or
                // announcements of a previous run's requests.
                remove_file(&path);
            }
        }
        // The earlier layout's files are older than any segment.
        found.sort_by_key(|f| match f {
            Found::V1 { seq, .. } => (0, *seq),
            Found::Segment(n) => (1, *n),
        });
        let mut index = Index {
            max_notices: MAX_NOTICES,
            ahead: Ahead::new(dir),
            slots: Slots {
                most: MAX_OBJECTS + SLOTS_SLACK,
                ..Slots::default()
            },
            next_segment: found
                .iter()
                .filter_map(|f| match f {
                    Found::Segment(n) => Some(n + 1),
                    Found::V1 { .. } => None,
                })
                .max()
                .unwrap_or(0),
            ..Index::default()
        };
        let mut recovery = Recovery::default();
        for f in found {
            let (n, path, scan) = match f {
                Found::Segment(n) => {
                    let path = segment_path(dir, n);
                    let scan = scan_segment(&path);
                    (n, path, scan)
                }
                Found::V1 { seq, digest } => {
                    let path = dir.join(format!("{seq:016x}-{}.obj", digest.to_hex()));
                    let scan = scan_v1(&path, digest);
                    // Indexed as a segment of one object.
                    let n = index.next_segment;
                    index.next_segment += 1;
                    (n, path, scan)
                }
            };
            recovery.corrupt += scan.corrupt;
            if let Some(error) = &scan.error {
                tracing::warn!(path = %path.display(), %error, objects = scan.objects.len(), corrupt = scan.corrupt, "spool file damaged; its whole objects are uploaded, the rest never");
            }
            if scan.objects.is_empty() {
                remove_file(&path);
                continue;
            }
            index.segments.insert(
                n,
                Segment {
                    path,
                    live: scan.objects.len(),
                    bytes: scan.bytes,
                    open: false,
                },
            );
            index.bytes += scan.bytes;
            recovery.objects += scan.objects.len();
            for object in scan.objects {
                let seq = index.next_seq;
                index.next_seq += 1;
                let content_type = index.intern(&object.content_type);
                index.look_up_by_digest(object.digest, seq);
                index.queued.insert(seq);
                index.slots.push(
                    seq,
                    Slot {
                        digest: object.digest,
                        content_type,
                        segment: n,
                        offset: object.offset,
                        len: object.len,
                        record: 0,
                        state: State::Queued,
                    },
                );
            }
        }
        Ok((
            Self {
                dir: dir.to_owned(),
                max_bytes,
                max_objects: MAX_OBJECTS,
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

    /// Reserves room for an object, or refuses it when the spool is at its
    /// object limit or its byte limit for objects ([`Spool::object_bytes`]).
    /// Nothing is ever evicted: an event may already name every object in the
    /// spool.
    pub fn admit(&self, digest: Digest, content_type: &str, len: u64) -> Admit {
        let record = self.record_len(content_type, len);
        let mut idx = self.lock();
        if idx.pending(&digest).is_some() || idx.recent.contains(&digest) {
            return Admit::Duplicate;
        }
        if !idx.fits(record, self.object_bytes()) || idx.slots.len() >= self.max_objects {
            return Admit::NoRoom;
        }
        let seq = idx.next_seq;
        idx.next_seq += 1;
        let content_type = idx.intern(truncate(content_type, MAX_CONTENT_TYPE_BYTES));
        idx.bytes += record;
        idx.look_up_by_digest(digest, seq);
        idx.slots.push(
            seq,
            Slot {
                digest,
                content_type,
                segment: 0,
                offset: 0,
                len,
                record,
                state: State::Writing,
            },
        );
        Admit::Write { seq }
    }

    /// A new segment to append to: its number and path. Seal it with
    /// [`Spool::seal`].
    pub fn new_segment(&self) -> (u64, PathBuf) {
        let mut idx = self.lock();
        let n = idx.next_segment;
        idx.next_segment += 1;
        let path = segment_path(&self.dir, n);
        idx.segments.insert(
            n,
            Segment {
                path: path.clone(),
                live: 0,
                bytes: 0,
                open: true,
            },
        );
        (n, path)
    }

    /// No more objects go into `segment`: it is deleted once none of its
    /// objects waits.
    pub fn seal(&self, segment: u64) {
        let mut idx = self.lock();
        if let Some(seg) = idx.segments.get_mut(&segment) {
            seg.open = false;
        }
        idx.release_segment(segment);
    }

    /// Whether an object with `digest` is kept: whole in the spool, or uploaded
    /// recently.
    pub fn holds(&self, digest: &Digest) -> bool {
        let idx = self.lock();
        idx.recent.contains(digest)
            || idx
                .pending(digest)
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
    /// Gives the notice back when [`MAX_NOTICES`] already wait in memory
    /// (write it ahead, [`Spool::wait_ahead`]).
    pub fn notify(&self, seq: u64, notice: Notice, duplicate: bool) -> Result<(), Notice> {
        let mut idx = self.lock();
        idx.wait(seq, notice, duplicate)
    }

    /// Entry `seq`'s digest, length and content type, while it is in the
    /// spool.
    pub fn entry_of(&self, seq: u64) -> Option<(Digest, u64, Arc<str>)> {
        let idx = self.lock();
        let slot = idx.slots.get(seq)?;
        Some((slot.digest, slot.len, Arc::clone(&slot.content_type)))
    }

    /// Keeps `record`, an announcement written ahead, on disk until entry
    /// `seq` (of `digest`) is uploaded, then [`Spool::take_ready`] gives it
    /// to `by`'s announcer. It counts towards the spool's byte limit. Call
    /// [`Spool::flush_ahead`] once a batch of them is kept.
    pub fn wait_ahead(
        &self,
        seq: u64,
        digest: &Digest,
        record: &[u8],
        by: &Arc<dyn WrittenAhead>,
    ) -> AheadWait {
        let mut idx = self.lock();
        if !idx.slots.contains(seq) {
            return if idx.recent.contains(digest) {
                AheadWait::Now
            } else {
                AheadWait::Gone
            };
        }
        if !idx.fits(Ahead::cost(record), self.max_bytes) {
            return AheadWait::Full;
        }
        match idx.ahead.append(seq, record, by) {
            Ok(()) => AheadWait::Waiting,
            Err(_) => AheadWait::Full,
        }
    }

    /// Writes the announcements kept since the last call to disk. Returns how
    /// many were lost to a failed write (count them as dropped).
    pub fn flush_ahead(&self) -> u64 {
        self.lock().ahead.flush()
    }

    /// Announcements written ahead whose entries are uploaded, in the order
    /// they were kept, up to the first whose entry still waits.
    pub fn take_ready(&self) -> Ready {
        let mut idx = self.lock();
        if idx.ahead.waiting() == 0 {
            return Ready::default();
        }
        let Index { ahead, slots, .. } = &mut *idx;
        ahead.take_ready(|seq| slots.contains(seq))
    }

    /// Announcements written ahead waiting for uploads.
    #[cfg(test)]
    pub fn waiting_ahead(&self) -> u64 {
        self.lock().ahead.waiting()
    }

    /// Tells `notice` when the object with `digest`, already pending or
    /// uploaded, is stored.
    pub fn notify_digest(&self, digest: &Digest, notice: Notice) -> Awaited {
        let mut idx = self.lock();
        if let Some(seq) = idx.pending(digest) {
            return match idx.wait(seq, notice, true) {
                Ok(()) => Awaited::Waiting,
                Err(notice) => Awaited::Full(notice, seq),
            };
        }
        if idx.recent.contains(digest) {
            Awaited::Uploaded(notice)
        } else {
            Awaited::Gone
        }
    }

    /// The object `seq` is whole and synced in `segment`, its bytes at
    /// `offset`: queue it.
    pub fn written(&self, seq: u64, segment: u64, offset: u64) {
        let mut idx = self.lock();
        let Some(slot) = idx.slots.get_mut(seq) else {
            return;
        };
        slot.segment = segment;
        slot.offset = offset;
        slot.state = State::Queued;
        let record = slot.record;
        idx.queued.insert(seq);
        // Its reservation becomes part of the segment's bytes.
        if let Some(seg) = idx.segments.get_mut(&segment) {
            seg.live += 1;
            seg.bytes += record;
        }
    }

    /// Writing `seq` failed: forget it.
    pub fn abandon(&self, seq: u64) {
        self.lock().remove_unstored(seq);
    }

    /// Up to `max` queued entries, oldest first, now marked in flight.
    pub fn take_batch(&self, max: usize) -> Vec<Entry> {
        let mut idx = self.lock();
        let idx = &mut *idx;
        let mut out = Vec::with_capacity(max.min(idx.queued.len()));
        while out.len() < max {
            let Some(seq) = idx.queued.pop_first() else {
                break;
            };
            let Some(slot) = idx.slots.get_mut(seq) else {
                continue;
            };
            let Some(seg) = idx.segments.get(&slot.segment) else {
                // A queued object's segment lives until the object is gone.
                debug_assert!(false, "object {seq} queued without its segment");
                tracing::error!(seq, digest = %slot.digest, "spool object without its segment; dropped");
                idx.remove_unstored(seq);
                continue;
            };
            slot.state = State::InFlight;
            out.push(Entry {
                seq,
                digest: slot.digest,
                content_type: Arc::clone(&slot.content_type),
                offset: slot.offset,
                len: slot.len,
                path: seg.path.clone(),
            });
        }
        out
    }

    /// An upload did not finish (shutting down): queue `seq` again.
    pub fn release(&self, seq: u64) {
        let mut idx = self.lock();
        if let Some(slot) = idx.slots.get_mut(seq) {
            slot.state = State::Queued;
            idx.queued.insert(seq);
        }
    }

    /// `seq` is uploaded: remember its digest, and delete its segment if
    /// nothing else in it waits. Returns the notices waiting for it, to be
    /// told.
    pub fn complete(&self, seq: u64) -> Vec<(Notice, bool)> {
        let mut idx = self.lock();
        let notices = idx.take_notices(seq);
        if let Some(slot) = idx.remove(seq) {
            idx.recent.insert(slot.digest);
            self.known.insert(&slot.digest);
        }
        notices
    }

    /// `seq` cannot be stored: forget it.
    pub fn discard(&self, seq: u64) {
        self.lock().remove_unstored(seq);
    }

    /// Objects in the spool in any state (writing, queued, uploading).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// What waits now: objects in any state, announcements held in memory
    /// for their objects' uploads, and those written ahead to disk.
    pub fn levels(&self) -> SpoolLevels {
        let idx = self.lock();
        SpoolLevels {
            objects: idx.slots.len() as u64,
            bytes: idx.used(),
            announcements: idx.notice_count as u64,
            announcements_ahead: idx.ahead.waiting(),
        }
    }

    /// Whether the spool holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Objects waiting for an upload slot.
    pub fn queued(&self) -> usize {
        self.lock().queued.len()
    }

    /// Bytes on disk (objects, and announcements written ahead), and
    /// reserved for objects being written.
    pub fn bytes(&self) -> u64 {
        self.lock().used()
    }

    /// The size limit in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The size limit for new objects: all but the share kept for
    /// announcements ([`ANNOUNCEMENT_SHARE`]), which may use the whole.
    pub fn object_bytes(&self) -> u64 {
        self.max_bytes - self.max_bytes / ANNOUNCEMENT_SHARE
    }

    /// The spool, admitting new objects only while it holds fewer than
    /// `objects` (objects found at start stay, even past it). A store sets
    /// it from the memory its index may take ([`objects_within`]).
    pub fn hold_at_most(mut self, objects: usize) -> Self {
        self.max_objects = objects.min(MAX_OBJECTS);
        self.index
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .most = self.max_objects + SLOTS_SLACK;
        self
    }

    /// The spool, keeping at most `notices` in memory; past them,
    /// announcements wait on disk. A store sets it from the memory they may
    /// take ([`notices_within`]).
    pub fn notices_at_most(mut self, notices: usize) -> Self {
        self.index
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .max_notices = notices.min(MAX_NOTICES);
        self
    }

    /// Objects the spool holds at most.
    pub fn max_objects(&self) -> usize {
        self.max_objects
    }

    /// Bytes in a segment for an object of `len` bytes and this content type.
    pub fn record_len(&self, content_type: &str, len: u64) -> u64 {
        u64::from(header_len(content_type)) + len
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Index {
    /// Adds a notice to entry `seq`'s list, within `max_notices`; gives it
    /// back past it (or when the entry is gone).
    fn wait(&mut self, seq: u64, notice: Notice, duplicate: bool) -> Result<(), Notice> {
        if self.notice_count >= self.max_notices || !self.slots.contains(seq) {
            return Err(notice);
        }
        self.notice_count += 1;
        self.notices
            .entry(seq)
            .or_default()
            .push((notice, duplicate));
        Ok(())
    }

    /// Makes entry `seq`, holding an object with `digest`, found by it
    /// ([`Index::pending`]); the first entry of a digest keeps it.
    fn look_up_by_digest(&mut self, digest: Digest, seq: u64) {
        match self.by_digest.entry(digest_key(&digest)) {
            MapEntry::Vacant(place) => {
                place.insert(seq);
            }
            MapEntry::Occupied(place) => {
                if self.slots.get(*place.get()).map(|slot| slot.digest) != Some(digest) {
                    self.collided.entry(digest).or_insert(seq);
                }
            }
        }
    }

    /// The entry holding an object with `digest`, if one is pending.
    fn pending(&self, digest: &Digest) -> Option<u64> {
        if let Some(&seq) = self.by_digest.get(&digest_key(digest))
            && self
                .slots
                .get(seq)
                .is_some_and(|slot| slot.digest == *digest)
        {
            return Some(seq);
        }
        self.collided.get(digest).copied()
    }

    /// Bytes on disk (objects and announcements) and reserved.
    fn used(&self) -> u64 {
        self.bytes + self.ahead.bytes()
    }

    /// Whether `more` bytes fit within `max_bytes`.
    fn fits(&self, more: u64, max_bytes: u64) -> bool {
        self.used() + more <= max_bytes
    }

    /// Removes entry `seq`, not uploaded: announcements written ahead for
    /// it are dropped when read.
    fn remove_unstored(&mut self, seq: u64) {
        if self.remove(seq).is_some() {
            self.ahead.unstored(seq);
        }
    }

    fn take_notices(&mut self, seq: u64) -> Vec<(Notice, bool)> {
        let notices = self.notices.remove(&seq).unwrap_or_default();
        self.notice_count -= notices.len();
        notices
    }

    fn remove(&mut self, seq: u64) -> Option<Slot> {
        // Notices of an entry removed unstored are dropped: nothing to announce.
        drop(self.take_notices(seq));
        let slot = self.slots.remove(seq)?;
        self.queued.remove(&seq);
        let key = digest_key(&slot.digest);
        if self.by_digest.get(&key) == Some(&seq) {
            self.by_digest.remove(&key);
        } else if self.collided.get(&slot.digest) == Some(&seq) {
            self.collided.remove(&slot.digest);
        }
        if slot.state == State::Writing {
            // Only reserved: its segment never counted it.
            self.bytes = self.bytes.saturating_sub(slot.record);
        } else {
            if let Some(seg) = self.segments.get_mut(&slot.segment) {
                seg.live = seg.live.saturating_sub(1);
            }
            self.release_segment(slot.segment);
        }
        Some(slot)
    }

    /// Deletes `segment` if it is sealed and nothing in it waits.
    fn release_segment(&mut self, segment: u64) {
        if let Some(seg) = self.segments.get(&segment)
            && !seg.open
            && seg.live == 0
            && let Some(seg) = self.segments.remove(&segment)
        {
            remove_file(&seg.path);
            self.bytes = self.bytes.saturating_sub(seg.bytes);
        }
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

pub(super) fn remove_file(path: &Path) {
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

/// The number of a file named `{n:016x}{suffix}`.
fn numbered(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)
        .filter(|hex| hex.len() == 16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
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

/// A whole object found in a file at start.
#[derive(Debug)]
struct Recovered {
    digest: Digest,
    content_type: String,
    /// Where its bytes start in the file.
    offset: u64,
    len: u64,
}

/// What a file read at start holds.
#[derive(Debug, Default)]
struct Scan {
    objects: Vec<Recovered>,
    /// Objects left out: bytes that do not match their digest, an object cut
    /// short, an unreadable header (which ends the file: what follows it
    /// cannot be placed).
    corrupt: usize,
    /// The file's length.
    bytes: u64,
    /// What made the scan leave something out, for the log.
    error: Option<String>,
}

/// Reads a segment, hashing each object again.
fn scan_segment(path: &Path) -> Scan {
    let mut scan = Scan::default();
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| Ok((f.metadata()?.len(), f)))
    {
        Ok((len, f)) => {
            scan.bytes = len;
            f
        }
        Err(e) => {
            scan.corrupt += 1;
            scan.error = Some(e.to_string());
            return scan;
        }
    };
    let mut file = io::BufReader::with_capacity(64 * 1024, file);
    let mut pos = 0u64;
    let mut head = [0u8; MAX_HEADER_BYTES];
    while pos < scan.bytes {
        // The fixed fields, then the content type whose length they end with.
        let fixed = MAX_HEADER_BYTES - MAX_CONTENT_TYPE_BYTES;
        let read = |file: &mut io::BufReader<File>, buf: &mut [u8]| {
            if pos + buf.len() as u64 > scan.bytes {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("at byte {pos}: a header cut short"),
                ));
            }
            file.read_exact(buf)
        };
        let ct_len = match read(&mut file, &mut head[..fixed]) {
            Ok(()) => usize::from(head[fixed - 1]),
            Err(e) => {
                scan.corrupt += 1;
                scan.error = Some(e.to_string());
                break;
            }
        };
        let parsed = read(&mut file, &mut head[fixed..fixed + ct_len])
            .map_err(|e| e.to_string())
            .and_then(|()| {
                parse_header(&head[..fixed + ct_len]).map_err(|e| format!("at byte {pos}: {e}"))
            });
        let header = match parsed {
            Ok(h) => h,
            Err(e) => {
                scan.corrupt += 1;
                scan.error = Some(e);
                break;
            }
        };
        let offset = pos + u64::from(header.offset);
        let end = offset.saturating_add(header.len);
        if end > scan.bytes {
            scan.corrupt += 1;
            scan.error = Some(format!(
                "at byte {pos}: an object of {} bytes cut short at {}",
                header.len,
                scan.bytes - offset
            ));
            break;
        }
        let mut hasher = blake3::Hasher::new();
        let mut rest = header.len;
        let mut buf = [0u8; 16 * 1024];
        while rest > 0 {
            let n = (buf.len() as u64).min(rest) as usize;
            if let Err(e) = file.read_exact(&mut buf[..n]) {
                scan.corrupt += 1;
                scan.error = Some(e.to_string());
                return scan;
            }
            hasher.update(&buf[..n]);
            rest -= n as u64;
        }
        if hasher.finalize() == blake3::Hash::from_bytes(header.digest) {
            scan.objects.push(Recovered {
                digest: blake3::Hash::from_bytes(header.digest),
                content_type: header.content_type.to_owned(),
                offset,
                len: header.len,
            });
        } else {
            scan.corrupt += 1;
            scan.error = Some(format!(
                "at byte {pos}: the {} bytes of object {} do not hash to its digest",
                header.len,
                blake3::Hash::from_bytes(header.digest)
            ));
        }
        pos = end;
    }
    scan
}

/// Reads a file of the one-file-per-object layout, checking that its bytes hash
/// to `digest`.
fn scan_v1(path: &Path, digest: Digest) -> Scan {
    let mut scan = Scan::default();
    match read_v1(path, &digest) {
        Ok((object, bytes)) => {
            scan.objects.push(object);
            scan.bytes = bytes;
        }
        Err(e) => {
            scan.corrupt = 1;
            scan.error = Some(e.to_string());
        }
    }
    scan
}

fn read_v1(path: &Path, digest: &Digest) -> io::Result<(Recovered, u64)> {
    let bytes = fs::read(path)?;
    let (content_type, offset) =
        parse_v1_header(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let body = &bytes[usize::from(offset)..];
    if blake3::hash(body) != *digest {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes do not hash to the digest in the name", body.len()),
        ));
    }
    Ok((
        Recovered {
            digest: *digest,
            content_type: content_type.to_owned(),
            offset: u64::from(offset),
            len: body.len() as u64,
        },
        bytes.len() as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::header::{HeaderError, parse_header, write_header};
    use super::*;

    /// Header and bytes of `bytes` as the storage thread appends them.
    fn record(bytes: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        write_header(
            &mut data,
            blake3::hash(bytes).as_bytes(),
            bytes.len() as u64,
            "text/plain",
        );
        data.extend_from_slice(bytes);
        data
    }

    /// Appends the admitted ones of `objects` to a new segment, as the storage
    /// thread does, and seals it: their sequence numbers (`None`: refused).
    fn segment(spool: &Spool, objects: &[&[u8]]) -> Vec<Option<u64>> {
        let (n, path) = spool.new_segment();
        let mut data = Vec::new();
        let mut placed = Vec::new();
        let seqs = objects
            .iter()
            .map(
                |bytes| match spool.admit(blake3::hash(bytes), "text/plain", bytes.len() as u64) {
                    Admit::Write { seq } => {
                        let rec = record(bytes);
                        placed.push((seq, (data.len() + rec.len() - bytes.len()) as u64));
                        data.extend_from_slice(&rec);
                        Some(seq)
                    }
                    _ => None,
                },
            )
            .collect();
        if !placed.is_empty() {
            fs::write(&path, data).expect("write segment");
        }
        for (seq, offset) in placed {
            spool.written(seq, n, offset);
        }
        spool.seal(n);
        seqs
    }

    fn write(spool: &Spool, bytes: &[u8]) -> Option<u64> {
        segment(spool, &[bytes])[0]
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|d| d.expect("dent").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn recovers_whole_objects_and_drops_torn_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("open");
            assert_eq!(recovered, Recovery::default());
            segment(&spool, &[b"one", b"two"]);
            // A crash in the middle of an append: the header and part of the bytes.
            let (_, path) = spool.new_segment();
            fs::write(&path, &record(b"three")[..60]).expect("torn write");
        }
        // Files that are not the spool's own are left alone.
        fs::write(dir.path().join("notes.tmp"), b"mine").expect("foreign file");
        let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            recovered,
            Recovery {
                objects: 2,
                corrupt: 1
            }
        );
        let batch = spool.take_batch(10);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].digest, blake3::hash(b"one"));
        assert_eq!(batch[1].digest, blake3::hash(b"two"));
        assert_eq!(&*batch[0].content_type, "text/plain");
        assert_eq!(batch[0].len, 3);
        let data = fs::read(&batch[1].path).expect("read");
        let at = batch[1].offset as usize;
        assert_eq!(&data[at..at + 3], b"two");
        assert_eq!(
            names(dir.path()),
            [".lock", "0000000000000000.seg", "notes.tmp"],
            "the torn segment held nothing whole: removed"
        );
        // The next object continues the sequence, in a new segment.
        let seq = write(&spool, b"four").expect("admitted");
        assert_eq!(seq, batch[1].seq + 1);
        assert!(dir.path().join("0000000000000002.seg").exists());
        // A segment goes once every object in it is uploaded.
        spool.complete(batch[0].seq);
        assert!(dir.path().join("0000000000000000.seg").exists());
        spool.complete(batch[1].seq);
        assert!(!dir.path().join("0000000000000000.seg").exists());
    }

    #[test]
    fn files_of_the_one_file_per_object_layout_are_uploaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = |seq: u64, bytes: &[u8], ext: &str| {
            let mut data = b"TWSPOOL1\x0atext/plain".to_vec();
            data.extend_from_slice(bytes);
            let name = format!("{seq:016x}-{}.{ext}", blake3::hash(bytes).to_hex());
            fs::write(dir.path().join(name), data).expect("write old file");
        };
        old(7, b"kept", "obj");
        old(8, b"half", "tmp");
        // A file whose bytes no longer match the digest in its name.
        let mut bad = b"TWSPOOL1\x0atext/plain".to_vec();
        bad.extend_from_slice(b"changed");
        let name = format!("{:016x}-{}.obj", 9, blake3::hash(b"original").to_hex());
        fs::write(dir.path().join(name), bad).expect("write bad file");
        let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("open");
        assert_eq!(
            recovered,
            Recovery {
                objects: 1,
                corrupt: 1
            }
        );
        let batch = spool.take_batch(10);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].digest, blake3::hash(b"kept"));
        let data = fs::read(&batch[0].path).expect("read");
        assert_eq!(&data[batch[0].offset as usize..], b"kept");
        assert_eq!(names(dir.path()).len(), 2, "{:?}", names(dir.path()));
        spool.complete(batch[0].seq);
        assert_eq!(names(dir.path()), [".lock"]);
    }

    #[test]
    fn a_segment_stays_while_open_or_while_an_object_in_it_waits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), 1 << 20).expect("open");
        let (n, path) = spool.new_segment();
        let Admit::Write { seq } = spool.admit(blake3::hash(b"a"), "text/plain", 1) else {
            panic!("admitted");
        };
        fs::write(&path, record(b"a")).expect("write");
        let per = spool.record_len("text/plain", 1);
        spool.written(seq, n, per - 1);
        assert_eq!(spool.bytes(), per);
        spool.take_batch(1);
        spool.complete(seq);
        assert!(path.exists(), "still open");
        assert_eq!(spool.bytes(), per, "its bytes count until it goes");
        spool.seal(n);
        assert!(!path.exists(), "sealed and empty");
        assert_eq!(spool.bytes(), 0);
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
        assert!(spool.notify(seq, notice(0), false).is_ok());
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
        assert!(spool.notify(refused, notice(3), false).is_ok());
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

    /// Keeps the records announced after being written ahead.
    #[derive(Default)]
    struct Later(Mutex<Vec<String>>);

    impl WrittenAhead for Later {
        fn announce(&self, _: &str, record: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(record).into_owned());
        }
    }

    fn told(spool: &Spool) -> Vec<String> {
        let ready = spool.take_ready();
        assert_eq!(ready.lost, 0);
        ready.texts()
    }

    #[test]
    fn objects_stop_short_of_the_share_kept_for_announcements() {
        let dir = tempfile::tempdir().expect("temp dir");
        let per_object = u64::from(header_len("text/plain")) + 100;
        let max_bytes = 16 * per_object;
        let (spool, _) = Spool::open(dir.path(), max_bytes).expect("open");
        let objects: Vec<[u8; 100]> = (0..16u8).map(|i| [i; 100]).collect();
        let admitted: Vec<u64> = objects.iter().filter_map(|o| write(&spool, o)).collect();
        assert_eq!(admitted.len(), 14, "objects stop at seven eighths");
        assert_eq!(spool.bytes(), 14 * per_object);
        // The announcements of the requests naming them still find room, in
        // the last eighth, and only there.
        let later: Arc<dyn WrittenAhead> = Arc::new(Later::default());
        let digest = blake3::hash(&objects[0]);
        let record = [b'r'; 50];
        let mut kept = 0;
        while spool.wait_ahead(admitted[0], &digest, &record, &later) == AheadWait::Waiting {
            kept += 1;
        }
        assert_eq!(kept, 2 * per_object / Ahead::cost(&record), "{per_object}");
        assert!(spool.bytes() <= max_bytes);
    }

    #[test]
    fn notices_past_the_memory_limit_wait_on_disk_within_the_byte_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let per_object = u64::from(header_len("text/plain")) + 4;
        // Room for two objects and three records of 10 bytes (24 with their headers).
        let (spool, _) = Spool::open(dir.path(), per_object * 2 + 3 * 24 + 8).expect("open");
        let spool = spool.notices_at_most(1);
        let heard = Arc::new(Parts::default());
        let notice = |part| Notice::new(heard.clone(), part);
        let later: Arc<dyn WrittenAhead> = Arc::new(Later::default());
        let one = write(&spool, b"one!").expect("admitted");
        let two = write(&spool, b"two!").expect("admitted");
        assert!(spool.notify(one, notice(0), false).is_ok());
        let Err(back) = spool.notify(one, notice(1), false) else {
            panic!("one notice fits in memory");
        };
        assert_eq!(back.part(), 1);
        let Awaited::Full(back, seq) = spool.notify_digest(&blake3::hash(b"two!"), notice(2))
        else {
            panic!("the limit holds for duplicates too");
        };
        assert_eq!((back.part(), seq), (2, two));
        let (d1, d2) = (blake3::hash(b"one!"), blake3::hash(b"two!"));
        assert_eq!(
            spool.wait_ahead(one, &d1, b"one, ahead", &later),
            AheadWait::Waiting
        );
        assert_eq!(
            spool.wait_ahead(two, &d2, b"two, ahead", &later),
            AheadWait::Waiting
        );
        assert_eq!(
            spool.wait_ahead(one, &d1, b"one, again", &later),
            AheadWait::Waiting
        );
        // The byte limit counts them.
        assert_eq!(
            spool.wait_ahead(two, &d2, b"over the limit", &later),
            AheadWait::Full
        );
        assert_eq!(
            spool.admit(blake3::hash(b"new"), "text/plain", 4),
            Admit::NoRoom
        );
        assert_eq!(spool.flush_ahead(), 0);
        assert_eq!(spool.waiting_ahead(), 3);
        spool.take_batch(2);
        assert!(told(&spool).is_empty(), "nothing is uploaded yet");
        // Two before one: the first record waits for one, the rest with it.
        assert_eq!(spool.complete(two).len(), 0);
        assert!(told(&spool).is_empty());
        assert_eq!(spool.complete(one).len(), 1, "the notice kept in memory");
        assert_eq!(told(&spool), ["one, ahead", "two, ahead", "one, again"]);
        assert_eq!(spool.waiting_ahead(), 0);
        assert_eq!(spool.bytes(), 0, "segments and records deleted");
        // An uploaded entry's record is made at once; an unstored one's never.
        assert_eq!(spool.wait_ahead(one, &d1, b"late", &later), AheadWait::Now);
        let three = write(&spool, b"three").expect("admitted");
        assert_eq!(
            spool.wait_ahead(three, &blake3::hash(b"three"), b"three, ahead", &later),
            AheadWait::Waiting
        );
        spool.flush_ahead();
        spool.take_batch(1);
        spool.discard(three);
        assert!(told(&spool).is_empty(), "dropped with its entry");
        assert_eq!(spool.waiting_ahead(), 0);
        assert_eq!(
            spool.wait_ahead(three, &blake3::hash(b"three"), b"gone", &later),
            AheadWait::Gone
        );
        assert!(
            heard.0.lock().unwrap().is_empty(),
            "the spool tells no one itself"
        );
    }

    #[test]
    fn announcement_files_of_an_earlier_run_are_removed_and_others_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("0000000000000003.rec"), b"old").expect("write");
        fs::write(dir.path().join("notes.rec"), b"not ours").expect("write");
        let (spool, _) = Spool::open(dir.path(), 1 << 20).expect("open");
        assert_eq!(names(dir.path()), [LOCK_FILE, "notes.rec"]);
        assert_eq!(spool.lock().ahead.waiting(), 0);
    }

    #[test]
    fn over_the_limit_new_objects_are_refused_and_nothing_is_evicted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let per_object = u64::from(header_len("text/plain")) + 100;
        // Room for three objects besides the announcements' share.
        let max_bytes = (per_object * 3 * ANNOUNCEMENT_SHARE).div_ceil(ANNOUNCEMENT_SHARE - 1) + 1;
        let (spool, _) = Spool::open(dir.path(), max_bytes).expect("open");
        assert!((per_object * 3..per_object * 4).contains(&spool.object_bytes()));
        let objects: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100]).collect();
        let admitted: Vec<bool> = objects.iter().map(|o| write(&spool, o).is_some()).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.bytes(), per_object * 3);
        let left = spool.take_batch(10);
        let digests: Vec<Digest> = left.iter().map(|e| e.digest).collect();
        let want: Vec<Digest> = objects[..3].iter().map(|o| blake3::hash(o)).collect();
        assert_eq!(digests, want, "the oldest stay");
        assert_eq!(
            spool.admit(blake3::hash(b"new"), "text/plain", 100),
            Admit::NoRoom
        );
        // Room comes back as objects are uploaded (their segments deleted).
        spool.complete(left[1].seq);
        assert!(matches!(
            spool.admit(blake3::hash(b"new"), "text/plain", 100),
            Admit::Write { .. }
        ));
        assert_eq!(
            spool.admit(blake3::hash(b"big"), "text/plain", per_object * 3),
            Admit::NoRoom
        );
    }

    #[test]
    fn damaged_objects_are_detected_counted_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = b"whole object".as_slice();
        let flipped = b"object with a flipped bit".as_slice();
        let cut = b"object cut short by a full disk".as_slice();
        {
            let (spool, _) = Spool::open(dir.path(), 1 << 20).expect("open");
            segment(&spool, &[first, flipped, b"after it", cut]);
        }
        let path = dir.path().join("0000000000000000.seg");
        let mut data = fs::read(&path).expect("read");
        let at = record(first).len() + record(flipped).len() - 3;
        data[at] ^= 1;
        data.truncate(data.len() - 5);
        fs::write(&path, &data).expect("damage");
        let (spool, recovered) = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            recovered,
            Recovery {
                objects: 2,
                corrupt: 2
            }
        );
        let batch = spool.take_batch(10);
        let digests: Vec<Digest> = batch.iter().map(|e| e.digest).collect();
        assert_eq!(digests, [blake3::hash(first), blake3::hash(b"after it")]);
        let at = batch[1].offset as usize;
        assert_eq!(&data[at..at + 8], b"after it");
        // Sequence numbers go on past what was found.
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
        let digest = blake3::hash(b"x");
        let mut h = Vec::new();
        write_header(&mut h, digest.as_bytes(), 1234, "text/plain");
        let parsed = parse_header(&h).expect("parses");
        assert_eq!(parsed.content_type, "text/plain");
        assert_eq!(parsed.digest, *digest.as_bytes());
        assert_eq!(parsed.len, 1234);
        assert_eq!(usize::from(parsed.offset), h.len());
        for cut in 0..h.len() {
            assert_eq!(
                parse_header(&h[..cut]),
                Err(HeaderError::Short),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_header(b"TWSPOOL1\0"), Err(HeaderError::Magic));
    }

    #[test]
    fn the_notices_in_memory_are_sized_from_their_share_of_memory() {
        // The default budget's share on two CPUs: 7 MiB.
        assert_eq!(notices_within(7 << 20), 26_214);
        assert_eq!(notices_within(0), MIN_NOTICES);
        assert_eq!(notices_within(u64::MAX), MAX_NOTICES);
    }

    #[test]
    fn the_object_count_is_capped_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), u64::MAX).expect("open");
        assert_eq!(spool.max_objects(), MAX_OBJECTS);
        // The cap a store sets from its index's memory: 2 MiB.
        let cap = objects_within(2 << 20);
        assert_eq!(cap, 13_107);
        let spool = spool.hold_at_most(cap);
        // Index only: no file is needed to exercise the limit.
        let (n, _) = spool.new_segment();
        for i in 0..cap as u64 + 10 {
            match spool.admit(blake3::hash(&i.to_le_bytes()), "text/plain", 1) {
                Admit::Write { seq } => spool.written(seq, n, 0),
                Admit::NoRoom if i >= cap as u64 => {}
                other => panic!("object {i}: {other:?}"),
            }
        }
        assert_eq!(spool.len(), cap);
        let oldest = spool.take_batch(1).pop().expect("an entry");
        assert_eq!(
            oldest.digest,
            blake3::hash(&0u64.to_le_bytes()),
            "the first stays"
        );
        // Every newer entry uploaded, the oldest still in flight (an upload
        // that keeps failing): new objects are admitted again, and the index
        // holds its entries, not the places of those that left.
        let rest = spool.take_batch(MAX_OBJECTS);
        for entry in &rest {
            drop(spool.complete(entry.seq));
        }
        assert_eq!(spool.len(), 1);
        let (n, _) = spool.new_segment();
        for i in 0..1000u64 {
            let Admit::Write { seq } = spool.admit(
                blake3::hash(&((i + 1) << 32).to_le_bytes()),
                "text/plain",
                1,
            ) else {
                panic!("refused after the others left");
            };
            spool.written(seq, n, 0);
        }
        let idx = spool.lock();
        assert!(
            idx.slots.places() <= 2 * 1001 + SLOTS_SLACK,
            "{}",
            idx.slots.places()
        );
        assert!(
            idx.slots.ring.allocated() <= 8 * SLOTS_SLACK,
            "the room of the backlog is given back: {}",
            idx.slots.ring.allocated()
        );
        assert_eq!(
            idx.slots.get(oldest.seq).map(|s| s.digest),
            Some(oldest.digest)
        );
    }

    /// A queued entry whose offset is its number `n`.
    fn queued_slot(n: u64) -> Slot {
        Slot {
            digest: blake3::hash(&n.to_le_bytes()),
            content_type: Arc::from("text/plain"),
            segment: 0,
            offset: n,
            len: 1,
            record: 1,
            state: State::Queued,
        }
    }

    #[test]
    fn the_ring_stays_within_the_object_limit_by_compacting() {
        let most = 10_000 + SLOTS_SLACK;
        let mut slots = Slots {
            most,
            ..Slots::default()
        };
        for seq in 0..10_000 {
            slots.push(seq, queued_slot(seq));
        }
        assert!(slots.ring.allocated() <= most + CHUNK_PLACES);
        // Entries leave out of order (their uploads finish so), new ones
        // come while the spool is at its limit: the ring compacts its empty
        // places rather than grow.
        let mut next = 10_000;
        for round in 0..20u64 {
            for seq in (round * 500..round * 500 + 500).filter(|s| s % 2 == 1) {
                assert!(slots.remove(seq).is_some());
            }
            while slots.len() < 10_000 {
                slots.push(next, queued_slot(next));
                next += 1;
            }
            assert!(slots.places() <= most, "round {round}");
            assert!(
                slots.ring.allocated() <= most + 2 * CHUNK_PLACES,
                "round {round}: {}",
                slots.ring.allocated()
            );
        }
        for seq in (0..next).filter(|s| slots.contains(*s)).step_by(97) {
            assert_eq!(slots.get(seq).map(|s| s.offset), Some(seq));
        }
        // Past the limit (entries recovered at start), it grows again.
        let live = slots.len();
        for seq in next..next + 2 * most as u64 {
            slots.push(seq, queued_slot(seq));
        }
        assert_eq!(slots.len(), live + 2 * most);
        assert_eq!(slots.get(next + 5).map(|s| s.offset), Some(next + 5));
    }

    #[test]
    fn growing_never_moves_an_entry() {
        let mut slots = Slots::default();
        slots.push(0, queued_slot(0));
        let first: *const Slot = slots.get(0).expect("entry 0");
        for seq in 1..100_000 {
            slots.push(seq, queued_slot(seq));
        }
        // A `VecDeque` copied its places to each new buffer as it doubled,
        // and held both at once.
        assert!(std::ptr::eq(first, slots.get(0).expect("entry 0")));
        for seq in 0..99_000 {
            slots.remove(seq);
        }
        assert!(
            slots.ring.allocated() <= 1000 + 2 * CHUNK_PLACES,
            "chunks of entries gone are freed: {}",
            slots.ring.allocated()
        );
        assert!((99_000..100_000).all(|seq| slots.get(seq).map(|s| s.offset) == Some(seq)));
    }

    #[test]
    fn entries_leave_in_any_order_and_are_found_by_number() {
        let slot = queued_slot;
        let mut slots = Slots::default();
        for seq in 10..15 {
            slots.push(seq, slot(seq));
        }
        assert_eq!((slots.len(), slots.places()), (5, 5));
        assert_eq!(slots.remove(12).map(|s| s.offset), Some(12));
        assert_eq!(slots.remove(12).map(|s| s.offset), None);
        assert_eq!((slots.len(), slots.places()), (4, 5), "an empty place");
        assert_eq!(slots.remove(10).map(|s| s.offset), Some(10));
        assert_eq!(slots.places(), 4);
        assert_eq!(slots.remove(11).map(|s| s.offset), Some(11));
        assert_eq!(
            (slots.len(), slots.places()),
            (2, 2),
            "the ring starts at 13"
        );
        assert!(!slots.contains(9) && !slots.contains(12) && !slots.contains(15));
        assert_eq!(slots.get(14).map(|s| s.offset), Some(14));
        slots.get_mut(13).expect("13").offset = 99;
        assert_eq!(slots.get(13).map(|s| s.offset), Some(99));
        // Entry 13 stays while many newer ones come and go: the empty places
        // are compacted away and every entry left is still found.
        for seq in 100..10_000 {
            slots.push(seq, slot(seq));
            if seq % 10 != 0 {
                slots.remove(seq);
            }
        }
        assert_eq!(slots.len(), 2 + 990);
        assert!(
            slots.places() <= 2 * slots.len() + SLOTS_SLACK,
            "{}",
            slots.places()
        );
        assert_eq!(slots.get(13).map(|s| s.offset), Some(99));
        assert!((100..10_000).all(|seq| slots.contains(seq) == (seq % 10 == 0)));
    }

    #[test]
    fn an_entry_is_found_where_it_is_across_chunks_or_after_a_compaction() {
        let slot = queued_slot;
        let (mut spread, mut compacted) = (false, false);
        let mut check = |slots: &Slots, upto: u64| {
            for seq in 0..upto + 2 {
                let linear = slots.ring.iter().position(|(s, _)| *s == seq);
                assert_eq!(slots.place(seq), linear, "entry {seq}");
            }
            spread |= slots.ring.head > 0 && slots.ring.chunks.len() > 1;
            let front = slots.ring.front().map_or(0, |f| f.0);
            let span = slots.ring.back().map_or(0, |b| b.0 + 1) - front;
            compacted |= (slots.ring.len() as u64) < span;
        };
        let mut slots = Slots::default();
        // The places spread over chunks, the first one's front gone as the
        // oldest entries leave.
        for seq in 0..64 {
            slots.push(seq, slot(seq));
        }
        for seq in 0..32 {
            slots.remove(seq);
        }
        let mut next = 64;
        while slots.ring.chunks.len() < 3 {
            slots.push(next, slot(next));
            next += 1;
        }
        check(&slots, next);
        // Entry 32 stays while many newer ones come and go, a few of them
        // out of turn: the empty places are compacted away.
        for seq in next..next + 20_000 {
            slots.push(seq, slot(seq));
            if seq % 10 != 0 {
                slots.remove(seq);
            }
            if seq % 100 == 50 {
                slots.remove(seq - 50);
            }
        }
        next += 20_000;
        check(&slots, next);
        assert_eq!(slots.get(32).map(|s| s.offset), Some(32));
        assert!(
            spread && compacted,
            "spread {spread}, compacted {compacted}"
        );
    }

    #[test]
    fn digests_that_share_their_first_bytes_are_kept_apart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), u64::MAX).expect("open");
        let (n, _) = spool.new_segment();
        let mut bytes = [7u8; 32];
        let first = Digest::from_bytes(bytes);
        bytes[31] = 8;
        let second = Digest::from_bytes(bytes);
        assert_eq!(digest_key(&first), digest_key(&second));
        let Admit::Write { seq: a } = spool.admit(first, "text/plain", 1) else {
            panic!("first refused");
        };
        spool.written(a, n, 0);
        // Not taken for a duplicate of the first.
        let Admit::Write { seq: b } = spool.admit(second, "text/plain", 1) else {
            panic!("second refused");
        };
        spool.written(b, n, 0);
        assert!(spool.holds(&first) && spool.holds(&second));
        assert_eq!(spool.admit(first, "text/plain", 1), Admit::Duplicate);
        assert_eq!(spool.admit(second, "text/plain", 1), Admit::Duplicate);
        let batch: Vec<Digest> = spool.take_batch(2).iter().map(|e| e.digest).collect();
        assert_eq!(batch, [first, second]);
        // The first uploaded, the second is still found by its digest.
        drop(spool.complete(a));
        assert!(matches!(
            spool.notify_digest(&second, Notice::new(Arc::new(Parts::default()), 0)),
            Awaited::Waiting
        ));
        assert_eq!(spool.complete(b).len(), 1);
        assert!(spool.is_empty());
        assert!(spool.lock().collided.is_empty());
    }
}
