//! A bounded single-producer single-consumer queue of byte frames over `rtrb`.
//!
//! One queue per (reader, shard) pair carries records from a per-CPU reader to the
//! shard that owns their connection. A frame is a little-endian `u32` length and
//! that many bytes, written into the ring in place: no allocation per frame, no
//! lock (rtrb's head and tail are atomics with acquire/release pairing), and a
//! full queue refuses the frame so the caller can drop and count it.

use rtrb::{Consumer, Producer, RingBuffer};

/// Bytes of the length prefix.
const LEN_BYTES: usize = size_of::<u32>();

/// The writing end, owned by a reader thread.
pub struct FrameProducer {
    inner: Producer<u8>,
}

/// The reading end, owned by a shard thread.
pub struct FrameConsumer {
    inner: Consumer<u8>,
    /// Where a frame that wraps around the ring's end is made contiguous; grows to
    /// the largest such frame once, then is reused.
    scratch: Vec<u8>,
}

/// A queue of `capacity_bytes` bytes (frames plus 4 bytes each).
pub fn frame_queue(capacity_bytes: usize) -> (FrameProducer, FrameConsumer) {
    let (inner_p, inner_c) = RingBuffer::new(capacity_bytes);
    (
        FrameProducer { inner: inner_p },
        FrameConsumer {
            inner: inner_c,
            scratch: Vec::new(),
        },
    )
}

/// The queue had no room for the frame; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl FrameProducer {
    /// Appends one frame made of `parts` concatenated, all or nothing: one
    /// reservation, then a `memcpy` per part into the ring's (at most two)
    /// free regions.
    pub fn push(&mut self, parts: &[&[u8]]) -> Result<(), Full> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let Ok(len32) = u32::try_from(len) else {
            return Err(Full);
        };
        let mut chunk = self
            .inner
            .write_chunk_uninit(LEN_BYTES + len)
            .map_err(|_| Full)?;
        let (first, second) = chunk.as_mut_slices();
        let mut at = 0;
        for part in std::iter::once(&len32.to_le_bytes()[..]).chain(parts.iter().copied()) {
            at = fill(first, second, at, part);
        }
        // SAFETY: all `LEN_BYTES + len` slots were written above.
        unsafe { chunk.commit_all() };
        Ok(())
    }

    /// Whether the consumer is gone.
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }
}

/// Copies `src` into the regions `first` then `second` from offset `at` (of
/// the two taken as one); returns the offset after it.
fn fill(
    first: &mut [std::mem::MaybeUninit<u8>],
    second: &mut [std::mem::MaybeUninit<u8>],
    at: usize,
    src: &[u8],
) -> usize {
    let in_first = first.len().saturating_sub(at).min(src.len());
    let (head, tail) = src.split_at(in_first);
    if in_first > 0 {
        first[at..at + in_first].copy_from_slice(as_uninit(head));
    }
    if !tail.is_empty() {
        let from = (at + in_first) - first.len();
        second[from..from + tail.len()].copy_from_slice(as_uninit(tail));
    }
    at + src.len()
}

fn as_uninit(bytes: &[u8]) -> &[std::mem::MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and initialised bytes
    // are valid `MaybeUninit`s.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len()) }
}

impl FrameConsumer {
    /// Hands the next frame to `f`, if one is queued, and consumes it.
    pub fn pop<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let mut len = [0u8; LEN_BYTES];
        {
            let head = self.inner.read_chunk(LEN_BYTES).ok()?;
            let (a, b) = head.as_slices();
            len[..a.len()].copy_from_slice(a);
            len[a.len()..].copy_from_slice(b);
            // Dropped without commit: the prefix stays queued until the frame is read.
        }
        let len = u32::from_le_bytes(len) as usize;
        // The producer writes prefix and body before publishing either, so a visible
        // prefix means the whole frame is there.
        let chunk = self.inner.read_chunk(LEN_BYTES + len).ok()?;
        let (a, b) = chunk.as_slices();
        let out = if b.is_empty() {
            f(&a[LEN_BYTES..])
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(a);
            self.scratch.extend_from_slice(b);
            f(&self.scratch[LEN_BYTES..])
        };
        chunk.commit_all();
        Some(out)
    }

    /// Whether the producer is gone.
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }

    /// Bytes queued (prefixes included).
    pub fn queued_bytes(&self) -> usize {
        self.inner.slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_and_in_order_across_wraparound() {
        let (mut p, mut c) = frame_queue(64);
        let mut expected = std::collections::VecDeque::new();
        for i in 0..1000u32 {
            let body: Vec<u8> = (0..(i % 23) as u8).map(|b| b ^ i as u8).collect();
            let (head, tail) = body.split_at(body.len() / 2);
            while p.push(&[head, tail]).is_err() {
                let want: Vec<u8> = expected.pop_front().unwrap();
                assert_eq!(c.pop(|f| f.to_vec()).unwrap(), want);
            }
            expected.push_back(body);
        }
        while let Some(want) = expected.pop_front() {
            assert_eq!(c.pop(|f| f.to_vec()).unwrap(), want);
        }
        assert!(c.pop(|_| ()).is_none());
    }

    #[test]
    fn full_queue_refuses_and_keeps_what_it_has() {
        let (mut p, mut c) = frame_queue(16);
        assert_eq!(p.push(&[b"0123456789"]), Ok(()));
        assert_eq!(p.push(&[b"abc"]), Err(Full));
        assert_eq!(c.pop(|f| f.to_vec()).unwrap(), b"0123456789");
        assert_eq!(p.push(&[b"abc"]), Ok(()));
        assert_eq!(c.pop(|f| f.to_vec()).unwrap(), b"abc");
    }

    #[test]
    fn frames_cross_threads_intact() {
        let (mut p, mut c) = frame_queue(4096);
        let n = 100_000u32;
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..n {
                    let bytes = i.to_le_bytes();
                    while p.push(&[&bytes, &bytes]).is_err() {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut next = 0u32;
            while next < n {
                if let Some(v) = c.pop(|f| f.to_vec()) {
                    assert_eq!(v.len(), 8);
                    assert_eq!(v[..4], next.to_le_bytes());
                    assert_eq!(v[4..], next.to_le_bytes());
                    next += 1;
                }
            }
        });
    }
}
