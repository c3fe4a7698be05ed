//! Allocations per transaction on a shard's steady path: a shard that has
//! seen every connection once ([`tapwire_perf::shard_feed`]) is fed whole
//! exchanges, and every allocation on the thread is counted. Each bound is
//! what the shard makes, item by item; a change that adds one fails here,
//! where the bench's time per transaction could not tell it from noise.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

use tapwire::pipeline::batch;
use tapwire_perf::shard_feed::{CONNS, Feed, ROUND};

/// mimalloc (the agent's allocator), counting this thread's allocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn counted() {
    // `try_with`: a thread being torn down has no counter, and is not measured.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to mimalloc unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: as the caller's.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: as the caller's.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: as the caller's.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) per transaction once every connection
/// has had one, over `ROUND * 64` transactions.
fn per_transaction(body: usize, objects: bool) -> f64 {
    batch::start();
    let mut feed = Feed::new(body, objects);
    for _ in 0..2 * CONNS {
        feed.exchange();
    }
    let transactions = ROUND * 64;
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..transactions {
        feed.exchange();
    }
    let made = ALLOCATIONS.with(Cell::get) - before;
    made as f64 / transactions as f64
}

#[test]
fn a_transaction_allocates_no_more_than_it_does_today() {
    let mut report = String::new();
    let mut over = Vec::new();
    // Blocks of events, one or two per round of `ROUND` transactions.
    let blocks = 0.25;
    // With objects: the request's and the response's header block, the
    // response body's buffer and the `Bytes` that owns it with its share of
    // the memory budget, and the request record the objects' tickets and
    // `artifact_record` events share (it holds their receipt and summary).
    let objects = 5.0 + blocks;
    for (name, body, with_objects, bound) in [
        ("HTTPS 1 KiB, objects to S3", 1024, true, objects),
        ("HTTPS 1 KiB, events only", 1024, false, blocks),
        ("HTTPS 64 KiB, objects to S3", 64 << 10, true, objects),
    ] {
        let n = per_transaction(body, with_objects);
        report.push_str(&format!("{name}: {n:.2} allocations per transaction\n"));
        if n > bound {
            over.push(format!("{name}: {n:.2} > {bound}"));
        }
    }
    eprint!("{report}");
    assert!(over.is_empty(), "{over:?}\n{report}");
}
