//! Batched file writes through io_uring.
//!
//! The storage thread hands over a batch of open files, each with the buffers to
//! write at offset 0; one `io_uring_enter` submits a write per file and waits for
//! them all, so a batch of N objects costs a handful of syscalls instead of N
//! `write`s. Short writes are resubmitted for the remainder. Where io_uring is not
//! available (disabled by `kernel.io_uring_disabled`, or a seccomp profile),
//! [`BatchWriter`] falls back to plain `write` calls and says so once.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, types};

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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
