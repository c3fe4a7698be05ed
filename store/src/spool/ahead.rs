//! Announcements waiting on disk for their objects' uploads.
//!
//! An object waiting in the spool holds the announcements (`artifact_record`
//! events) of the requests that named it until it is uploaded. Up to
//! [`super::dir::MAX_NOTICES`] wait in memory; past that, each is written
//! ahead of time ([`crate::Announce::write_ahead`]), appended to a file in the
//! spool directory, and made once its object is uploaded. So a backlog of
//! uploads (a bucket slower than the node's traffic, an outage) costs disk,
//! like the objects it holds back, not memory, and loses no announcement
//! within the spool's limit, which counts these files too.
//!
//! Records are read back in the order they were written: the first waits for
//! its object and those behind it wait with it (objects are uploaded oldest
//! first, so that holds them up little). Files are `{n:016x}.rec`, of about
//! [`FILE_BYTES`] each, deleted once read. They belong to one run, as the
//! requests they announce do, and [`super::Spool::open`] removes them.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::WrittenAhead;

/// The suffix of the files.
pub const SUFFIX: &str = ".rec";
/// A file takes no more records once this size (unit tests use small files to
/// cross from one to the next).
const FILE_BYTES: u64 = if cfg!(test) { 4096 } else { 8 << 20 };
/// Bytes read from a file at once.
const READ_CHUNK: usize = 64 << 10;
/// Bytes of records [`Ahead::take_ready`] gives at once, about: a backlog
/// that clears at once is announced a batch at a time, never read into
/// memory whole.
const READY_BYTES: usize = 1 << 20;
/// Before each record: its length (u32), its entry's sequence number (u64),
/// and who announces it (u16, an index into [`Ahead::announcers`]).
const HEADER: usize = 4 + 8 + 2;
/// Distinct announcers whose records wait at once, at most (an agent has one).
const MAX_ANNOUNCERS: usize = 64;

/// The records waiting, on disk and about to be.
#[derive(Default)]
pub struct Ahead {
    dir: PathBuf,
    /// Files, oldest first; records are appended to the last and read from
    /// the first.
    files: VecDeque<RecordFile>,
    next_file: u64,
    /// Records appended since the last [`Ahead::flush`], with their headers.
    tail: Vec<u8>,
    /// Records in `tail`.
    tail_records: u64,
    /// Bytes of the first file read into `read`.
    read: Vec<u8>,
    /// Where the first file's next unread record starts, in `read`.
    read_pos: usize,
    /// The file offset of `read[0]`.
    read_at: u64,
    /// Records of the first file taken.
    front_taken: u64,
    /// Records waiting, in files and in `tail`.
    waiting: u64,
    /// Bytes of the files and of `tail`.
    bytes: u64,
    /// Who announces each record, by the index in its header; cleared when no
    /// record waits.
    announcers: Vec<Arc<dyn WrittenAhead>>,
    /// Entries removed without being uploaded while records waited: their
    /// records are dropped unannounced. Cleared when no record waits.
    unstored: HashSet<u64>,
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ahead")
            .field("files", &self.files.len())
            .field("waiting", &self.waiting)
            .field("bytes", &self.bytes)
            .finish()
    }
}

struct RecordFile {
    path: PathBuf,
    file: File,
    /// Bytes of whole records written: reading stops there.
    good: u64,
    /// Bytes on disk, a failed write's included.
    size: u64,
    /// Records written.
    records: u64,
    /// A write failed: nothing more is appended.
    sealed: bool,
}

/// Records whose objects are stored, read back to be announced.
#[derive(Default)]
pub struct Ready {
    /// The records, one after another.
    pub records: Vec<u8>,
    /// Each record's announcer and place in `records`.
    pub spans: Vec<(Arc<dyn WrittenAhead>, Range<usize>)>,
    /// Records lost to a failed read or write (count them as dropped).
    pub lost: u64,
    /// More may be ready: the batch stopped at its size.
    pub more: bool,
}

#[cfg(test)]
impl Ready {
    /// The records as text.
    pub fn texts(&self) -> Vec<String> {
        self.spans
            .iter()
            .map(|(_, span)| String::from_utf8_lossy(&self.records[span.clone()]).into_owned())
            .collect()
    }
}

/// A record not appended: too many announcers wait already, or the record
/// is longer than its header can say.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

impl Ahead {
    /// Records for the spool at `dir` (whose opening removed the files a
    /// previous run left).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            ..Self::default()
        }
    }

    /// Records waiting.
    pub fn waiting(&self) -> u64 {
        self.waiting
    }

    /// Bytes they take, on disk and about to be.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What appending `record` adds to [`Ahead::bytes`].
    pub fn cost(record: &[u8]) -> u64 {
        (HEADER + record.len()) as u64
    }

    /// Appends `record`, to be announced by `by` once entry `seq` is uploaded.
    /// It reaches disk at the next [`Ahead::flush`].
    pub fn append(
        &mut self,
        seq: u64,
        record: &[u8],
        by: &Arc<dyn WrittenAhead>,
    ) -> Result<(), Refused> {
        let who = match self
            .announcers
            .iter()
            .position(|a| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(by)))
        {
            Some(i) => i,
            None if self.announcers.len() < MAX_ANNOUNCERS => {
                self.announcers.push(Arc::clone(by));
                self.announcers.len() - 1
            }
            None => return Err(Refused),
        };
        let len = u32::try_from(record.len()).map_err(|_| Refused)?;
        self.tail.extend_from_slice(&len.to_le_bytes());
        self.tail.extend_from_slice(&seq.to_le_bytes());
        self.tail.extend_from_slice(&(who as u16).to_le_bytes());
        self.tail.extend_from_slice(record);
        self.tail_records += 1;
        self.waiting += 1;
        self.bytes += Self::cost(record);
        Ok(())
    }

    /// Entry `seq` is gone without being uploaded: its records are dropped
    /// when read.
    pub fn unstored(&mut self, seq: u64) {
        if self.waiting > 0 {
            self.unstored.insert(seq);
        }
    }

    /// Writes the records appended since the last flush to the newest file
    /// (a new one past [`FILE_BYTES`] or after a failed write). Returns how
    /// many were lost to a failed write.
    pub fn flush(&mut self) -> u64 {
        if self.tail.is_empty() {
            return 0;
        }
        let records = std::mem::take(&mut self.tail_records);
        let lost = match self.write_tail(records) {
            Ok(()) => 0,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, records, "cannot write announcements waiting for uploads; dropping them");
                self.waiting -= records;
                records
            }
        };
        self.tail.clear();
        self.forget_if_idle();
        lost
    }

    fn write_tail(&mut self, records: u64) -> io::Result<()> {
        let tail = self.tail.len() as u64;
        if self
            .files
            .back()
            .is_none_or(|f| f.sealed || f.size >= FILE_BYTES)
        {
            let path = self.dir.join(format!("{:016x}{SUFFIX}", self.next_file));
            self.next_file += 1;
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(super::dir::FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path);
            let file = match opened {
                Ok(file) => file,
                Err(error) => {
                    self.bytes -= tail;
                    return Err(error);
                }
            };
            self.files.push_back(RecordFile {
                path,
                file,
                good: 0,
                size: 0,
                records: 0,
                sealed: false,
            });
        }
        let last = self.files.back_mut().expect("a file to append to");
        let result = last.file.write_all_at(&self.tail, last.size);
        // A failed write may have left part of the tail on disk: it counts
        // until the file is deleted, and the file takes no more.
        last.size += tail;
        match result {
            Ok(()) => {
                last.good = last.size;
                last.records += records;
            }
            Err(_) => last.sealed = true,
        }
        result
    }

    /// Takes, in the order they were written, the records whose entries are
    /// no longer `pending`; stops at the first whose entry still is, or past
    /// [`READY_BYTES`] ([`Ready::more`]). Records of entries removed
    /// unstored are dropped.
    pub fn take_ready(&mut self, pending: impl Fn(u64) -> bool) -> Ready {
        let mut ready = Ready::default();
        while let Some((seq, who, body)) = self.next_record(&mut ready.lost) {
            if ready.records.len() >= READY_BYTES {
                ready.more = true;
                break;
            }
            if pending(seq) {
                break;
            }
            if !self.unstored.contains(&seq) {
                if let Some(by) = self.announcers.get(who) {
                    let start = ready.records.len();
                    ready.records.extend_from_slice(&self.read[body.clone()]);
                    ready
                        .spans
                        .push((Arc::clone(by), start..ready.records.len()));
                } else {
                    // Damaged on disk: no one to announce it.
                    ready.lost += 1;
                }
            }
            self.read_pos = body.end;
            self.front_taken += 1;
            self.waiting -= 1;
        }
        self.forget_if_idle();
        ready
    }

    /// The next unread record of the first file, read from disk as needed:
    /// its entry, announcer and place in `self.read`. A file read to its end
    /// is deleted. `None` once every record written to a file is read; a file
    /// that cannot be read is deleted and its unread records counted in
    /// `lost`.
    fn next_record(&mut self, lost: &mut u64) -> Option<(u64, usize, Range<usize>)> {
        loop {
            let file = self.files.front()?;
            let unread = &self.read[self.read_pos..];
            if unread.len() >= HEADER {
                let len = u32::from_le_bytes(unread[..4].try_into().expect("4 bytes")) as usize;
                if unread.len() >= HEADER + len {
                    let seq = u64::from_le_bytes(unread[4..12].try_into().expect("8 bytes"));
                    let who = u16::from_le_bytes(unread[12..14].try_into().expect("2 bytes"));
                    let start = self.read_pos + HEADER;
                    return Some((seq, usize::from(who), start..start + len));
                }
            }
            let file_pos = self.read_at + self.read_pos as u64;
            if file_pos >= file.good {
                // Read to its end. The newest file, every record taken, is
                // deleted too (the next flush starts another) and nothing is
                // left to read; one that still held records, it is dropped
                // with them (a failed read).
                let last = self.files.len() == 1;
                *lost += self.drop_first_file();
                if last {
                    return None;
                }
                continue;
            }
            // Keep the unread part, then read more after it.
            self.read.drain(..self.read_pos);
            self.read_at = file_pos;
            self.read_pos = 0;
            let have = self.read.len();
            let want = (file.good - file_pos - have as u64).min(READ_CHUNK as u64) as usize;
            self.read.resize(have + want, 0);
            let at = file_pos + have as u64;
            if let Err(error) = file.file.read_exact_at(&mut self.read[have..], at) {
                tracing::warn!(path = %file.path.display(), %error, "cannot read announcements waiting for uploads; dropping them");
                *lost += self.drop_first_file();
            }
        }
    }

    /// Deletes the first file; returns how many of its records were not
    /// taken (now dropped).
    fn drop_first_file(&mut self) -> u64 {
        let Some(file) = self.files.pop_front() else {
            return 0;
        };
        let unread = file.records.saturating_sub(self.front_taken);
        super::dir::remove_file(&file.path);
        self.bytes -= file.size;
        self.waiting -= unread;
        self.read.clear();
        self.read_pos = 0;
        self.read_at = 0;
        self.front_taken = 0;
        unread
    }

    /// With no record waiting, lets go of the announcers and the unstored
    /// entries.
    fn forget_if_idle(&mut self) {
        if self.waiting == 0 {
            self.announcers.clear();
            self.unstored.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Keeps what it announces.
    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl WrittenAhead for Heard {
        fn announce(&self, store: &str, record: &[u8]) {
            let record = String::from_utf8_lossy(record);
            self.0.lock().unwrap().push(format!("{store}:{record}"));
        }
    }

    fn record(i: u64) -> Vec<u8> {
        // About 100 bytes each: a 4 KiB file holds some 40.
        format!("record {i} {}", ".".repeat(90)).into_bytes()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn texts(ready: &Ready) -> Vec<String> {
        ready.texts()
    }

    #[test]
    fn records_come_back_in_order_once_their_entries_are_done_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut ahead = Ahead::new(dir.path());
        let by: Arc<dyn WrittenAhead> = Arc::new(Heard::default());
        // Entry i / 10 for record i: ten records per entry, 500 records,
        // flushed 50 at a time.
        for i in 0..500 {
            ahead.append(i / 10, &record(i), &by).unwrap();
            if i % 50 == 49 {
                assert_eq!(ahead.flush(), 0);
            }
        }
        assert!(files(dir.path()).len() > 5, "{:?}", files(dir.path()));
        let all_bytes = ahead.bytes();
        assert_eq!(
            all_bytes,
            (0..500).map(|i| Ahead::cost(&record(i))).sum::<u64>()
        );
        // Entries 0..=19 are done: records 0..200.
        let ready = ahead.take_ready(|seq| seq >= 20);
        assert_eq!(ready.lost, 0);
        assert_eq!(
            texts(&ready),
            (0..200)
                .map(|i| String::from_utf8(record(i)).unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(ahead.waiting(), 300);
        assert!(ahead.bytes() < all_bytes, "files read are deleted");
        // Nothing more until entry 20 is done, even when later ones are.
        assert!(ahead.take_ready(|seq| seq == 20).spans.is_empty());
        // Entry 21 went unstored: its records are dropped, not announced.
        ahead.unstored(21);
        let ready = ahead.take_ready(|_| false);
        let want: Vec<String> = (200..500)
            .filter(|i| i / 10 != 21)
            .map(|i| String::from_utf8(record(i)).unwrap())
            .collect();
        assert_eq!(texts(&ready), want);
        assert_eq!((ahead.waiting(), ahead.bytes()), (0, 0));
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
        // And it starts again.
        ahead.append(600, b"again", &by).unwrap();
        assert!(
            ahead.take_ready(|_| false).spans.is_empty(),
            "not on disk before the flush"
        );
        ahead.flush();
        assert_eq!(texts(&ahead.take_ready(|_| false)), ["again"]);
    }

    #[test]
    fn a_backlog_that_clears_at_once_comes_back_a_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut ahead = Ahead::new(dir.path());
        let by: Arc<dyn WrittenAhead> = Arc::new(Heard::default());
        let record = vec![b'r'; 1000];
        let count = 3 * READY_BYTES / 1000;
        for i in 0..count {
            ahead.append(i as u64, &record, &by).unwrap();
        }
        ahead.flush();
        let mut batches = Vec::new();
        loop {
            let ready = ahead.take_ready(|_| false);
            assert!(ready.records.len() < READY_BYTES + 1000);
            batches.push(ready.spans.len());
            if !ready.more {
                break;
            }
        }
        // A batch stops once past READY_BYTES: 1,049 records of 1,000 bytes.
        assert_eq!(batches, [1049, 1049, count - 2 * 1049]);
        assert_eq!(ahead.waiting(), 0);
    }

    #[test]
    fn each_record_goes_back_to_its_own_announcer() {
        let dir = tempfile::tempdir().unwrap();
        let mut ahead = Ahead::new(dir.path());
        let (a, b) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
        let (a_dyn, b_dyn): (Arc<dyn WrittenAhead>, Arc<dyn WrittenAhead>) = (a.clone(), b.clone());
        ahead.append(1, b"one", &a_dyn).unwrap();
        ahead.append(1, b"two", &b_dyn).unwrap();
        ahead.append(2, b"three", &a_dyn).unwrap();
        ahead.flush();
        let ready = ahead.take_ready(|_| false);
        for (by, span) in &ready.spans {
            by.announce("s3", &ready.records[span.clone()]);
        }
        assert_eq!(*a.0.lock().unwrap(), ["s3:one", "s3:three"]);
        assert_eq!(*b.0.lock().unwrap(), ["s3:two"]);
    }

    #[test]
    fn a_record_damaged_on_disk_is_counted_lost_and_the_next_one_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut ahead = Ahead::new(dir.path());
        let by: Arc<dyn WrittenAhead> = Arc::new(Heard::default());
        ahead.append(1, b"one", &by).unwrap();
        ahead.append(1, b"two", &by).unwrap();
        ahead.flush();
        // The first record's announcer index, overwritten.
        let path = dir.path().join(&files(dir.path())[0]);
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&[0xff, 0xff], 12).unwrap();
        let ready = ahead.take_ready(|_| false);
        assert_eq!((ready.lost, ready.texts()), (1, vec!["two".to_owned()]));
        assert_eq!(ahead.waiting(), 0);
    }

    #[test]
    fn a_file_that_cannot_be_written_loses_its_records_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut ahead = Ahead::new(&dir.path().join("missing"));
        let by: Arc<dyn WrittenAhead> = Arc::new(Heard::default());
        ahead.append(1, b"one", &by).unwrap();
        ahead.append(1, b"two", &by).unwrap();
        assert_eq!(ahead.flush(), 2);
        assert_eq!((ahead.waiting(), ahead.bytes()), (0, 0));
    }
}
