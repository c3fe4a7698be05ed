//! Events a shard writes in one round, gathered per event store and handed
//! over as one block of lines ([`EventStore::emit_lines`]) when the round
//! ends.
//!
//! A transaction makes several events (its own and, with an object store,
//! one `artifact_record` per object), each about 0.5–2 KiB. Handed over one
//! by one, each costs an allocation of its own, a message on the store's
//! queue, and a free on the store's thread of memory this thread then
//! allocates again. Gathered, each event is written straight into the
//! round's block for its store: one allocation and one message per store per
//! round, and the stdout store copies the block into its write buffer whole.
//!
//! A thread gathers only between [`start`] and [`stop`] (the shard threads);
//! elsewhere, and for an event written while another is being written, each
//! event is handed over on its own at once. A block is handed over when the
//! round ends ([`flush`]) or once it holds [`BLOCK_BYTES`], so a round's
//! events wait at most one round, and the memory held is bounded.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use tapwire_store::EventStore;

use super::event_fields;

/// Bytes of events a block holds before it is handed over mid-round.
pub const BLOCK_BYTES: usize = 64 * 1024;
/// Capacity a thread's first block starts with: a few transactions' events.
/// Later blocks start with the size of the thread's last one, so that a
/// steady round's block is not grown (and copied) on the way.
const BLOCK_START: usize = 16 * 1024;

/// One store's block for this round.
struct Block {
    store: Arc<dyn EventStore>,
    lines: Vec<u8>,
    count: u64,
}

impl Block {
    fn hand_over(self) {
        if self.count > 0 {
            LAST_BLOCK.set(self.lines.len().clamp(BLOCK_START, BLOCK_BYTES));
            self.store.emit_lines(Bytes::from(self.lines), self.count);
        }
    }
}

thread_local! {
    /// Bytes of the last block this thread handed over.
    static LAST_BLOCK: std::cell::Cell<usize> = const { std::cell::Cell::new(BLOCK_START) };
    /// This thread's blocks, one per store written to this round; `None`
    /// when the thread does not gather.
    static BLOCKS: RefCell<Option<Vec<Block>>> = const { RefCell::new(None) };
}

/// From now on, events written on this thread are gathered until [`flush`].
pub fn start() {
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_none() {
            *b = Some(Vec::new());
        }
    });
}

/// Hands over what is gathered; events are handed over one by one from now on.
pub fn stop() {
    flush();
    BLOCKS.with(|b| *b.borrow_mut() = None);
}

/// Hands each store its block of this round's events.
pub fn flush() {
    let blocks = BLOCKS.with(|b| match b.try_borrow_mut() {
        Ok(mut b) => b.as_mut().map(std::mem::take),
        Err(_) => None,
    });
    // Handed over outside the borrow: a store may make an event of its own
    // (then handed over on its own) while taking a block.
    for block in blocks.into_iter().flatten() {
        block.hand_over();
    }
}

/// Writes one event with `write` (appending a JSON object, no newline) and
/// hands it to each of `stores`: into this round's block of each when this
/// thread gathers, else as `Bytes` of its own.
pub fn emit_with<'a>(
    stores: impl IntoIterator<Item = &'a Arc<dyn EventStore>>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    let mut stores = stores.into_iter();
    let Some(first) = stores.next() else {
        return;
    };
    let mut write = Some(write);
    let full = BLOCKS.with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else {
            return Vec::new();
        };
        let Some(blocks) = b.as_mut() else {
            return Vec::new();
        };
        let at = block_of(blocks, first);
        let start = blocks[at].lines.len();
        if let Some(write) = write.take() {
            write(&mut blocks[at].lines);
        }
        for store in stores.by_ref() {
            let to = block_of(blocks, store);
            let (from, into) = pair(blocks, at, to);
            into.lines.extend_from_slice(&from.lines[start..]);
            append_line_end(into);
        }
        append_line_end(&mut blocks[at]);
        take_full(blocks)
    });
    match write {
        // Gathered (some blocks may be full now: handed over outside the borrow).
        None => full.into_iter().for_each(Block::hand_over),
        Some(write) => {
            let event = event_fields::event_bytes_with(write);
            emit_each(std::iter::once(first).chain(stores), event);
        }
    }
}

/// Hands `event` to each of `stores` (see [`emit_with`]).
pub fn emit<'a>(stores: impl IntoIterator<Item = &'a Arc<dyn EventStore>>, event: Bytes) {
    let mut stores = stores.into_iter().peekable();
    if stores.peek().is_none() {
        return;
    }
    let gathering = BLOCKS.with(|b| b.try_borrow().is_ok_and(|b| b.is_some()));
    if gathering {
        emit_with(stores, |out| out.extend_from_slice(&event));
    } else {
        emit_each(stores, event);
    }
}

/// Hands `event` to each of `stores`, moving it to the last: a `Bytes` made
/// from a `Vec` allocates its shared count on its first clone, so one store
/// (the usual case) takes it with no allocation.
fn emit_each<'a>(stores: impl IntoIterator<Item = &'a Arc<dyn EventStore>>, event: Bytes) {
    let mut stores = stores.into_iter().peekable();
    while let Some(store) = stores.next() {
        if stores.peek().is_none() {
            store.emit(event);
            return;
        }
        store.emit(event.clone());
    }
}

/// The index of `store`'s block, made if it has none yet.
fn block_of(blocks: &mut Vec<Block>, store: &Arc<dyn EventStore>) -> usize {
    if let Some(i) = blocks.iter().position(|b| Arc::ptr_eq(&b.store, store)) {
        return i;
    }
    blocks.push(Block {
        store: Arc::clone(store),
        // A little over the last block: the next round's is much the same.
        lines: Vec::with_capacity(LAST_BLOCK.get() + LAST_BLOCK.get() / 8),
        count: 0,
    });
    blocks.len() - 1
}

fn append_line_end(block: &mut Block) {
    block.lines.push(b'\n');
    block.count += 1;
}

/// Blocks `from` and `into` (different indices), one to read and one to write.
fn pair(blocks: &mut [Block], from: usize, into: usize) -> (&Block, &mut Block) {
    debug_assert_ne!(from, into, "a store listed twice");
    if from < into {
        let (a, b) = blocks.split_at_mut(into);
        (&a[from], &mut b[0])
    } else {
        let (a, b) = blocks.split_at_mut(from);
        (&b[0], &mut a[into])
    }
}

/// Removes and returns the blocks that reached [`BLOCK_BYTES`].
fn take_full(blocks: &mut Vec<Block>) -> Vec<Block> {
    if blocks.iter().all(|b| b.lines.len() < BLOCK_BYTES) {
        return Vec::new();
    }
    let mut full = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        if blocks[i].lines.len() >= BLOCK_BYTES {
            full.push(blocks.swap_remove(i));
        } else {
            i += 1;
        }
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;
    use tapwire_store::StoreStats;

    /// Keeps what it is handed, as blocks.
    #[derive(Default)]
    struct Keep(Mutex<Vec<(Bytes, u64)>>);

    impl EventStore for Keep {
        fn id(&self) -> &str {
            "keep"
        }
        fn emit(&self, event: Bytes) {
            self.0.lock().unwrap().push((event, 1));
        }
        fn emit_lines(&self, lines: Bytes, count: u64) {
            self.0.lock().unwrap().push((lines, count));
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
        fn shutdown(&self, _: Duration) {}
    }

    fn stores() -> (Arc<Keep>, Arc<Keep>, Vec<Arc<dyn EventStore>>) {
        let (a, b) = (Arc::new(Keep::default()), Arc::new(Keep::default()));
        let both: Vec<Arc<dyn EventStore>> = vec![a.clone(), b.clone()];
        (a, b, both)
    }

    fn taken(k: &Keep) -> Vec<(Bytes, u64)> {
        std::mem::take(&mut *k.0.lock().unwrap())
    }

    #[test]
    fn a_gathering_thread_hands_each_store_one_block_per_round() {
        let (a, b, both) = stores();
        std::thread::spawn(move || {
            start();
            emit_with(&both, |out| out.extend_from_slice(br#"{"n":1}"#));
            emit(&both[1..], Bytes::from_static(br#"{"n":2}"#));
            emit_with(&both, |out| out.extend_from_slice(br#"{"n":3}"#));
            assert!(
                taken(&a).is_empty() && taken(&b).is_empty(),
                "held until the round ends"
            );
            flush();
            assert_eq!(
                taken(&a),
                [(Bytes::from_static(b"{\"n\":1}\n{\"n\":3}\n"), 2)]
            );
            assert_eq!(
                taken(&b),
                [(Bytes::from_static(b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"), 3)]
            );
            // Nothing gathered: nothing handed over.
            flush();
            assert!(taken(&a).is_empty() && taken(&b).is_empty());
            stop();
            emit_with(&both, |out| out.extend_from_slice(br#"{"n":4}"#));
            assert_eq!(taken(&a), [(Bytes::from_static(br#"{"n":4}"#), 1)]);
            assert_eq!(taken(&b), [(Bytes::from_static(br#"{"n":4}"#), 1)]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_full_block_is_handed_over_before_the_round_ends() {
        let (a, _, both) = stores();
        std::thread::spawn(move || {
            start();
            let event = vec![b'x'; 1000];
            let mut sent = 0u64;
            while taken(&a).is_empty() {
                emit_with(&both[..1], |out| out.extend_from_slice(&event));
                sent += 1;
                assert!(
                    sent < 100,
                    "a block passed {BLOCK_BYTES} bytes and was kept"
                );
            }
            assert_eq!(sent, BLOCK_BYTES.div_ceil(1001) as u64);
            stop();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_default_emit_lines_splits_a_block_into_events() {
        let events: Vec<Bytes> =
            tapwire_store::split_lines(Bytes::from_static(b"{\"a\":1}\n{}\n")).collect();
        assert_eq!(events, [&b"{\"a\":1}"[..], b"{}"]);
    }
}
