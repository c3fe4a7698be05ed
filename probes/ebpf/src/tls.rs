//! TLS plaintext: uprobes in libraries with C calling conventions —
//! OpenSSL/BoringSSL and GnuTLS (`gnutls_record_recv`/`_send2`, same shape as
//! `SSL_read`/`SSL_write`, session end `gnutls_deinit`/`gnutls_bye`). The
//! session pointer is the first argument. Go has its own probes
//! ([`crate::gotls`]).
//!
//! Why here: inside the library, before encryption and after decryption, the
//! bytes are the application's own, with no keys needed. Reads are complete only
//! when the call returns, so both directions are copied at return from the buffer
//! saved at entry: for reads this is the only choice; for writes it also avoids
//! copying a buffer twice when a non-blocking `SSL_write` fails with
//! `SSL_ERROR_WANT_WRITE` and is retried, and the socket write inside the call
//! has named the fd by then (on a session's first write nothing else could).
//!
//! Pairing: the entry saves `(ssl, buf, out)` in `TLS_CALLS` keyed by
//! `pid_tgid`; the return takes it back. A thread's entry stays in the map
//! between its calls, marked idle (`live` 0), and the next call writes over
//! it: an LRU insert and delete per call were a quarter of this program's
//! time. Both are one session program
//! ([`ssl_session`]) where the kernel has uprobe sessions (6.13+), else a
//! uprobe ([`ssl_enter`]) and a uretprobe ([`ssl_return`]). The attach
//! cookie (`tls_fn::*`) says which calling convention the hooked address has: user
//! space may attach at an internal function (`ssl_read_internal`, …) that both
//! `SSL_read` and `SSL_read_ex` call, which has the `_ex` shape.
//!
//! Session → socket: the read/write syscall made inside the call on the same
//! thread names the fd (see [`crate::sockets`]); it is remembered per `SSL *` in
//! `SSL_FDS` for calls served from buffered records without a syscall.
//! Libraries driven through memory BIOs (node) make no socket syscall inside
//! the call: there the session takes the fd of the thread's last ciphertext
//! read (`LAST_TLS_READ`) at its first call.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tapwire_common::{Direction, DropReason, Role, Source, tls_fn};

use crate::{
    conn::lookup_or_track,
    emit::{DataCall, count, emit_data},
    maps::{CONN_TLS, LAST_TLS_READ, SSL_FDS, SslKey, TLS_CALLS, TlsCall},
    select::tls_selected,
};

const FN_READ: u32 = tls_fn::READ as u32;
const FN_READ_EX: u32 = tls_fn::READ_EX as u32;
const FN_WRITE: u32 = tls_fn::WRITE as u32;

/// Records per TLS call: a 5 MiB `SSL_write_ex` (python's `sendall`) is one call.
const TLS_CHUNKS: u32 = tapwire_common::MAX_CHUNKS;

/// hook: libssl SSL_read/SSL_read_ex/SSL_write/SSL_write_ex (or the internal
/// function they call, `_ex` shape); libgnutls `ssize_t
/// gnutls_record_recv(gnutls_session_t, void *, size_t)` and
/// `gnutls_record_send2(session, const void *, size_t, size_t, unsigned)` —
/// entry; cookie = `tls_fn::*`.
#[uprobe]
pub fn ssl_enter(ctx: ProbeContext) -> u32 {
    if tls_selected() {
        let pid_tgid = bpf_get_current_pid_tgid();
        save_call(&ctx, pid_tgid, 0, TLS_CALLS.get_ptr_mut(pid_tgid));
    }
    0
}

/// hook: return of the functions [`ssl_enter`] is attached to, and of NSPR's
/// `PR_Read`/`PR_Write`/`PR_Recv`/`PR_Send` (entry: [`crate::nss::nss_enter`],
/// which names the fd itself).
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(saved) = call_in_flight(pid_tgid) {
        take_and_complete(pid_tgid, saved, ctx.ret::<i64>() as i32 as i64);
    }
    0
}

/// This thread's TLS call in flight, if any.
#[inline(always)]
pub fn call_in_flight(pid_tgid: u64) -> Option<*mut TlsCall> {
    let saved = TLS_CALLS.get_ptr_mut(pid_tgid)?;
    // SAFETY: live map value of this thread.
    (unsafe { (*saved).live } != 0).then_some(saved)
}

/// Saves `call` as this thread's call in flight: over the thread's idle
/// entry, inserted only by its first call.
#[inline(always)]
pub fn begin_call(pid_tgid: u64, call: TlsCall) {
    begin_call_at(TLS_CALLS.get_ptr_mut(pid_tgid), pid_tgid, call);
}

/// [`begin_call`] with the thread's entry already looked up (`entry`).
#[inline(always)]
fn begin_call_at(entry: Option<*mut TlsCall>, pid_tgid: u64, call: TlsCall) {
    if let Some(saved) = entry {
        // SAFETY: live map value of this thread; only this thread writes it.
        unsafe { *saved = call };
    } else if TLS_CALLS.insert(pid_tgid, call, 0).is_err() {
        count(DropReason::MapInsert, 1);
    }
}

/// Takes the call `saved` (this thread's `TLS_CALLS` entry, in flight),
/// leaving the entry idle, and emits its plaintext for return value `ret`.
#[inline(always)]
fn take_and_complete(pid_tgid: u64, saved: *mut TlsCall, ret: i64) {
    // SAFETY: live map value of this thread; copied before it is marked idle.
    let call = unsafe {
        let call = core::ptr::read(saved);
        (*saved).live = 0;
        call
    };
    complete_call(pid_tgid, &call, ret);
}

/// hook: the functions [`ssl_enter`] hooks, as one session probe (a
/// `uprobe_multi` link of attach type `BPF_TRACE_UPROBE_SESSION`, Linux
/// 6.13+): the same program runs at entry and, if the entry returned 0, at the
/// call's return. Entry in a process outside the selection returns 1, so the
/// kernel arms no return probe for the call: that process pays one emulated
/// probe hit per call instead of two traps.
///
/// Entry or return: a call saved by this thread whose entry stack pointer is
/// one return address below the current one is returning (at entry `rsp`
/// points at the return address, which `ret` pops). A call saved by a
/// uretprobe-paired entry has `sp` 0 and never matches.
///
/// The thread's entry is looked up first, and once: a return then needs no
/// other lookup (its call was in the selection when it began, and is
/// completed like a uretprobe's, [`ssl_return`]; events of a process a
/// filter leaves out since are dropped by the agent), and an entry writes
/// over it. A process outside the selection pays that lookup, a miss, on
/// top of the selection's.
#[uprobe]
pub fn ssl_session(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the context is this probe's saved registers.
    let sp = unsafe { (*ctx.regs).rsp };
    let entry = TLS_CALLS.get_ptr_mut(pid_tgid);
    if let Some(saved) = entry {
        // SAFETY: live map value of this thread.
        let (live, saved_sp) = unsafe { ((*saved).live, (*saved).sp) };
        if live != 0 && saved_sp != 0 && saved_sp + 8 == sp {
            // SAFETY: as above.
            let ret = unsafe { (*ctx.regs).rax } as i32 as i64;
            take_and_complete(pid_tgid, saved, ret);
            return 0;
        }
    }
    if !tls_selected() {
        return 1;
    }
    save_call(&ctx, pid_tgid, sp, entry);
    0
}

/// Saves the call's arguments for its return over thread `pid_tgid`'s
/// `entry` (or a new one), with the session's fd as `SSL_FDS` knows it, and
/// names a memory-BIO session's fd. `sp` is the entry stack pointer of a
/// session probe, or 0.
#[inline(always)]
fn save_call(ctx: &ProbeContext, pid_tgid: u64, sp: u64, entry: Option<*mut TlsCall>) {
    // SAFETY: valid context pointer of this uprobe.
    let func = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    let ex = func == FN_READ_EX || func == tls_fn::WRITE_EX as u32;
    let ssl = ctx.arg::<u64>(0).unwrap_or(0);
    let key = SslKey {
        tgid: pid_tgid >> 32,
        ssl,
    };
    // SAFETY: plain integer values; only a copy is used.
    let known_fd = match unsafe { SSL_FDS.get(&key) }.copied() {
        Some(fd) => fd,
        // Memory-BIO session: the ciphertext it consumes was last read from
        // this fd on this thread. A syscall inside the call still overrides.
        // SAFETY: as above.
        None => match unsafe { LAST_TLS_READ.get(pid_tgid) }.copied() {
            Some(fd) if SSL_FDS.insert(key, fd, 0).is_ok() => fd,
            Some(_) => {
                count(DropReason::MapInsert, 1);
                -1
            }
            None => -1,
        },
    };
    let call = TlsCall {
        ssl,
        buf: ctx.arg::<u64>(1).unwrap_or(0),
        out: if ex {
            ctx.arg::<u64>(3).unwrap_or(0)
        } else {
            0
        },
        fd: -1,
        known_fd,
        sp,
        func,
        live: 1,
    };
    begin_call_at(entry, pid_tgid, call);
}

/// Emits the plaintext of a completed call that returned `ret`.
#[inline(always)]
fn complete_call(pid_tgid: u64, call: &TlsCall, ret: i64) {
    let len = match call.func {
        FN_READ | FN_WRITE => {
            if ret <= 0 {
                return;
            }
            ret as u64
        }
        _ => {
            if ret != 1 {
                return;
            }
            // SAFETY: the helper reads user memory safely.
            match unsafe { bpf_probe_read_user(call.out as *const u64) } {
                Ok(n) => n,
                Err(_) => {
                    count(DropReason::CopyFailed, 1);
                    return;
                }
            }
        }
    };
    if len == 0 {
        return;
    }
    let key = SslKey {
        tgid: pid_tgid >> 32,
        ssl: call.ssl,
    };
    let is_read = call.func == FN_READ || call.func == FN_READ_EX;
    let fd = if call.fd >= 0 {
        call.fd
    } else {
        // SAFETY: plain integer value.
        match unsafe { SSL_FDS.get(&key) } {
            Some(fd) => *fd,
            None => {
                count(DropReason::TlsNoFd, 1);
                return;
            }
        }
    };
    let direction = if is_read {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    emit_plaintext(fd, direction, call.buf, len);
}

/// Emits `len` plaintext bytes at user address `buf` on socket `fd` of the
/// current process, marking the connection as TLS (its socket bytes are
/// ciphertext from now on). Shared by every TLS library's probes.
#[inline(always)]
pub fn emit_plaintext(fd: i64, direction: Direction, buf: u64, len: u64) {
    let Some(conn) = lookup_or_track(fd, Role::Unknown) else {
        count(DropReason::TlsNoFd, 1);
        return;
    };
    // SAFETY: live map value.
    let conn_id = unsafe {
        (*conn).flags |= CONN_TLS;
        (*conn).conn_id
    };
    let data = DataCall {
        conn,
        conn_id,
        fd,
        direction: direction as u32,
        source: Source::Tls as u32,
    };
    emit_data::<TLS_CHUNKS>(&data, buf, len, len, 0);
}

/// hook: libssl `void SSL_free(SSL *s)` and `int SSL_shutdown(SSL *s)`,
/// libgnutls `void gnutls_deinit(gnutls_session_t)` and `int
/// gnutls_bye(gnutls_session_t, gnutls_close_request_t)`, libnspr4 `PRStatus
/// PR_Close(PRFileDesc *)` entry: the session ends, forget its fd (the
/// pointer may be reused).
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ssl = ctx.arg::<u64>(0).unwrap_or(0);
    let _ = SSL_FDS.remove(SslKey {
        tgid: pid_tgid >> 32,
        ssl,
    });
    0
}
