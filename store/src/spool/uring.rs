//! Batched file writes through io_uring.
//!
//! The storage thread hands over a batch of open files, each with the buffers to
//! write at offset 0; one `io_uring_enter` submits a write per file and waits for
//! them all, so a batch of N objects costs a handful of syscalls instead of N
//! `write`s. Short writes are resubmitted for the remainder. Where io_uring is not
//! available (disabled by `kernel.io_uring_disabled`, or a seccomp profile),
//! [`BatchWriter`] falls back to plain `write` calls and says so once.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd as _, IntoRawFd as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

/// Submission queue entries: the most writes in flight at once.
pub const RING_ENTRIES: u32 = 64;
/// Longest single write submitted; longer buffers go in several writes (the SQE's
/// length is a `u32`, and Linux caps one write at about 2 GiB anyway).
const MAX_WRITE_CHUNK: usize = 1 << 30;

/// One file to write: `parts` concatenated, starting at offset 0.
#[derive(Debug)]
pub struct WriteJob<'a> {
    /// The open, writable file.
    pub file: &'a File,
    /// The bytes to write, in order.
    pub parts: [&'a [u8]; 2],
}

impl WriteJob<'_> {
    fn total(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }

    /// The unwritten rest of the buffer that holds byte `done`.
    fn rest(&self, done: usize) -> &[u8] {
        let first = self.parts[0].len();
        if done < first {
            &self.parts[0][done..]
        } else {
            &self.parts[1][done - first..]
        }
    }
}

/// Writes batches of files through io_uring, or plain `write` where it is missing.
pub enum BatchWriter {
    /// io_uring is available.
    Uring(Box<IoUring>),
    /// io_uring could not be set up; plain blocking writes.
    Plain,
}

impl BatchWriter {
    /// Sets up a ring of [`RING_ENTRIES`], or the plain fallback.
    pub fn new() -> Self {
        match IoUring::new(RING_ENTRIES) {
            Ok(ring) => Self::Uring(Box::new(ring)),
            Err(error) => {
                tracing::warn!(%error, "io_uring unavailable; the spool uses plain writes");
                Self::Plain
            }
        }
    }

    /// Whether writes go through io_uring.
    pub fn is_uring(&self) -> bool {
        matches!(self, Self::Uring(_))
    }

    /// Creates each file for writing with `mode`; one result per path, in order.
    /// A path that exists (even as a dangling symlink) is an error: `O_EXCL |
    /// O_NOFOLLOW`, so nothing planted in the directory is followed or reused.
    pub fn create_all(&mut self, paths: &[&Path], mode: u32) -> Vec<io::Result<File>> {
        match self {
            Self::Uring(ring) => {
                let names: Vec<io::Result<CString>> = paths.iter().map(|p| c_path(p)).collect();
                let sqes: Vec<Option<squeue::Entry>> = names
                    .iter()
                    .map(|name| {
                        let name = name.as_ref().ok()?;
                        Some(
                            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), name.as_ptr())
                                .flags(
                                    libc::O_WRONLY
                                        | libc::O_CREAT
                                        | libc::O_EXCL
                                        | libc::O_NOFOLLOW
                                        | libc::O_CLOEXEC,
                                )
                                .mode(mode)
                                .build(),
                        )
                    })
                    .collect();
                // `names` outlives the batch: the kernel reads the paths before
                // `run_batch` returns.
                let results = run_batch(ring, &sqes);
                names
                    .into_iter()
                    .zip(results)
                    .map(|(name, res)| {
                        name?;
                        let fd = res?;
                        // SAFETY: a successful `openat` completion returns a new
                        // descriptor that nothing else owns; the `File` takes it.
                        Ok(unsafe { File::from_raw_fd(fd) })
                    })
                    .collect()
            }
            Self::Plain => paths
                .iter()
                .map(|p| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .mode(mode)
                        .open(p)
                })
                .collect(),
        }
    }

    /// Closes each file, then renames `from` to `to` for each whose close
    /// succeeded; one result per file, in order.
    pub fn close_and_rename_all(&mut self, jobs: Vec<(File, &Path, &Path)>) -> Vec<io::Result<()>> {
        match self {
            Self::Uring(ring) => {
                let closes: Vec<Option<squeue::Entry>> = jobs
                    .iter()
                    .map(|(file, _, _)| {
                        Some(opcode::Close::new(types::Fd(file.as_raw_fd())).build())
                    })
                    .collect();
                let mut names = Vec::with_capacity(jobs.len());
                for (file, from, to) in jobs {
                    // The close below owns the descriptor from here on.
                    let _ = file.into_raw_fd();
                    names.push(c_path(from).and_then(|f| Ok((f, c_path(to)?))));
                }
                // Should the ring itself fail, descriptors it did not close leak:
                // the spool then drops those objects and carries on.
                let closed = run_batch(ring, &closes);
                let renames: Vec<Option<squeue::Entry>> = names
                    .iter()
                    .zip(&closed)
                    .map(|(names, closed)| {
                        let (from, to) = names.as_ref().ok()?;
                        closed.as_ref().ok()?;
                        Some(
                            opcode::RenameAt::new(
                                types::Fd(libc::AT_FDCWD),
                                from.as_ptr(),
                                types::Fd(libc::AT_FDCWD),
                                to.as_ptr(),
                            )
                            .build(),
                        )
                    })
                    .collect();
                let renamed = run_batch(ring, &renames);
                names
                    .into_iter()
                    .zip(closed)
                    .zip(renamed)
                    .map(|((names, closed), renamed)| {
                        names?;
                        closed?;
                        renamed.map(drop)
                    })
                    .collect()
            }
            Self::Plain => jobs
                .into_iter()
                .map(|(file, from, to)| {
                    drop(file);
                    std::fs::rename(from, to)
                })
                .collect(),
        }
    }

    /// Flushes each file's data to the disk (`fsync`); one result per file, in
    /// order.
    pub fn sync_all(&mut self, files: &[&File]) -> Vec<io::Result<()>> {
        match self {
            Self::Uring(ring) => {
                let sqes: Vec<Option<squeue::Entry>> = files
                    .iter()
                    .map(|f| Some(opcode::Fsync::new(types::Fd(f.as_raw_fd())).build()))
                    .collect();
                run_batch(ring, &sqes)
                    .into_iter()
                    .map(|r| r.map(drop))
                    .collect()
            }
            Self::Plain => files.iter().map(|f| f.sync_all()).collect(),
        }
    }

    /// Writes every job whole; one result per job, in order.
    pub fn write_all(&mut self, jobs: &[WriteJob<'_>]) -> Vec<io::Result<()>> {
        match self {
            Self::Uring(ring) => write_uring(ring, jobs),
            Self::Plain => jobs
                .iter()
                .map(|job| {
                    let mut file = job.file;
                    file.write_all(job.parts[0])?;
                    file.write_all(job.parts[1])
                })
                .collect(),
        }
    }
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_uring() {
            "BatchWriter::Uring"
        } else {
            "BatchWriter::Plain"
        })
    }
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// Pause before calling `io_uring_enter` again after `EAGAIN`/`EBUSY`.
const ENTER_RETRY: Duration = Duration::from_millis(1);

/// `io_uring_enter` errors after which waiting again is right: a signal, or the
/// kernel short of resources for a moment. Entries may already have been
/// submitted, so the buffers they point to must stay alive: the caller keeps
/// waiting instead of returning. (The completion queue cannot overflow: it has
/// twice [`RING_ENTRIES`] slots and at most [`RING_ENTRIES`] are in flight.)
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

/// A path as the kernel wants it.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Submits every `Some` entry (at most [`RING_ENTRIES`] at a time) and waits for
/// all of them; one result per entry, in order: the completion's non-negative
/// result, its error, or `InvalidInput` for a `None`.
///
/// Every pointer an entry carries must stay valid until this returns; it does not
/// return before every pushed entry has completed.
fn run_batch(ring: &mut IoUring, sqes: &[Option<squeue::Entry>]) -> Vec<io::Result<i32>> {
    let mut results: Vec<io::Result<i32>> = sqes
        .iter()
        .map(|_| Err(io::Error::from(io::ErrorKind::InvalidInput)))
        .collect();
    let mut next = 0usize;
    while next < sqes.len() {
        let mut in_flight = 0usize;
        while next < sqes.len() && in_flight < RING_ENTRIES as usize {
            if let Some(sqe) = &sqes[next] {
                let sqe = sqe.clone().user_data(next as u64);
                // SAFETY: the caller keeps what `sqe` points to alive until this
                // function returns, and every entry pushed is reaped below before
                // it does.
                if unsafe { ring.submission().push(&sqe) }.is_err() {
                    break;
                }
                in_flight += 1;
            }
            next += 1;
        }
        let mut reaped = 0usize;
        while reaped < in_flight {
            match ring.submit_and_wait(in_flight - reaped) {
                Ok(_) => {}
                Err(e) if retryable(&e) => {
                    std::thread::sleep(ENTER_RETRY);
                    continue;
                }
                Err(e) => {
                    // The ring failed; nothing more will complete. Entries already
                    // pushed may never run: report them failed.
                    for r in results.iter_mut().take(next) {
                        if matches!(r, Err(err) if err.kind() == io::ErrorKind::InvalidInput) {
                            *r = Err(io::Error::new(e.kind(), e.to_string()));
                        }
                    }
                    return results;
                }
            }
            for cqe in ring.completion() {
                reaped += 1;
                let Ok(i) = usize::try_from(cqe.user_data()) else {
                    continue;
                };
                let res = cqe.result();
                results[i] = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res)
                };
            }
        }
    }
    results
}

fn write_uring(ring: &mut IoUring, jobs: &[WriteJob<'_>]) -> Vec<io::Result<()>> {
    let mut done = vec![0usize; jobs.len()];
    let mut failed: Vec<Option<io::Error>> = jobs.iter().map(|_| None).collect();
    loop {
        // Queue one write for each job with bytes left, up to the ring's size.
        let mut in_flight = 0usize;
        for (i, job) in jobs.iter().enumerate() {
            if failed[i].is_some() || done[i] == job.total() {
                continue;
            }
            if in_flight == RING_ENTRIES as usize {
                break;
            }
            let rest = job.rest(done[i]);
            let len = rest.len().min(MAX_WRITE_CHUNK);
            let sqe = opcode::Write::new(
                types::Fd(job.file.as_raw_fd()),
                rest.as_ptr(),
                u32::try_from(len).unwrap_or(u32::MAX),
            )
            .offset(done[i] as u64)
            .build()
            .user_data(i as u64);
            // SAFETY: the buffer `rest` borrows from `jobs` and the fd from a `File`
            // borrowed by `jobs`, both alive until this function returns; every
            // entry pushed here is reaped below (submit_and_wait for `in_flight`
            // completions) before the loop pushes again or returns, so the kernel
            // never reads the buffer after it may be freed.
            let pushed = unsafe { ring.submission().push(&sqe) };
            if pushed.is_err() {
                break;
            }
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let mut reaped = 0usize;
        while reaped < in_flight {
            match ring.submit_and_wait(in_flight - reaped) {
                Ok(_) => {}
                Err(e) if retryable(&e) => {
                    std::thread::sleep(ENTER_RETRY);
                    continue;
                }
                Err(e) => {
                    // The ring itself failed: nothing more can be known about the
                    // writes in flight; fail every job still open.
                    for (i, job) in jobs.iter().enumerate() {
                        if failed[i].is_none() && done[i] != job.total() {
                            failed[i] = Some(io::Error::new(e.kind(), e.to_string()));
                        }
                    }
                    return finish(failed);
                }
            }
            for cqe in ring.completion() {
                reaped += 1;
                let Ok(i) = usize::try_from(cqe.user_data()) else {
                    continue;
                };
                let res = cqe.result();
                if res < 0 {
                    failed[i] = Some(io::Error::from_raw_os_error(-res));
                } else if res == 0 {
                    failed[i] = Some(io::Error::from(io::ErrorKind::WriteZero));
                } else {
                    done[i] += usize::try_from(res).unwrap_or(0);
                }
            }
        }
    }
    finish(failed)
}

fn finish(failed: Vec<Option<io::Error>>) -> Vec<io::Result<()>> {
    failed.into_iter().map(|f| f.map_or(Ok(()), Err)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_writes_land_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = BatchWriter::new();
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map(|v| v.trim() != "0")
            .unwrap_or(false);
        assert!(
            writer.is_uring() || disabled,
            "io_uring is allowed here but was not set up"
        );
        let payloads: Vec<Vec<u8>> = (0..100u32)
            .map(|i| (0..(i * 997) % 70_000).map(|b| (b ^ i) as u8).collect())
            .collect();
        let files: Vec<File> = (0..payloads.len())
            .map(|i| File::create(dir.path().join(i.to_string())).expect("create"))
            .collect();
        let jobs: Vec<WriteJob<'_>> = files
            .iter()
            .zip(&payloads)
            .map(|(file, p)| WriteJob {
                file,
                parts: [b"HDR", p],
            })
            .collect();
        let results = writer.write_all(&jobs);
        assert_eq!(results.len(), payloads.len());
        for (i, r) in results.into_iter().enumerate() {
            r.unwrap_or_else(|e| panic!("write {i} failed: {e}"));
            let got = std::fs::read(dir.path().join(i.to_string())).expect("read back");
            assert_eq!(&got[..3], b"HDR");
            assert_eq!(&got[3..], &payloads[i][..], "file {i} differs");
        }
    }

    /// Create, write, close and rename a batch, as the storage thread does.
    fn create_write_rename(writer: &mut BatchWriter) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let tmps: Vec<std::path::PathBuf> = (0..150)
            .map(|i| dir.path().join(format!("{i}.tmp")))
            .collect();
        let finals: Vec<std::path::PathBuf> = (0..150)
            .map(|i| dir.path().join(format!("{i}.obj")))
            .collect();
        let mut paths: Vec<&Path> = tmps.iter().map(|p| p.as_path()).collect();
        // One path in a missing directory fails alone.
        let missing = dir.path().join("no/such.tmp");
        paths.push(&missing);
        // A name planted beforehand, as a symlink to elsewhere, is neither
        // followed nor reused.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").expect("victim");
        let planted = dir.path().join("planted.tmp");
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        paths.push(&planted);
        let files = writer.create_all(&paths, 0o600);
        assert_eq!(files.len(), 152);
        assert!(files[150].is_err(), "a missing directory is an error");
        assert_eq!(
            files[151].as_ref().map(drop).map_err(io::Error::kind),
            Err(io::ErrorKind::AlreadyExists),
            "a planted name is refused"
        );
        assert_eq!(std::fs::read(&victim).expect("victim"), b"untouched");
        let files: Vec<File> = files
            .into_iter()
            .take(150)
            .map(|f| f.expect("create"))
            .collect();
        let bodies: Vec<Vec<u8>> = (0..150u32).map(|i| i.to_le_bytes().repeat(100)).collect();
        let jobs: Vec<WriteJob<'_>> = files
            .iter()
            .zip(&bodies)
            .map(|(file, b)| WriteJob {
                file,
                parts: [b"H", b],
            })
            .collect();
        assert!(writer.write_all(&jobs).iter().all(Result::is_ok));
        drop(jobs);
        let refs: Vec<&File> = files.iter().collect();
        assert!(writer.sync_all(&refs).iter().all(Result::is_ok));
        let renames: Vec<(File, &Path, &Path)> = files
            .into_iter()
            .zip(tmps.iter().zip(&finals))
            .map(|(f, (t, d))| (f, t.as_path(), d.as_path()))
            .collect();
        let results = writer.close_and_rename_all(renames);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        for (i, (t, d)) in tmps.iter().zip(&finals).enumerate() {
            assert!(!t.exists(), "{} still there", t.display());
            let data = std::fs::read(d).expect("read renamed file");
            assert_eq!(data[0], b'H');
            assert_eq!(&data[1..], &bodies[i][..]);
            let mode = std::fs::metadata(d).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn uring_creates_writes_and_renames_batches() {
        create_write_rename(&mut BatchWriter::new());
    }

    #[test]
    fn plain_creates_writes_and_renames_batches() {
        create_write_rename(&mut BatchWriter::Plain);
    }

    #[test]
    fn plain_fallback_writes_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = File::create(dir.path().join("x")).expect("create");
        let mut writer = BatchWriter::Plain;
        let results = writer.write_all(&[WriteJob {
            file: &file,
            parts: [b"ab", b"cd"],
        }]);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(std::fs::read(dir.path().join("x")).expect("read"), b"abcd");
    }
}
