//! Bytes sent with `sendfile`, read back from the file.
//!
//! The probes report a [`FileSend`] — file, range, the file's size and
//! modification time at the call — instead of the bytes, which never pass
//! through user memory. [`FileSends::expand`] reads that range from the same
//! file and hands it on as ordinary data records (one per sequence number the
//! probes took), so the connection's stream is whole as if the bytes had been
//! written.
//!
//! The file is opened through the process: its descriptor (`/proc/PID/fd/N`)
//! if still open, else the path the process opened it by (recorded by the
//! probes at `openat`), in the process's root; it is kept open for later
//! sends of the same file. Its identity is checked (device and
//! inode), and its size and modification time compared with the call's: when
//! the file changed in between, its bytes are not used — the records are left
//! out, so the transaction is flagged as having a gap rather than carrying
//! bytes the program did not send — and the send is counted as changed.
//!
//! Cost: this runs on the ring reader of the CPU that made the call, one
//! `pread` per [`MAX_PAYLOAD`] bytes sent.

use std::{
    fs::File,
    os::unix::fs::{FileExt as _, MetadataExt as _},
    sync::atomic::{AtomicU64, Ordering},
};

use super::images::user_dev;
use tapwire_common::{Data, Direction, FileKey, FileSend, Header, Kind, MAX_PAYLOAD, Source};

/// Files kept open per reader for later sends of the same file.
const OPEN_FILES: usize = 64;

/// Counters of `sendfile` records, shared by every reader.
#[derive(Debug, Default, serde::Serialize)]
pub struct FileSendCounters {
    /// `sendfile` calls on captured connections.
    pub sends: AtomicU64,
    /// Bytes read back from files and handed on.
    pub bytes: AtomicU64,
    /// Sends whose file could not be opened any more (left as a gap).
    pub unreadable: AtomicU64,
    /// Sends whose file changed size or modification time before it was read
    /// (left as a gap).
    pub changed: AtomicU64,
}

/// One reader's state: files kept open and a read buffer.
pub struct FileSends {
    open: Vec<(FileKey, File)>,
    buf: Box<[u8; MAX_PAYLOAD]>,
}

impl Default for FileSends {
    fn default() -> Self {
        Self {
            open: Vec::with_capacity(OPEN_FILES),
            buf: Box::new([0; MAX_PAYLOAD]),
        }
    }
}

impl FileSends {
    /// Where in `open` the file `rec` read from is, if it can still be opened
    /// and is the same file; `Err(())` when it changed since the call.
    fn file(&mut self, rec: &FileSend) -> Option<Result<usize, ()>> {
        let key = FileKey {
            dev: rec.dev,
            ino: rec.ino,
        };
        let at = match self.open.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let pid = rec.header.pid;
                let same = |f: &File| {
                    f.metadata()
                        .is_ok_and(|m| m.ino() == rec.ino && m.dev() == user_dev(rec.dev))
                };
                // The descriptor if still open on the same file (not closed and
                // reused), else the path it was opened by, in the process's
                // root or working directory.
                let by_fd = File::open(format!("/proc/{pid}/fd/{}", rec.in_fd))
                    .ok()
                    .filter(same);
                let file = by_fd.or_else(|| {
                    let path = std::str::from_utf8(tapwire_common::decode::cstr(&rec.path)).ok()?;
                    let full = match path.strip_prefix('/') {
                        Some(rest) => format!("/proc/{pid}/root/{rest}"),
                        None if !path.is_empty() => format!("/proc/{pid}/cwd/{path}"),
                        None => return None,
                    };
                    File::open(full).ok().filter(same)
                })?;
                if self.open.len() == OPEN_FILES {
                    self.open.remove(0);
                }
                self.open.push((key, file));
                self.open.len() - 1
            }
        };
        let file = &self.open[at].1;
        let unchanged = file.metadata().is_ok_and(|m| {
            m.size() == rec.file_size && (rec.mtime_sec == 0 || m.mtime() as u64 == rec.mtime_sec)
        });
        Some(if unchanged { Ok(at) } else { Err(()) })
    }

    /// Hands `route` the data records (header bytes, payload) standing for
    /// `rec`, reading the bytes from the file. Records that cannot be read
    /// are left out: the connection shows a gap.
    pub fn expand(
        &mut self,
        rec: &FileSend,
        counters: &FileSendCounters,
        mut route: impl FnMut(&[&[u8]]),
    ) {
        counters.sends.fetch_add(1, Ordering::Relaxed);
        let at = match self.file(rec) {
            Some(Ok(at)) => at,
            Some(Err(())) => {
                counters.changed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => {
                counters.unreadable.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let file = &self.open[at].1;
        let mut sent = 0u64;
        for i in 0..u64::from(rec.chunks) {
            let off = i * MAX_PAYLOAD as u64;
            let want = (rec.len - off).min(MAX_PAYLOAD as u64) as usize;
            let buf = &mut self.buf[..want];
            if file.read_exact_at(buf, rec.offset + off).is_err() {
                counters.unreadable.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let data = Data {
                header: Header {
                    kind: Kind::Data as u32,
                    ..rec.header
                },
                conn_id: rec.conn_id,
                seq: rec.seq + i,
                call_len: rec.len,
                offset: off,
                cap_len: want as u32,
                direction: Direction::Egress as u32,
                source: Source::Plain as u32,
                fd: rec.fd,
                shed_len: 0,
            };
            route(&[&data.encode(), buf]);
            sent += want as u64;
        }
        counters.bytes.fetch_add(sent, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_for(file: &std::path::Path, fd: i32, offset: u64, len: u64) -> FileSend {
        let m = std::fs::metadata(file).unwrap();
        FileSend {
            header: Header {
                kind: Kind::FileSend as u32,
                pid: std::process::id(),
                ..Header::default()
            },
            conn_id: 9,
            seq: 4,
            offset,
            len,
            file_size: m.size(),
            mtime_sec: m.mtime() as u64,
            dev: u64::from(libc::major(m.dev())) << 20 | u64::from(libc::minor(m.dev())),
            ino: m.ino(),
            chunks: len.div_ceil(MAX_PAYLOAD as u64) as u32,
            fd: 3,
            in_fd: fd,
            _pad0: 0,
            path: [0; tapwire_common::FILENAME_LEN],
        }
    }

    #[test]
    fn a_range_becomes_data_records_in_sequence() {
        use std::os::fd::AsRawFd as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let f = File::open(&path).unwrap();
        let rec = record_for(&path, f.as_raw_fd(), 1000, 40_000);
        let counters = FileSendCounters::default();
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        FileSends::default().expand(&rec, &counters, |parts| {
            let frame = parts.concat();
            match tapwire_common::decode(&frame).unwrap() {
                tapwire_common::Record::Data { data, payload, .. } => {
                    out.push((data.seq, payload.to_vec()))
                }
                other => panic!("{other:?}"),
            }
        });
        let seqs: Vec<u64> = out.iter().map(|o| o.0).collect();
        assert_eq!(seqs, [4, 5, 6]);
        let bytes: Vec<u8> = out.into_iter().flat_map(|o| o.1).collect();
        assert_eq!(bytes, content[1000..41_000]);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 40_000);

        // The file changes before the next send is read: nothing is handed on.
        let rec = record_for(&path, f.as_raw_fd(), 0, 10);
        std::fs::write(&path, b"changed").unwrap();
        let mut handed = 0;
        FileSends::default().expand(&rec, &counters, |_| handed += 1);
        assert_eq!((handed, counters.changed.load(Ordering::Relaxed)), (0, 1));

        // A descriptor that is not open: unreadable, unless the record names
        // the path the file was opened by.
        let rec = record_for(&path, 9999, 0, 7);
        FileSends::default().expand(&rec, &counters, |_| handed += 1);
        assert_eq!(
            (handed, counters.unreadable.load(Ordering::Relaxed)),
            (0, 1)
        );
        let mut rec = record_for(&path, 9999, 0, 7);
        let name = path.to_str().unwrap().as_bytes();
        rec.path[..name.len()].copy_from_slice(name);
        FileSends::default().expand(&rec, &counters, |_| handed += 1);
        assert_eq!(
            (handed, counters.unreadable.load(Ordering::Relaxed)),
            (1, 1)
        );
    }
}
