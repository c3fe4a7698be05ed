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
//! Waiting keeps whole records only while the kernel's rings can hold what
//! comes meanwhile. Once a ring is past its high-water mark (its reader is
//! held up behind a waiting shard, see [`Pressure`]), a producer of an object
//! ([`Room::take_sheddable`]) stops waiting and the object is refused
//! ([`Taken::Shed`], counted by the store as `drops.shed`): a body lost in user
//! space, its event still written, rather than whole records, metadata
//! included, lost in the kernel while a slow disk holds the queue full.
//! Events are never shed: a producer of an event waits as before.
//!
//! The common path is two atomic additions; the lock and the condition variable
//! are touched only when the queue is full.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest a producer waits for room before the item is refused.
pub const PUSHBACK_WAIT: Duration = Duration::from_secs(1);
/// How often a producer of an object that waits for room looks whether the
/// rings are pressed (nothing wakes it when they become so).
const PRESSURE_LOOK: Duration = Duration::from_millis(1);

/// Sources (the kernel's rings) past their high-water mark now; see
/// [`Pressure`].
static PRESSED: AtomicU32 = AtomicU32::new(0);

/// One source's say in whether objects are shed: set while the ring a
/// reader drains is past its high-water mark and the reader cannot take
/// from it (it waits for a shard). While any source is pressed, producers of
/// objects are refused instead of waiting for room. Dropping it withdraws
/// its say.
#[derive(Debug)]
pub struct Pressure {
    on: bool,
    /// The count it is one of: [`PRESSED`] but in tests.
    sources: &'static AtomicU32,
}

impl Default for Pressure {
    fn default() -> Self {
        Self {
            on: false,
            sources: &PRESSED,
        }
    }
}

impl Pressure {
    /// Says whether this source is pressed now.
    pub fn set(&mut self, on: bool) {
        if on != self.on {
            self.on = on;
            if on {
                self.sources.fetch_add(1, Ordering::Relaxed);
            } else {
                self.sources.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Pressure {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Whether any source is pressed now ([`Pressure`]).
pub fn pressed() -> bool {
    PRESSED.load(Ordering::Relaxed) > 0
}

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
    /// No room, and an object's producer may not wait: the rings are
    /// pressed ([`Pressure`]).
    Shed,
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
    /// Sources pressed now ([`Pressure`]): [`PRESSED`] but in tests.
    pressed: &'static AtomicU32,
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
            pressed: &PRESSED,
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Takes room for one item of `len` bytes, waiting for the store when the
    /// queue is full (see the module doc). An item larger than the whole byte
    /// capacity could never fit and is refused at once.
    /// `on_wait` is called once a wait begins (to count it while it lasts).
    pub fn take(&self, len: u64, on_wait: impl FnOnce()) -> Taken {
        self.take_as(len, false, on_wait)
    }

    /// As [`Room::take`], for an item that may be shed (an object): while the
    /// rings are pressed ([`Pressure`]) it is refused ([`Taken::Shed`])
    /// instead of waiting, and a wait ends once they become so.
    pub fn take_sheddable(&self, len: u64, on_wait: impl FnOnce()) -> Taken {
        self.take_as(len, true, on_wait)
    }

    fn take_as(&self, len: u64, sheddable: bool, on_wait: impl FnOnce()) -> Taken {
        if self.try_take(len) {
            return Taken::Now;
        }
        if len > self.max_bytes
            || self.stalled.load(Ordering::Relaxed)
            || NEVER_WAITS.with(std::cell::Cell::get)
        {
            return Taken::Refused { waited: false };
        }
        if sheddable && self.pressed() {
            return Taken::Shed;
        }
        on_wait();
        self.wait_for(len, PUSHBACK_WAIT, sheddable)
    }

    /// Whether any source is pressed now ([`Pressure`]).
    fn pressed(&self) -> bool {
        self.pressed.load(Ordering::Relaxed) > 0
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
    fn wait_for(&self, len: u64, patience: Duration, sheddable: bool) -> Taken {
        let started = Instant::now();
        let taken = self.wait_until(len, started + patience, sheddable);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        WAITED_NS.with(|w| w.set(w.get().saturating_add(waited)));
        taken
    }

    fn wait_until(&self, len: u64, until: Instant, sheddable: bool) -> Taken {
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
            if sheddable && self.pressed() {
                break Taken::Shed;
            }
            let slice = if sheddable {
                left.min(PRESSURE_LOOK)
            } else {
                left
            };
            guard = self
                .freed
                .wait_timeout(guard, slice)
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
            room.wait_for(1, Duration::from_millis(30), false),
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
    fn an_object_waits_for_room_only_while_the_rings_are_not_pressed() {
        // Sources of this test's own: other tests' rooms stay unpressed.
        static SOURCES: AtomicU32 = AtomicU32::new(0);
        let pressure = || Pressure {
            on: false,
            sources: &SOURCES,
        };
        let room = Arc::new(Room {
            pressed: &SOURCES,
            ..Room::new(1, 100)
        });
        assert_eq!(room.take(1, || {}), Taken::Now);

        // A reader presses while an object waits: the wait ends, the object is shed.
        let mut reader = pressure();
        let r = Arc::clone(&room);
        let waiting = std::thread::spawn(move || {
            let started = Instant::now();
            (r.take_sheddable(1, || {}), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(40));
        reader.set(true);
        let (taken, waited) = waiting.join().unwrap();
        assert_eq!(taken, Taken::Shed);
        assert!(
            waited >= Duration::from_millis(40),
            "it waited first: {waited:?}"
        );
        assert!(waited < Duration::from_millis(500), "{waited:?}");

        // While pressed, an object is shed at once; an event still waits for room.
        let started = Instant::now();
        assert_eq!(room.take_sheddable(1, || {}), Taken::Shed);
        assert!(started.elapsed() < Duration::from_millis(20));
        let r = Arc::clone(&room);
        let event = std::thread::spawn(move || r.take(1, || {}));
        std::thread::sleep(Duration::from_millis(30));
        room.give_back(1);
        assert_eq!(event.join().unwrap(), Taken::AfterWait);

        // Two sources: pressed until both withdraw (a dropped one withdraws).
        let mut other = pressure();
        other.set(true);
        reader.set(false);
        assert!(room.pressed());
        drop(other);
        assert!(!room.pressed());
        // Unpressed, an object waits for room as an event does.
        let r = Arc::clone(&room);
        let object = std::thread::spawn(move || r.take_sheddable(1, || {}));
        std::thread::sleep(Duration::from_millis(30));
        room.give_back(1);
        assert_eq!(object.join().unwrap(), Taken::AfterWait);
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
