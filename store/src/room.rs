//! Room in a store's in-memory queue, in items and bytes, that a producer waits
//! for when it runs out.
//!
//! A store whose queue drains at the speed of something local (standard output,
//! the spool's disk) pushes back instead of dropping: a producer that finds the
//! queue full waits until the store's thread frees room. The shard that waits
//! stops taking records, its readers stop draining their rings, and the kernel's
//! rings (larger, and shedding body bytes first past their high-water mark) take
//! up the burst. Whole records are then lost only in the kernel, counted per CPU.
//!
//! A store that stops making progress must not stall capture for ever: a wait
//! ends after [`PUSHBACK_WAIT`], the item is refused (and counted by the store),
//! and until the store frees room again later producers are refused at once
//! instead of each waiting in turn.
//!
//! The common path is two atomic additions; the lock and the condition variable
//! are touched only when the queue is full.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest a producer waits for room before the item is refused.
pub const PUSHBACK_WAIT: Duration = Duration::from_secs(1);

thread_local! {
    /// Set on the stores' own threads: they must never wait for room, since the
    /// room they would wait for may be theirs to free.
    static NEVER_WAITS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Nanoseconds this thread has spent waiting for room.
    static WAITED_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Nanoseconds the calling thread has spent waiting for room, in all: a
/// shard takes it off its clock, so that time it spent held up by a store
/// does not count towards its reordering timeouts (the records it waits for
/// were held up with it).
pub fn waited_ns() -> u64 {
    WAITED_NS.with(std::cell::Cell::get)
}

/// Marks the calling thread as one of a store's own threads: [`Room::take`]
/// called on it never waits.
pub fn store_thread() {
    NEVER_WAITS.with(|w| w.set(true));
}

/// What [`Room::take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// There was room at once.
    Now,
    /// There was room after waiting for the store.
    AfterWait,
    /// No room: the queue stayed full for [`PUSHBACK_WAIT`] (`waited`), or it
    /// was found stalled, or the caller may not wait.
    Refused {
        /// The caller waited before it was refused.
        waited: bool,
    },
}

/// A queue's capacity in items and bytes.
#[derive(Debug)]
pub struct Room {
    items: AtomicU64,
    bytes: AtomicU64,
    max_items: u64,
    max_bytes: u64,
    /// Producers waiting now.
    waiting: AtomicU32,
    /// A wait timed out and no room has been freed since.
    stalled: AtomicBool,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Room {
    /// A queue of at most `max_items` items and `max_bytes` bytes.
    pub fn new(max_items: usize, max_bytes: u64) -> Self {
        Self {
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_items: max_items as u64,
            max_bytes,
            waiting: AtomicU32::new(0),
            stalled: AtomicBool::new(false),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Takes room for one item of `len` bytes, waiting for the store when the
    /// queue is full (see the module doc). An item larger than the whole byte
    /// capacity could never fit and is refused at once.
    /// `on_wait` is called once a wait begins (to count it while it lasts).
    pub fn take(&self, len: u64, on_wait: impl FnOnce()) -> Taken {
        if self.try_take(len) {
            return Taken::Now;
        }
        if len > self.max_bytes
            || self.stalled.load(Ordering::Relaxed)
            || NEVER_WAITS.with(std::cell::Cell::get)
        {
            return Taken::Refused { waited: false };
        }
        on_wait();
        self.wait_for(len, PUSHBACK_WAIT)
    }

    /// Takes room without ever waiting.
    pub fn take_now(&self, len: u64) -> bool {
        self.try_take(len)
    }

    fn try_take(&self, len: u64) -> bool {
        let items = self.items.fetch_add(1, Ordering::SeqCst);
        let bytes = self.bytes.fetch_add(len, Ordering::SeqCst);
        let fits = items < self.max_items && bytes + len <= self.max_bytes;
        if !fits {
            self.items.fetch_sub(1, Ordering::SeqCst);
            self.bytes.fetch_sub(len, Ordering::SeqCst);
        }
        fits
    }

    #[cold]
    fn wait_for(&self, len: u64, patience: Duration) -> Taken {
        let started = Instant::now();
        let taken = self.wait_until(len, started + patience);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        WAITED_NS.with(|w| w.set(w.get().saturating_add(waited)));
        taken
    }

    fn wait_until(&self, len: u64, until: Instant) -> Taken {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Counted before looking again, under the lock: a `give_back` after
        // this either sees the waiter (and notifies once it is waiting) or
        // freed its room before the look below.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let taken = loop {
            if self.try_take(len) {
                break Taken::AfterWait;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stalled.store(true, Ordering::Relaxed);
                break Taken::Refused { waited: true };
            }
            guard = self
                .freed
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    /// Gives back the room of one item of `len` bytes, waking producers that
    /// wait for it.
    pub fn give_back(&self, len: u64) {
        self.give_back_many(1, len);
    }

    /// Gives back the room of `items` items holding `len` bytes in all.
    pub fn give_back_many(&self, items: u64, len: u64) {
        if items == 0 && len == 0 {
            return;
        }
        self.items.fetch_sub(items, Ordering::SeqCst);
        self.bytes.fetch_sub(len, Ordering::SeqCst);
        if self.stalled.load(Ordering::Relaxed) {
            self.stalled.store(false, Ordering::Relaxed);
        }
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.freed.notify_all();
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Items held now.
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_full_queue_makes_the_producer_wait_until_room_is_given_back() {
        let room = Arc::new(Room::new(2, 100));
        assert_eq!(room.take(10, || {}), Taken::Now);
        assert_eq!(room.take(10, || {}), Taken::Now);
        let r = Arc::clone(&room);
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            r.give_back(10);
        });
        let started = Instant::now();
        assert_eq!(room.take(10, || {}), Taken::AfterWait);
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert!(
            waited_ns() >= 40_000_000,
            "the wait is on this thread's clock"
        );
        freer.join().unwrap();
        assert_eq!((room.items(), room.bytes()), (2, 20));
    }

    #[test]
    fn bytes_bound_too_and_an_oversized_item_is_refused_without_waiting() {
        let room = Room::new(10, 100);
        let started = Instant::now();
        assert_eq!(room.take(1000, || {}), Taken::Refused { waited: false });
        assert!(started.elapsed() < Duration::from_millis(20));
        assert_eq!((room.items(), room.bytes()), (0, 0));
        assert!(room.take_now(60));
        assert!(!room.take_now(60));
        assert!(room.take_now(40));
    }

    #[test]
    fn a_stalled_store_refuses_at_once_until_it_frees_room() {
        let room = Room::new(1, 100);
        assert_eq!(room.take(1, || {}), Taken::Now);
        let started = Instant::now();
        assert_eq!(
            room.wait_for(1, Duration::from_millis(30)),
            Taken::Refused { waited: true }
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
        let started = Instant::now();
        assert_eq!(room.take(1, || {}), Taken::Refused { waited: false });
        assert!(started.elapsed() < Duration::from_millis(20));
        room.give_back(1);
        assert_eq!(room.take(1, || {}), Taken::Now);
    }

    #[test]
    fn a_store_thread_never_waits() {
        let room = Arc::new(Room::new(1, 100));
        assert_eq!(room.take(1, || {}), Taken::Now);
        let r = Arc::clone(&room);
        let got = std::thread::spawn(move || {
            store_thread();
            let started = Instant::now();
            (r.take(1, || {}), started.elapsed())
        })
        .join()
        .unwrap();
        assert_eq!(got.0, Taken::Refused { waited: false });
        assert!(got.1 < Duration::from_millis(20));
    }
}
