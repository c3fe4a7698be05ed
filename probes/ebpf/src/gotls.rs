//! Go `crypto/tls` plaintext: uprobes in Go executables on
//! `crypto/tls.(*Conn).Write` and `(*Conn).Read` (Go ≥ 1.17, register ABI).
//!
//! Why here and how calls pair up (user space chooses the addresses, see
//! `dataplane/src/capture/golang.rs`):
//! - [`go_tls_enter`] sits on the stack check's `jbe` at the function entry
//!   (arguments still in `RAX` = `*Conn`, `RBX`/`RCX` = `b`'s pointer and
//!   length). `Write` emits `b` there: Go's `Write` sends all of it or fails
//!   the connection for good. `Read` saves the socket and `b` for the
//!   probes below, keyed by `(tgid, goroutine)`: `R14` holds the running
//!   goroutine, and a goroutine blocked in `Read` may resume on another thread.
//! - [`go_tls_read_copy`] sits on the one `call runtime.memmove` in `Read`
//!   that copies plaintext into `b`: `RBX` = source, `RCX` = length.
//! - [`go_tls_return`] sits on each `RET` of `Read` when a build has no such
//!   call: `RAX` = bytes read into the saved `b`.
//!
//! No uretprobes: they rewrite the return address on the goroutine stack,
//! which Go moves when it grows.
//!
//! Socket: `*Conn` → `conn` (a `net.Conn` interface, data word at +8) →
//! `*net.TCPConn` → `fd *netFD` → `pfd.Sysfd`, with offsets from the attach
//! cookie (`tapwire_common::go_tls`).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::uprobe,
    programs::ProbeContext,
};
use tapwire_common::{Direction, DropReason, go_tls};

use crate::{
    emit::count,
    maps::{GO_CALLS, GoCall, GoKey},
    select::tls_selected,
    tls::emit_plaintext,
};

/// `EFLAGS` carry and zero flags: `jbe` is taken when either is set.
const CF_ZF: u64 = 1 | 1 << 6;

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper reads user memory safely, failing on bad addresses.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// The socket fd of the `*tls.Conn` at `conn`.
#[inline(always)]
fn conn_fd(conn: u64, cookie: u64) -> Option<i64> {
    let (conn_off, fd_off, sysfd_off) = go_tls::offsets(cookie);
    // Interface data word: the `*net.TCPConn`.
    let tcp_conn = read_user::<u64>(conn + conn_off + 8)?;
    let net_fd = read_user::<u64>(tcp_conn + fd_off)?;
    let fd = read_user::<i64>(net_fd + sysfd_off)?;
    (0..=i32::MAX as i64).contains(&fd).then_some(fd)
}

#[inline(always)]
fn key(ctx: &ProbeContext) -> GoKey {
    GoKey {
        tgid: bpf_get_current_pid_tgid() >> 32,
        // SAFETY: `regs` is this probe's valid register context.
        goroutine: unsafe { (*ctx.regs).r14 },
    }
}

/// hook: Go `func (c *crypto/tls.Conn) Write(b []byte) (int, error)` and
/// `Read(b []byte) (int, error)`, at entry or on the stack check's `jbe`;
/// ABIInternal: `RAX` = c, `RBX` = b.ptr, `RCX` = b.len, `R14` = g.
#[uprobe]
pub fn go_tls_enter(ctx: ProbeContext) -> u32 {
    if !tls_selected() {
        return 0;
    }
    // SAFETY: valid context pointer of this uprobe.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // SAFETY: `regs` is this probe's valid register context.
    let (conn, buf, len, eflags) = unsafe {
        let r = &*ctx.regs;
        (r.rax, r.rbx, r.rcx, r.eflags)
    };
    if cookie & go_tls::STACK_CHECK != 0 && eflags & CF_ZF != 0 {
        // The stack grows first; the function starts over and comes back here.
        return 0;
    }
    let Some(fd) = conn_fd(conn, cookie) else {
        count(DropReason::TlsNoFd, 1);
        return 0;
    };
    if go_tls::shape(cookie) == go_tls::WRITE {
        if len > 0 {
            emit_plaintext(fd, Direction::Egress, buf, len);
        }
        return 0;
    }
    let _ = GO_CALLS.insert(key(&ctx), GoCall { fd, buf }, 0);
    0
}

/// hook: the `call runtime.memmove(to, from, n)` inside Go's `(*Conn).Read`
/// that copies plaintext into `b`: `RBX` = from, `RCX` = n.
#[uprobe]
pub fn go_tls_read_copy(ctx: ProbeContext) -> u32 {
    // SAFETY: plain integer values, copied out.
    let Some(call) = (unsafe { GO_CALLS.get(&key(&ctx)) }).copied() else {
        return 0;
    };
    // SAFETY: `regs` is this probe's valid register context.
    let (src, len) = unsafe { ((*ctx.regs).rbx, (*ctx.regs).rcx) };
    if len > 0 {
        emit_plaintext(call.fd, Direction::Ingress, src, len);
    }
    0
}

/// hook: a `RET` of Go's `(*Conn).Read`: `RAX` = n, read into the `b` saved
/// at entry.
#[uprobe]
pub fn go_tls_return(ctx: ProbeContext) -> u32 {
    let k = key(&ctx);
    // SAFETY: plain integer values, copied out.
    let Some(call) = (unsafe { GO_CALLS.get(&k) }).copied() else {
        return 0;
    };
    let _ = GO_CALLS.remove(&k);
    // SAFETY: `regs` is this probe's valid register context.
    let n = unsafe { (*ctx.regs).rax } as i64;
    if n > 0 {
        emit_plaintext(call.fd, Direction::Ingress, call.buf, n as u64);
    }
    0
}
