//! Digests of objects a shard hashed a moment ago, reused for the same bytes.
//!
//! A busy node's objects repeat: a polling client's request headers, the same
//! response body to every client, response headers that change once a second
//! (`Date`). BLAKE3 costs about a microsecond per KiB on one core; comparing
//! with bytes hashed before costs a few percent of that. So each shard keeps
//! the bytes and digests of its last objects of up to [`MAX_OBJECT`] bytes
//! in a table of two-slot sets, and an object equal byte for byte to the one
//! in either slot of its set takes that digest. Equality is checked on every
//! byte, so the digest is always the BLAKE3 of the object's own bytes; the
//! set is only a guess, chosen from the length and four words sampled across
//! the bytes. Two slots per set, not one: with one, two objects a node sends
//! over and over (a request head and a body) that happened to share a slot
//! pushed each other out on every transaction, and every object was hashed
//! for as long as both were sent (a fifth of a shard's time in a profile,
//! where the set depends on the port in the request's `Host`). A miss
//! replaces the slot of the set used less recently.
//!
//! The table holds copies in buffers of its own (never the objects' bytes,
//! whose memory-budget charge would then outlive them), [`MAX_HELD`] bytes
//! at most per shard, and allocates only when a slot's buffer must grow.

use tapwire_store::Digest;

/// Slots per shard.
const SLOTS: usize = 256;
/// Slots per set.
const WAYS: usize = 2;
/// Sets per shard.
const SETS: usize = SLOTS / WAYS;
/// Objects larger than this are always hashed (comparing them would hold too
/// much in the table for what it saves).
pub const MAX_OBJECT: usize = 64 * 1024;
/// Bytes the table's buffers hold at most, per shard.
pub const MAX_HELD: usize = 1024 * 1024;

/// Recent objects' digests, by content.
pub struct DigestCache {
    /// Set `i` is `slots[WAYS * i..WAYS * (i + 1)]`.
    slots: Vec<Slot>,
    /// Per set, the slot it used last (a hit or a fill).
    last: Vec<u8>,
    /// Capacity of every slot's buffer together.
    held: usize,
    /// Objects that took a digest from the table ([`DigestCache::hits`]).
    hits: u64,
}

#[derive(Default)]
struct Slot {
    bytes: Vec<u8>,
    digest: Option<Digest>,
}

impl Default for DigestCache {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            last: vec![0; SETS],
            held: 0,
            hits: 0,
        }
    }
}

impl DigestCache {
    /// BLAKE3 of `bytes`: from the table when the same bytes sit in their
    /// slot, else computed (and the slot given these bytes, if they fit).
    pub fn digest(&mut self, bytes: &[u8]) -> Digest {
        if bytes.len() > MAX_OBJECT {
            return blake3::hash(bytes);
        }
        let set = set_of(bytes);
        for way in 0..WAYS {
            let slot = &self.slots[WAYS * set + way];
            if let Some(digest) = slot.digest
                && slot.bytes == bytes
            {
                self.hits += 1;
                self.last[set] = way as u8;
                return digest;
            }
        }
        let digest = blake3::hash(bytes);
        // Into an empty slot of the set, else the one used less recently.
        let way = (0..WAYS)
            .find(|&w| self.slots[WAYS * set + w].digest.is_none())
            .unwrap_or((usize::from(self.last[set]) + 1) % WAYS);
        self.last[set] = way as u8;
        let slot = &mut self.slots[WAYS * set + way];
        let grow = bytes.len().saturating_sub(slot.bytes.capacity());
        if self.held + grow <= MAX_HELD {
            let before = slot.bytes.capacity();
            slot.bytes.clear();
            slot.bytes.extend_from_slice(bytes);
            slot.digest = Some(digest);
            self.held += slot.bytes.capacity() - before;
        } else {
            slot.digest = None;
        }
        digest
    }

    /// Objects whose digest came from the table.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

/// The set for `bytes`: their length and four words sampled at the start,
/// a third, two thirds and the end, mixed.
fn set_of(bytes: &[u8]) -> usize {
    let len = bytes.len();
    let word = |at: usize| -> u64 {
        let from = at.min(len.saturating_sub(8));
        if let Some(whole) = bytes.get(from..from + 8) {
            // A fixed-size read: no copy call for the usual object.
            return u64::from_le_bytes(whole.try_into().expect("8 bytes"));
        }
        let mut w = [0u8; 8];
        let part = &bytes[from..len.min(from + 8)];
        w[..part.len()].copy_from_slice(part);
        u64::from_le_bytes(w)
    };
    let mut h = len as u64;
    for at in [0, len / 3, 2 * len / 3, len] {
        h = (h ^ word(at)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    (h >> 32) as usize % SETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_again_take_the_digest_from_the_table() {
        let mut cache = DigestCache::default();
        let body = vec![b'x'; 1024];
        assert_eq!(cache.digest(&body), blake3::hash(&body));
        assert_eq!(cache.hits(), 0);
        assert_eq!(cache.digest(&body.clone()), blake3::hash(&body));
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn bytes_that_differ_anywhere_are_hashed_even_in_the_same_set() {
        let mut cache = DigestCache::default();
        let first = b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 03:00:00 GMT\r\n\r\n".to_vec();
        // Differs only away from the sampled words: same length, same set.
        let mut second = first.clone();
        second[28] = b'1';
        let mut third = first.clone();
        third[30] = b'2';
        assert_eq!(set_of(&first), set_of(&second), "same set");
        assert_eq!(set_of(&first), set_of(&third), "same set");
        assert_eq!(cache.digest(&first), blake3::hash(&first));
        assert_eq!(cache.digest(&second), blake3::hash(&second));
        assert_eq!(cache.digest(&third), blake3::hash(&third));
        assert_eq!(cache.hits(), 0, "no digest was reused");
        // The set holds the last two; the first was replaced.
        assert_eq!(cache.digest(&second), blake3::hash(&second));
        assert_eq!(cache.digest(&first), blake3::hash(&first));
        assert_eq!(cache.hits(), 1, "only the second came from the table");
        // Every length, including the empty object and those under a word.
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len as u8).collect();
            assert_eq!(cache.digest(&bytes), blake3::hash(&bytes), "len {len}");
            assert_eq!(cache.digest(&bytes), blake3::hash(&bytes), "len {len}");
        }
    }

    /// A request head for a server on `port` (the set depends on it).
    fn request_head(port: u16) -> Vec<u8> {
        format!("GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").into_bytes()
    }

    #[test]
    fn objects_sent_in_turn_that_share_a_set_are_both_kept() {
        let body: Vec<u8> = (0..1024).map(|i| b'a' + (i % 26) as u8).collect();
        // A port whose request head falls in the body's set.
        let head = (1024..=u16::MAX)
            .map(request_head)
            .find(|h| set_of(h) == set_of(&body))
            .expect("some port shares the body's set");
        let mut cache = DigestCache::default();
        for _ in 0..100 {
            assert_eq!(cache.digest(&head), blake3::hash(&head));
            assert_eq!(cache.digest(&body), blake3::hash(&body));
        }
        assert_eq!(cache.hits(), 198, "each hashed once");
        // A third object in the set replaces the one used less recently:
        // the head, then the body, then the third, in turn.
        let third = (1024..=u16::MAX)
            .map(request_head)
            .filter(|h| *h != head)
            .find(|h| set_of(h) == set_of(&body))
            .expect("another port shares the set");
        cache.digest(&third);
        let before = cache.hits();
        cache.digest(&body);
        assert_eq!(cache.hits(), before + 1, "the body used last stays");
        cache.digest(&head);
        assert_eq!(cache.hits(), before + 1, "the head was replaced");
    }

    #[test]
    fn large_objects_are_hashed_and_the_table_holds_at_most_its_limit() {
        let mut cache = DigestCache::default();
        let large = vec![7u8; MAX_OBJECT + 1];
        cache.digest(&large);
        assert_eq!(cache.digest(&large), blake3::hash(&large));
        assert_eq!(cache.hits(), 0);
        assert_eq!(cache.held, 0);
        for i in 0..4 * SLOTS as u32 {
            let mut body = vec![0u8; 60 * 1024];
            body[..4].copy_from_slice(&i.to_le_bytes());
            body[60 * 1024 - 4..].copy_from_slice(&i.to_le_bytes());
            assert_eq!(cache.digest(&body), blake3::hash(&body));
            assert!(cache.held <= MAX_HELD, "{}", cache.held);
        }
    }
}
