//! A BPF ring buffer's consumer, with the data pages mapped once.
//!
//! The kernel lays a ring's data pages out twice in a row, so that a record
//! wrapping around the end reads as one slice; aya's `RingBuf` maps both
//! copies. Every page mapped counts in the agent's resident set, so that
//! mapping shows each ring at twice its size (64 MiB of an idle agent's RSS
//! on 2 CPUs with 16 MiB rings), for memory that exists once. Here the data
//! pages are mapped once; the rare record that wraps around the end is copied
//! into a buffer of the reader's own (kept, so the copy allocates only when a
//! larger record than any before wraps).
//!
//! The protocol is the kernel's (`kernel/bpf/ringbuf.c`) and aya's: positions
//! are byte counters, the producer's read with Acquire, the consumer's
//! published with Release after the record is read; a record's 8-byte header
//! holds its length and the busy and discard bits, read with Acquire.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    ptr::NonNull,
    sync::Arc,
    sync::atomic::{self, AtomicU32, AtomicUsize, Ordering},
};

/// Record header size (`BPF_RINGBUF_HDR_SZ`).
const HDR: usize = 8;
/// The header's busy bit: the record is being written.
const BUSY: u32 = 1 << 31;
/// The header's discard bit: the record was dropped by its producer.
const DISCARD: u32 = 1 << 30;

/// One mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, prot: i32, offset: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh shared mapping of the ring's fd; the kernel checks
        // length, offset and protection against the ring's layout.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mappings are plain shared memory; the reader owns them and
// reads them from one thread at a time.
unsafe impl Send for Mapping {}
// SAFETY: other threads only load the position words, atomically
// ([`RingFill`]).
unsafe impl Sync for Mapping {}

/// The consumer of one BPF ring buffer.
pub struct Ring {
    /// The ring's fd (a duplicate: the map lives while it is open).
    fd: OwnedFd,
    /// The consumer position page, read-write.
    consumer: Arc<Mapping>,
    /// The producer position page, then the data pages once, read-only.
    producer: Arc<Mapping>,
    /// Data bytes (a power of two).
    size: usize,
    /// Our position (bytes consumed in all).
    pos: usize,
    /// The producer position last read.
    producer_cache: usize,
    /// Set after a record is consumed: before sleeping or declaring the ring
    /// busy, a full fence makes sure the producer sees our position or we
    /// see its record (the kernel wakes only a consumer it knows is behind).
    needs_wakeup: bool,
    /// Where a record that wraps around the end is put together.
    wrapped: Vec<u8>,
}

/// A record, borrowed from the ring (or from the wrap buffer); consumed when
/// dropped.
pub struct Item<'a> {
    data: &'a [u8],
    consumed: usize,
    ring_pos: &'a mut usize,
    consumer: &'a Mapping,
    needs_wakeup: &'a mut bool,
}

impl std::ops::Deref for Item<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl Drop for Item<'_> {
    fn drop(&mut self) {
        consume(
            self.ring_pos,
            self.consumer,
            self.needs_wakeup,
            self.consumed,
        );
    }
}

/// Advances the consumer position past a record of `len` bytes and
/// publishes it.
fn consume(pos: &mut usize, consumer: &Mapping, needs_wakeup: &mut bool, len: usize) {
    *pos += (HDR + len).next_multiple_of(8);
    // Release: the record is read before the kernel may reuse its space.
    position(consumer).store(*pos, Ordering::Release);
    *needs_wakeup = true;
}

/// The data pages: the producer mapping is a page of positions and then
/// `size` data bytes.
fn data_pages(producer: &Mapping, size: usize) -> &[u8] {
    // SAFETY: mapped for the ring's life; the kernel writes records only into
    // space we have consumed, and a record is read only after its header
    // says it is complete.
    unsafe { std::slice::from_raw_parts(producer.ptr.as_ptr().add(producer.len - size), size) }
}

/// The position word at the start of a metadata page.
fn position(page: &Mapping) -> &AtomicUsize {
    // SAFETY: the page is mapped for the ring's life and page-aligned.
    unsafe { &*page.ptr.as_ptr().cast::<AtomicUsize>() }
}

impl Ring {
    /// Maps the ring behind `fd` (a `BPF_MAP_TYPE_RINGBUF` of `size` data
    /// bytes), taking a duplicate of the fd.
    pub fn new(fd: std::os::fd::BorrowedFd<'_>, size: usize) -> std::io::Result<Self> {
        assert!(size.is_power_of_two(), "ring size {size}");
        let fd = fd.try_clone_to_owned()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let consumer = Arc::new(Mapping::new(
            &fd,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            0,
        )?);
        let producer = Arc::new(Mapping::new(&fd, page + size, libc::PROT_READ, page)?);
        let pos = position(&consumer).load(Ordering::Acquire);
        let producer_cache = position(&producer).load(Ordering::Acquire);
        Ok(Self {
            fd,
            consumer,
            producer,
            size,
            pos,
            producer_cache,
            needs_wakeup: false,
            wrapped: Vec::new(),
        })
    }

    /// A reading of how full the ring is, for another part of its reader.
    pub fn fill(&self) -> RingFill {
        RingFill {
            consumer: Arc::clone(&self.consumer),
            producer: Arc::clone(&self.producer),
            size: self.size,
        }
    }

    /// The next record, if one is complete. Only one is outstanding at a
    /// time; it is consumed when dropped.
    #[expect(
        clippy::should_implement_trait,
        reason = "not an iterator: the item borrows the ring"
    )]
    pub fn next(&mut self) -> Option<Item<'_>> {
        loop {
            if self.pos == self.producer_cache {
                if self.needs_wakeup {
                    // Either we see the producer's new record, or it sees
                    // our position and wakes us.
                    atomic::fence(Ordering::SeqCst);
                    self.needs_wakeup = false;
                }
                self.producer_cache = position(&self.producer).load(Ordering::Acquire);
                if self.pos == self.producer_cache {
                    return None;
                }
            }
            let offset = self.pos & (self.size - 1);
            // SAFETY: offsets are 8-aligned and the header never wraps (the
            // data size is a multiple of the page size).
            let header = unsafe {
                &*data_pages(&self.producer, self.size)
                    .as_ptr()
                    .add(offset)
                    .cast::<AtomicU32>()
            }
            .load(Ordering::Acquire);
            if header & BUSY != 0 {
                if !self.needs_wakeup {
                    return None;
                }
                atomic::fence(Ordering::SeqCst);
                self.needs_wakeup = false;
                continue;
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            if header & DISCARD != 0 {
                consume(&mut self.pos, &self.consumer, &mut self.needs_wakeup, len);
                continue;
            }
            let start = offset + HDR;
            let Self {
                producer,
                consumer,
                size,
                pos,
                needs_wakeup,
                wrapped,
                ..
            } = self;
            let data = data_pages(producer, *size);
            let record: &[u8] = if start + len <= *size {
                &data[start..start + len]
            } else {
                // Wraps around the end: its two parts, put together.
                let first = &data[start.min(*size)..];
                wrapped.clear();
                wrapped.extend_from_slice(first);
                wrapped.extend_from_slice(&data[..len - first.len()]);
                wrapped
            };
            return Some(Item {
                data: record,
                consumed: len,
                ring_pos: pos,
                consumer,
                needs_wakeup,
            });
        }
    }
}

/// How full a ring is: bytes the kernel has written that its reader has not
/// consumed. Read by the reader's router while it waits for a full shard
/// queue, when the reader takes nothing from the ring.
pub struct RingFill {
    consumer: Arc<Mapping>,
    producer: Arc<Mapping>,
    size: usize,
}

impl RingFill {
    /// Percent of the ring's data bytes written and not yet consumed.
    pub fn percent(&self) -> u32 {
        let written = position(&self.producer).load(Ordering::Acquire);
        let consumed = position(&self.consumer).load(Ordering::Acquire);
        (written.saturating_sub(consumed).min(self.size) * 100 / self.size) as u32
    }
}

impl std::os::fd::AsRawFd for Ring {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_fd().as_raw_fd()
    }
}
