//! Records into the current CPU's ring buffer, and drop counters.
//!
//! Records go in with `BPF_RB_NO_WAKEUP`: a wake-up per record costs about
//! 10 µs on this machine, batched about 2. The reader polls on a short timer;
//! once the ring holds more than `size / CONFIG.wake_divisor` bytes the record
//! that crosses the mark forces a wake-up, so a burst is drained early.
//!
//! Graceful overload: once a ring holds more than `CONFIG.overload_percent`
//! of its size, data records copy only a call's first `OVERLOAD_PREFIX`
//! bytes and carry the count of the rest (`Data::shed_len`), so user space
//! keeps every head and stays in step through bodies it skips by their
//! framing, instead of losing whole records (a hole of unknown length).
//! Both marks are read with `bpf_ringbuf_query` (Linux 5.8, like the rings).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    btf_maps::RingBuf,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_probe_read_user, bpf_ringbuf_output, bpf_ringbuf_query},
    },
};
use tapwire_common::{Data, Direction, DropReason, Header, Kind, MAX_PAYLOAD, OVERLOAD_PREFIX};

use crate::maps::{CONFIG, CONN_NO_PAYLOAD, ConnState, DROPS, RING_TEMPLATE_BYTES, RINGS, SCRATCH};

type Ring = RingBuf<u8, RING_TEMPLATE_BYTES>;

/// Adds `n` to this CPU's counter for `reason`.
#[inline(always)]
pub fn count(reason: DropReason, n: u64) {
    if let Some(p) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU's programs touch it and BPF
        // programs are not preempted by each other on one CPU.
        unsafe { *p += n };
    }
}

/// The ring of the CPU we run on.
#[inline(always)]
fn ring() -> Option<&'static Ring> {
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    RINGS.get(cpu)
}

/// Bytes waiting in `ring` and its size.
#[inline(always)]
fn fill(ring: &Ring) -> (u64, u64) {
    let ring_ptr = core::ptr::from_ref(ring).cast_mut().cast::<c_void>();
    // SAFETY: `ring_ptr` is the inner map returned by the outer lookup.
    unsafe {
        (
            bpf_ringbuf_query(ring_ptr, BPF_RB_AVAIL_DATA.into()),
            bpf_ringbuf_query(ring_ptr, BPF_RB_RING_SIZE.into()),
        )
    }
}

/// Wake-up flag for a record of `len` bytes going into a ring of `size`
/// bytes that holds `avail`.
#[inline(always)]
fn wake_flag_at(avail: u64, size: u64, len: u64, divisor: u32) -> u64 {
    if avail + len > size / divisor.max(1) as u64 {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// Wake-up flag for a record of `len` bytes about to go into `ring`.
#[inline(always)]
fn wake_flag(ring: &Ring, len: u64) -> u64 {
    let (avail, size) = fill(ring);
    let divisor = CONFIG.get(0).map(|c| c.wake_divisor).unwrap_or(8);
    wake_flag_at(avail, size, len, divisor)
}

/// Whether a ring of `size` bytes holding `avail` is past the high-water mark
/// of graceful overload (`percent` of its size; 100 or more: never).
#[inline(always)]
fn overloaded(avail: u64, size: u64, percent: u32) -> bool {
    percent < 100 && avail * 100 > size * percent as u64
}

/// Outputs `len` bytes at `ptr` as one record. `len` must be verifier-bounded.
#[inline(always)]
fn output(ptr: *const u8, len: u64) -> bool {
    output_flags(ptr, len, false)
}

#[inline(always)]
fn output_flags(ptr: *const u8, len: u64, wake: bool) -> bool {
    let Some(ring) = ring() else {
        count(DropReason::Internal, 1);
        return false;
    };
    let flags = if wake {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        wake_flag(ring, len)
    };
    output_to(ring, ptr, len, flags)
}

/// Outputs `len` bytes at `ptr` into `ring` with wake-up `flags`; counts a
/// full ring.
#[inline(always)]
fn output_to(ring: &Ring, ptr: *const u8, len: u64, flags: u64) -> bool {
    let ring_ptr = core::ptr::from_ref(ring).cast_mut().cast::<c_void>();
    // SAFETY: `ptr` points to `len` readable bytes (a stack value or scratch).
    let ret = unsafe { bpf_ringbuf_output(ring_ptr, ptr.cast_mut().cast(), len, flags) };
    if ret != 0 {
        count(DropReason::RingFull, 1);
        return false;
    }
    true
}

/// Outputs a fixed-size record (open, close, exec, exit).
#[inline(always)]
pub fn output_value<T>(value: &T) -> bool {
    output(core::ptr::from_ref(value).cast(), size_of::<T>() as u64)
}

/// Outputs a rare fixed-size record (exec, exit) and wakes the reader now.
#[inline(always)]
pub fn output_value_wake<T>(value: &T) -> bool {
    output_flags(
        core::ptr::from_ref(value).cast(),
        size_of::<T>() as u64,
        true,
    )
}

/// A header for a record of `kind` made now on this thread.
#[inline(always)]
pub fn header(kind: Kind) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    Header {
        kind: kind as u32,
        // SAFETY: helpers without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: as above.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    }
}

/// Takes the connection's next sequence number.
///
/// A plain increment: aya-build compiles for BPF CPU v1, which has no
/// fetch-and-add (using the result of an atomic add is rejected by LLVM there).
/// Two threads on two CPUs using one socket in the same instant could take the
/// same number; such ties are broken by the header timestamp in user space.
#[inline(always)]
pub fn next_seq(conn: *mut ConnState) -> u64 {
    // SAFETY: `conn` is a live map value.
    unsafe {
        let seq = (*conn).seq;
        (*conn).seq = seq + 1;
        seq
    }
}

/// What a data call is about.
pub struct DataCall {
    pub conn: *mut ConnState,
    pub conn_id: u64,
    pub fd: i64,
    pub direction: u32,
    pub source: u32,
}

/// State handed to [`chunk`] through `bpf_loop`: everything one record needs
/// except its index. Lives on the caller's stack.
#[repr(C)]
struct ChunkCtx {
    hdr: Header,
    conn_id: u64,
    /// Sequence number of chunk 0; the block was reserved before the loop.
    base_seq: u64,
    buf: u64,
    len: u64,
    call_len: u64,
    base: u64,
    fd: i64,
    direction: u32,
    source: u32,
    /// The call is one record whatever its length: its ring was past the
    /// high-water mark when the call began, so only a prefix is copied.
    one_record: u32,
    /// `CONFIG.wake_divisor` and `CONFIG.overload_percent`, read once per call.
    wake_divisor: u32,
    overload_percent: u32,
    _pad0: u32,
}

/// `bpf_loop` callback: emits chunk `index` of the call described by `ctx`.
///
/// Verifier: a plain bounded loop over up to 512 chunks (8 MiB) was rejected
/// ("BPF program is too large", every iteration is a new state); `bpf_loop`
/// verifies this body once.
extern "C" fn chunk(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `ChunkCtx` passed to `bpf_loop` by `emit_data`.
    let c = unsafe { &*(ctx as *const ChunkCtx) };
    let off = index * MAX_PAYLOAD as u64;
    if off >= c.len {
        return 1;
    }
    // The bytes this record stands for.
    let mut span = c.len - off;
    if c.one_record == 0 && span > MAX_PAYLOAD as u64 {
        span = MAX_PAYLOAD as u64;
    }
    let Some(ring) = ring() else {
        count(DropReason::Internal, 1);
        return 1;
    };
    let (avail, size) = fill(ring);
    // Graceful overload: past the high-water mark the call's first record
    // keeps a prefix (where heads are) and later records keep nothing; each
    // says how many bytes it left out, so the stream stays in sequence.
    let keep = if c.one_record == 0 && !overloaded(avail, size, c.overload_percent) {
        span
    } else if index == 0 {
        span.min(OVERLOAD_PREFIX as u64)
    } else {
        0
    };
    let shed = span - keep;
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        count(DropReason::Internal, 1);
        return 1;
    };
    // SAFETY: `scratch` is this CPU's slot; nothing else runs on this CPU until
    // we return. Field by field, not a `Data` built on the stack: this
    // callback's stack adds to its caller's, and together they must stay
    // within the verifier's 512 bytes.
    unsafe {
        let d = &raw mut (*scratch).data;
        (*d).header = c.hdr;
        (*d).conn_id = c.conn_id;
        (*d).seq = c.base_seq + index;
        (*d).call_len = c.call_len;
        (*d).offset = c.base + off;
        (*d).cap_len = keep as u32;
        (*d).direction = c.direction;
        (*d).source = c.source;
        (*d).fd = c.fd as i32;
        (*d).shed_len = shed;
    }
    let mut copied = 0;
    if keep > 0 {
        // Verifier: re-mask so the bound survives LLVM's register juggling
        // (keep in 1..=MAX_PAYLOAD, a power of two, so
        // `((keep - 1) & (MAX - 1)) + 1 == keep`).
        copied = ((keep - 1) & (MAX_PAYLOAD as u64 - 1)) + 1;
        // SAFETY: the destination is the scratch payload of MAX_PAYLOAD bytes
        // and `copied` ≤ MAX_PAYLOAD; the helper reads user memory safely.
        let ret = unsafe {
            bpf_probe_read_user(
                (&raw mut (*scratch).payload).cast(),
                copied as u32,
                (c.buf + off) as *const c_void,
            )
        };
        if ret != 0 {
            count(DropReason::CopyFailed, 1);
            count(DropReason::LostBytes, span);
            return 0;
        }
    }
    let len = size_of::<Data>() as u64 + copied;
    let flags = wake_flag_at(avail, size, len, c.wake_divisor);
    if !output_to(ring, scratch.cast::<u8>(), len, flags) {
        count(DropReason::LostBytes, span);
    } else if shed > 0 {
        count(DropReason::OverloadRecords, 1);
        count(DropReason::OverloadShedBytes, shed);
    }
    0
}

/// Emits `len` bytes of user memory at `buf` as data records of at most
/// `MAX_PAYLOAD` bytes each, at most `CHUNKS` of them. `call_len` is the whole
/// call's length and `base` the offset of `buf` within it (vectored calls pass
/// each iovec). For a connection whose payload a filter skips, the bytes are
/// only counted.
#[inline(always)]
pub fn emit_data<const CHUNKS: u32>(call: &DataCall, buf: u64, len: u64, call_len: u64, base: u64) {
    if len == 0 {
        return;
    }
    // SAFETY: live map value.
    if unsafe { (*call.conn).flags } & CONN_NO_PAYLOAD != 0 {
        // Only counted, for the close record. A plain add: two threads
        // moving bytes on one socket in the same instant may lose a count.
        // SAFETY: as above.
        unsafe {
            if call.direction == Direction::Egress as u32 {
                (*call.conn).skipped_out += len;
            } else {
                (*call.conn).skipped_in += len;
            }
        }
        return;
    }
    let (wake_divisor, overload_percent) = CONFIG
        .get(0)
        .map(|c| (c.wake_divisor, c.overload_percent))
        .unwrap_or((8, 100));
    // A call that begins past the high-water mark is one record, a prefix and
    // the count of the rest, however long it is.
    let one_record = ring().is_some_and(|r| {
        let (avail, size) = fill(r);
        overloaded(avail, size, overload_percent)
    });
    let mut chunks = len.div_ceil(MAX_PAYLOAD as u64);
    let max = if one_record {
        chunks = 1;
        len
    } else {
        CHUNKS as u64 * MAX_PAYLOAD as u64
    };
    if chunks > CHUNKS as u64 {
        chunks = CHUNKS as u64;
        count(DropReason::CallTooLarge, 1);
        count(DropReason::LostBytes, len - max);
    }
    // SAFETY: live map value.
    let base_seq = unsafe {
        let seq = (*call.conn).seq;
        (*call.conn).seq = seq + chunks;
        seq
    };
    let mut ctx = ChunkCtx {
        hdr: header(Kind::Data),
        conn_id: call.conn_id,
        base_seq,
        buf,
        len: if len > max { max } else { len },
        call_len,
        base,
        fd: call.fd,
        direction: call.direction,
        source: call.source,
        one_record: one_record as u32,
        wake_divisor,
        overload_percent,
        _pad0: 0,
    };
    // SAFETY: `chunk` has the callback signature `bpf_loop` expects and `ctx`
    // outlives the call.
    unsafe {
        bpf_loop(
            chunks as u32,
            chunk as *mut c_void,
            (&raw mut ctx).cast(),
            0,
        )
    };
}
