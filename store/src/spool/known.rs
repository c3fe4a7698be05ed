//! Digests known to be at the destination, looked up from any thread without a
//! lock.
//!
//! Most objects a busy node captures were stored before: the same response
//! body, the same request headers of a polling client. The S3 store's callers
//! (the shards) ask here first, for every object, whether its digest was
//! uploaded already; a hit is settled on the caller's thread at once, and the
//! object never crosses to the storage thread (no queue, no wake-up, no
//! cross-thread free of its bytes).
//!
//! The table is direct-mapped: a digest has one slot (its first eight bytes
//! pick it) and a newer digest with the same slot replaces it. So it forgets,
//! and a forgotten digest takes the usual path through the storage thread,
//! which deduplicates it against the spool's own index. It never answers yes
//! for a digest that was not inserted: each slot holds the whole digest,
//! behind a sequence lock (the version is odd while a writer fills the slot;
//! a reader that sees it change, or odd, answers no).

use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::Digest;

/// Slots in the table: 16 Ki × 40 bytes = 640 KiB per S3 store, allocated when
/// the store starts.
pub const SLOTS: usize = 16 * 1024;

/// A lock-free, forgetting set of digests.
#[derive(Debug)]
pub struct KnownDigests {
    slots: Box<[Slot]>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Even and non-zero: `words` hold a digest; odd: a writer is filling them.
    version: AtomicU64,
    words: [AtomicU64; 4],
}

impl Default for KnownDigests {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

fn words(digest: &Digest) -> [u64; 4] {
    let bytes = digest.as_bytes();
    std::array::from_fn(|i| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(word)
    })
}

impl KnownDigests {
    fn slot(&self, words: &[u64; 4]) -> &Slot {
        // A digest's bits are uniform: its first word picks the slot.
        &self.slots[words[0] as usize % SLOTS]
    }

    /// Remembers `digest`, replacing whatever digest shared its slot. A slot
    /// another thread is writing at the same moment is left to it: the
    /// digest is then not remembered, which only costs a later lookup its
    /// fast path.
    pub fn insert(&self, digest: &Digest) {
        let words = words(digest);
        let slot = self.slot(&words);
        let version = slot.version.load(Ordering::Relaxed);
        if version & 1 == 1
            || slot
                .version
                .compare_exchange(version, version + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // Release: no reader may see the new words with the old even version.
        fence(Ordering::Release);
        for (slot_word, word) in slot.words.iter().zip(words) {
            slot_word.store(word, Ordering::Relaxed);
        }
        slot.version.store(version + 2, Ordering::Release);
    }

    /// Whether `digest` was inserted and not replaced since.
    pub fn contains(&self, digest: &Digest) -> bool {
        let words = words(digest);
        let slot = self.slot(&words);
        let before = slot.version.load(Ordering::Acquire);
        if before == 0 || before & 1 == 1 {
            return false;
        }
        let held: [u64; 4] = std::array::from_fn(|i| slot.words[i].load(Ordering::Relaxed));
        // Acquire: the words above are read before the version is read again.
        fence(Ordering::Acquire);
        slot.version.load(Ordering::Relaxed) == before && held == words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_inserted_and_nothing_else() {
        let known = KnownDigests::default();
        let a = blake3::hash(b"a");
        let b = blake3::hash(b"b");
        assert!(!known.contains(&a));
        known.insert(&a);
        assert!(known.contains(&a));
        assert!(!known.contains(&b));
        assert!(!known.contains(&blake3::Hash::from_bytes([0; 32])));
    }

    #[test]
    fn a_digest_with_the_same_slot_replaces_the_older() {
        let known = KnownDigests::default();
        let first = blake3::hash(b"first");
        // Same first word (same slot), different digest.
        let mut bytes = *first.as_bytes();
        bytes[31] ^= 1;
        let second = blake3::Hash::from_bytes(bytes);
        known.insert(&first);
        known.insert(&second);
        assert!(known.contains(&second));
        assert!(!known.contains(&first), "the slot holds one digest");
    }

    #[test]
    fn readers_racing_a_writer_never_see_a_digest_that_was_not_inserted() {
        // Two digests share a slot (their first word) and differ in every other
        // word; a writer alternates them while readers ask for a mix of the
        // two, which only a torn read (words of both) could match.
        let known = std::sync::Arc::new(KnownDigests::default());
        let slot = blake3::hash(b"slot");
        let with_tail = |tail: &[u8]| {
            let mut bytes = *slot.as_bytes();
            bytes[8..].copy_from_slice(&blake3::hash(tail).as_bytes()[8..]);
            blake3::Hash::from_bytes(bytes)
        };
        let (x, y) = (with_tail(b"x"), with_tail(b"y"));
        let mut mixed = *x.as_bytes();
        mixed[16..24].copy_from_slice(&y.as_bytes()[16..24]);
        let never = blake3::Hash::from_bytes(mixed);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (known, stop) = (known.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    known.insert(&x);
                    known.insert(&y);
                }
            })
        };
        // Readers start once the writer runs: on a busy machine a thread
        // can take longer to be scheduled than the readers take.
        while !(known.contains(&x) || known.contains(&y)) {
            std::thread::yield_now();
        }
        let mut seen = 0u64;
        for _ in 0..200_000 {
            assert!(!known.contains(&never));
            seen += u64::from(known.contains(&x) || known.contains(&y));
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        assert!(seen > 0, "readers saw the writer's digests");
    }
}
