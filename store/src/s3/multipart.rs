//! Multipart uploads read part by part from the spool file.
//!
//! Create → upload each part (read from the file at its offset, one part in memory
//! at a time, a transient failure retried a few times) → complete. Any failure
//! aborts the upload so the server frees the parts already sent.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::client::{ClientError, S3Client};
use crate::backoff;
use crate::spool::Entry;

/// Tries per part before the whole upload is given up (and aborted).
const PART_ATTEMPTS: u32 = 4;
/// First retry delay for a part.
const PART_RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest retry delay for a part.
const PART_RETRY_CAP: Duration = Duration::from_secs(5);

/// A multipart upload failure.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// CreateMultipartUpload failed.
    #[error("cannot start the multipart upload")]
    Create(#[source] ClientError),
    /// A part could not be read from the spool file.
    #[error("cannot read part {part} from `{path}`")]
    Read {
        /// Part number (1-based).
        part: u32,
        /// The spool file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// UploadPart failed.
    #[error("part {part} failed")]
    Part {
        /// Part number (1-based).
        part: u32,
        /// The S3 error.
        #[source]
        source: ClientError,
    },
    /// CompleteMultipartUpload failed.
    #[error("cannot complete the multipart upload")]
    Complete(#[source] ClientError),
}

impl MultipartError {
    /// The S3 error behind this failure, if any.
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            Self::Create(e) | Self::Complete(e) | Self::Part { source: e, .. } => Some(e),
            Self::Read { .. } => None,
        }
    }
}

/// Object bytes the uploader holds in memory at once, at most: bodies and parts
/// read from the spool and not yet sent.
pub const MAX_IN_FLIGHT_BYTES: u64 = 64 << 20;
/// The budget's unit: permits are KiB, so a `u32` count covers any part size.
const BUDGET_UNIT_BYTES: u64 = 1024;

/// Bounds the object bytes held in memory by uploads in flight.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: tokio::sync::Semaphore,
    total: u32,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        let total = u32::try_from(MAX_IN_FLIGHT_BYTES / BUDGET_UNIT_BYTES).unwrap_or(u32::MAX);
        Self {
            permits: tokio::sync::Semaphore::new(total as usize),
            total,
        }
    }
}

impl MemoryBudget {
    /// Waits until `bytes` fit in the budget and holds them until the guard drops.
    /// A request larger than the whole budget takes all of it.
    pub async fn acquire(&self, bytes: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT_BYTES))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        // The semaphore is never closed, so acquiring only waits.
        self.permits.acquire_many(units).await.ok()
    }
}

/// Number of parts of `part_bytes` for `len` bytes (at least one).
pub fn part_count(len: u64, part_bytes: u64) -> u64 {
    len.div_ceil(part_bytes).max(1)
}

/// Uploads `entry` from its spool file as a multipart upload of `part_bytes` parts.
/// Each part in memory holds its share of `memory` while it is read and sent.
pub async fn upload(
    client: &S3Client,
    entry: &Entry,
    part_bytes: u64,
    memory: &MemoryBudget,
) -> Result<(), MultipartError> {
    let key = entry.digest.to_hex();
    let upload_id = client
        .create_multipart(&key, &entry.content_type)
        .await
        .map_err(MultipartError::Create)?;
    match upload_parts(client, entry, &key, &upload_id, part_bytes, memory).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if let Err(abort) = client.abort_multipart(&key, &upload_id).await {
                tracing::warn!(key = %key, error = %abort, "cannot abort the failed multipart upload");
            }
            Err(e)
        }
    }
}

async fn upload_parts(
    client: &S3Client,
    entry: &Entry,
    key: &str,
    upload_id: &str,
    part_bytes: u64,
    memory: &MemoryBudget,
) -> Result<(), MultipartError> {
    let count = part_count(entry.len, part_bytes);
    let mut etags = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for index in 0..count {
        let part = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let start = index * part_bytes;
        let len = part_bytes.min(entry.len - start);
        let _held = memory.acquire(len).await;
        let body = read_part(entry, part, start, len).await?;
        let mut attempt = 0;
        let etag = loop {
            match client.upload_part(key, upload_id, part, body.clone()).await {
                Ok(etag) => break etag,
                Err(e) if e.is_transient() && attempt + 1 < PART_ATTEMPTS => {
                    tracing::debug!(key, part, attempt, error = %e, "part failed; retrying");
                    tokio::time::sleep(backoff::delay(attempt, PART_RETRY_BASE, PART_RETRY_CAP))
                        .await;
                    attempt += 1;
                }
                Err(source) => return Err(MultipartError::Part { part, source }),
            }
        };
        etags.push((part, etag));
    }
    client
        .complete_multipart(key, upload_id, &etags)
        .await
        .map_err(MultipartError::Complete)
}

/// Reads `len` bytes at `start` of the object from its spool file, off the runtime.
async fn read_part(
    entry: &Entry,
    part: u32,
    start: u64,
    len: u64,
) -> Result<Bytes, MultipartError> {
    let path = entry.path.clone();
    let offset = entry.offset + start;
    let read = tokio::task::spawn_blocking(move || read_range(&path, offset, len)).await;
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(source)) => Err(MultipartError::Read {
            part,
            path: entry.path.clone(),
            source,
        }),
        Err(join) => Err(MultipartError::Read {
            part,
            path: entry.path.clone(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// Reads `len` bytes at `offset` of the file at `path`.
pub fn read_range(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_budget_bounds_bytes_in_flight() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let wait = Duration::from_millis(50);
            let budget = MemoryBudget::default();
            let first = budget.acquire(40 << 20).await;
            assert!(first.is_some());
            // 40 + 40 MiB is over the 64 MiB budget: the second waits.
            assert!(
                tokio::time::timeout(wait, budget.acquire(40 << 20))
                    .await
                    .is_err()
            );
            drop(first);
            let second = tokio::time::timeout(wait, budget.acquire(40 << 20)).await;
            assert!(second.is_ok(), "room again once the first is released");
            drop(second);
            // More than the whole budget takes all of it instead of waiting forever.
            let all = tokio::time::timeout(wait, budget.acquire(1 << 40)).await;
            assert!(all.is_ok());
        });
    }

    #[test]
    fn parts_cover_the_object() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_count(40 * MIB, 8 * MIB), 5);
        assert_eq!(part_count(40 * MIB + 1, 8 * MIB), 6);
        assert_eq!(part_count(0, 8 * MIB), 1);
    }
}
