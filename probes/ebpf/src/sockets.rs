//! Socket syscall tracepoints: plaintext data, connection open and close, and
//! the fd of a TLS session.
//!
//! Why tracepoints: this kernel has no kprobes, and `syscalls:sys_{enter,exit}_*`
//! are a stable ABI (fields at fixed offsets, see
//! `/sys/kernel/tracing/events/syscalls/*/format`: args are 8-byte slots from
//! offset 16, the exit's `ret` is at 16).
//!
//! Pairing: the enter probe saves the arguments in `SYSCALLS` keyed by
//! `pid_tgid` (over the thread's entry from its last call, left idle); the one
//! exit program (attached to every `sys_exit_*` we use)
//! takes them back and acts on the return value — bytes actually moved, the new
//! fd of `accept`, success of `connect`. A thread makes one syscall at a time,
//! so the key is enough.
//!
//! A socket syscall made while the thread is inside `SSL_read`/`SSL_write` (an
//! entry in `TLS_CALLS`) names that session's fd: it is recorded for the TLS
//! return probe, the connection is marked TLS, and its ciphertext is not
//! emitted. A connection whose first plain bytes look like a TLS record header
//! (a handshake made outside the hooked calls) is marked TLS as well.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_loop},
    macros::tracepoint,
    programs::TracePointContext,
};
use tapwire_common::{ConnClose, Direction, DropReason, Kind, MAX_HELLO, Role, Source};

use crate::{
    conn::{key, lookup_or_track, own_port, settle, track},
    emit::{DataCall, count, emit_data, header, next_seq, output_value},
    maps::{
        AGENT_PORTS, CONN_HELLO_DONE, CONN_NO_PAYLOAD, CONN_OPEN_PENDING, CONN_PLAIN, CONN_TLS,
        CONNS, ConnState, LAST_TLS_READ, NOT_TCP, SHAPE_ACCEPT, SHAPE_AGENT_CONNECT, SHAPE_BUF,
        SHAPE_CONNECT, SHAPE_IDLE, SHAPE_IOV, SHAPE_MSG, SSL_FDS, SYSCALLS, SslKey, SyscallArgs,
    },
    select::{is_agent, selected},
    tls::call_in_flight,
};

/// Offset of syscall argument `n` in a `sys_enter_*` record.
const fn arg_off(n: usize) -> usize {
    16 + 8 * n
}
/// Offset of `ret` in a `sys_exit_*` record.
const RET_OFF: usize = 16;

/// iovecs looked at per vectored call; bytes in later ones are not captured
/// (HTTP clients and servers use one to three).
const MAX_IOV: u32 = 8;
/// Records per iovec.
const IOV_CHUNKS: u32 = tapwire_common::MAX_CHUNKS;
/// Records per plain buffer.
const BUF_CHUNKS: u32 = tapwire_common::MAX_CHUNKS;

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: syscall tracepoint records hold six 8-byte args from offset 16.
    unsafe { ctx.read_at::<u64>(arg_off(n)) }.unwrap_or(0)
}

/// Saves the arguments of a socket syscall for the exit probe, unless the
/// thread is inside a TLS call, in which case the fd is handed to it instead.
#[inline(always)]
fn enter(ctx: &TracePointContext, shape: u32, direction: Direction) -> u32 {
    if !selected() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = arg(ctx, 0) as i32 as i64;
    // Inside a TLS call, a syscall on a TCP socket names the session's fd.
    // Other files read inside the call (node reads the time zone file during
    // its first `SSL_write`) are not it.
    if shape != SHAPE_CONNECT
        && shape != SHAPE_ACCEPT
        && let Some(call) = call_in_flight(pid_tgid)
        && let Some(conn) = lookup_or_track(fd, Role::Unknown)
    {
        // SAFETY: live map values of this thread / connection.
        let (ssl, known_fd, flags) = unsafe {
            (*conn).flags |= CONN_TLS;
            (*call).fd = fd;
            ((*call).ssl, (*call).known_fd, (*conn).flags)
        };
        // Written only when it changes: every call of a session makes a
        // syscall on the same fd, and an update costs several lookups. The
        // call's entry read the session's fd already (`known_fd`).
        if known_fd != fd {
            let key = SslKey {
                tgid: pid_tgid >> 32,
                ssl,
            };
            // SAFETY: plain integer value.
            if unsafe { SSL_FDS.get(&key) }.copied() != Some(fd)
                && SSL_FDS.insert(key, fd, 0).is_err()
            {
                count(DropReason::MapInsert, 1);
            }
            // SAFETY: live map value of this thread.
            unsafe { (*call).known_fd = fd };
        }
        // A handshake made inside the first `SSL_write`/`SSL_read`: the
        // exit looks at the connection's first bytes for its ClientHello.
        if flags & CONN_HELLO_DONE != 0 {
            return 0;
        }
    }
    save_syscall(
        pid_tgid,
        SyscallArgs {
            fd,
            ptr: arg(ctx, 1),
            len: arg(ctx, 2),
            shape,
            direction: direction as u32,
        },
    );
    0
}

/// Saves `args` as this thread's syscall in flight: over the thread's idle
/// entry, inserted only by its first call.
#[inline(always)]
fn save_syscall(pid_tgid: u64, args: SyscallArgs) {
    if let Some(saved) = SYSCALLS.get_ptr_mut(pid_tgid) {
        // SAFETY: live map value of this thread; only this thread writes it.
        unsafe { *saved = args };
    } else if SYSCALLS.insert(pid_tgid, args, 0).is_err() {
        count(DropReason::MapInsert, 1);
    }
}

/// `MSG_PEEK` from `<sys/socket.h>`: the bytes stay queued and are read
/// again by a later call, which is the one captured.
const MSG_PEEK: u64 = 2;

/// hook: syscalls:sys_enter_read(fd, buf, count)
#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_BUF, Direction::Ingress)
}

/// hook: syscalls:sys_enter_recvfrom(fd, ubuf, size, flags, addr, addr_len)
#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    if arg(&ctx, 3) & MSG_PEEK != 0 {
        return 0;
    }
    enter(&ctx, SHAPE_BUF, Direction::Ingress)
}

/// hook: syscalls:sys_enter_write(fd, buf, count), sys_enter_sendto(fd, buff, len, …)
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_BUF, Direction::Egress)
}

/// hook: syscalls:sys_enter_readv(fd, vec, vlen)
#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_IOV, Direction::Ingress)
}

/// hook: syscalls:sys_enter_writev(fd, vec, vlen)
#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_IOV, Direction::Egress)
}

/// hook: syscalls:sys_enter_recvmsg(fd, msg, flags)
#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    if arg(&ctx, 2) & MSG_PEEK != 0 {
        return 0;
    }
    enter(&ctx, SHAPE_MSG, Direction::Ingress)
}

/// hook: syscalls:sys_enter_sendmsg(fd, msg, flags)
#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_MSG, Direction::Egress)
}

/// hook: syscalls:sys_enter_connect(fd, uservaddr, addrlen)
#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if is_agent() {
        // Not captured; its local port is noted at exit (`AGENT_PORTS`).
        let args = SyscallArgs {
            fd: arg(&ctx, 0) as i32 as i64,
            ptr: 0,
            len: 0,
            shape: SHAPE_AGENT_CONNECT,
            direction: Direction::Egress as u32,
        };
        save_syscall(bpf_get_current_pid_tgid(), args);
        return 0;
    }
    enter(&ctx, SHAPE_CONNECT, Direction::Egress)
}

/// hook: syscalls:sys_enter_accept(fd, upeer_sockaddr, upeer_addrlen),
/// sys_enter_accept4(fd, upeer_sockaddr, upeer_addrlen, flags)
#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter(&ctx, SHAPE_ACCEPT, Direction::Ingress)
}

/// hook: syscalls:sys_enter_close(fd)
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let fd = arg(&ctx, 0) as i32 as i64;
    if is_agent() {
        if let Some(port) = own_port(fd) {
            let _ = AGENT_PORTS.remove(port);
        }
        return 0;
    }
    if !selected() {
        return 0;
    }
    release((bpf_get_current_pid_tgid() >> 32) as u32, fd);
    0
}

/// hook: syscalls:sys_enter_dup2(oldfd, newfd), sys_enter_dup3(oldfd, newfd, flags)
///
/// `newfd` is closed first when it is open (and not `oldfd`): a connection
/// there ends as with `close`.
#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    if is_agent() || !selected() {
        return 0;
    }
    let (old, new) = (arg(&ctx, 0) as i32 as i64, arg(&ctx, 1) as i32 as i64);
    if old != new {
        release((bpf_get_current_pid_tgid() >> 32) as u32, new);
    }
    0
}

/// `close_range` flag: mark close-on-exec instead of closing.
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;

/// Descriptors `close_range` looks at, from its first: 4,096 covers the
/// default `RLIMIT_NOFILE` (1,024) four times over and costs a few hundred
/// microseconds of map lookups at most. Connections on higher descriptors of
/// a wider range are released when their process exits (the user-space
/// sweep) or their descriptor is reused.
const CLOSE_RANGE_SCAN: u64 = 4096;

/// State handed to [`release_nth`] through `bpf_loop`.
#[repr(C)]
struct RangeCtx {
    tgid: u32,
    first: u32,
}

/// `bpf_loop` callback: releases descriptor `first + index`.
extern "C" fn release_nth(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `RangeCtx` passed to `bpf_loop` by `sys_enter_close_range`.
    let c = unsafe { &*(ctx as *const RangeCtx) };
    release(c.tgid, (c.first as u64 + index) as i64);
    0
}

/// hook: syscalls:sys_enter_close_range(fd, max_fd, flags)
///
/// Closes every descriptor from `fd` to `max_fd` (`CLOSE_RANGE_UNSHARE` closes
/// them in a private copy of the table: the same for this process); with
/// `CLOSE_RANGE_CLOEXEC` nothing closes now.
#[tracepoint]
pub fn sys_enter_close_range(ctx: TracePointContext) -> u32 {
    if is_agent() || !selected() {
        return 0;
    }
    let (first, last, flags) = (arg(&ctx, 0) as u32, arg(&ctx, 1) as u32, arg(&ctx, 2));
    if flags & CLOSE_RANGE_CLOEXEC != 0 || last < first {
        return 0;
    }
    let span = u64::from(last - first) + 1;
    let mut range = RangeCtx {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        first,
    };
    // SAFETY: `release_nth` has the callback signature `bpf_loop` expects and
    // `range` outlives the call.
    unsafe {
        bpf_loop(
            span.min(CLOSE_RANGE_SCAN) as u32,
            release_nth as *mut c_void,
            (&raw mut range).cast(),
            0,
        )
    };
    0
}

/// Ends the connection on descriptor `fd` of process `tgid`, as its close
/// does: the close record goes out and the probes forget the descriptor.
#[inline(always)]
fn release(tgid: u32, fd: i64) {
    let k = key(tgid, fd);
    let _ = NOT_TCP.remove(k);
    if let Some(mut conn) = CONNS.get_ptr_mut(k) {
        // SAFETY: live map value.
        if unsafe { (*conn).flags } & CONN_OPEN_PENDING != 0 {
            // Closed before any data: decided now (left out, or opened).
            match settle(k, fd, conn) {
                Some(c) => conn = c,
                None => {
                    let _ = NOT_TCP.remove(k);
                    return;
                }
            }
        }
        // SAFETY: live map value.
        let (conn_id, skipped_out, skipped_in) =
            unsafe { ((*conn).conn_id, (*conn).skipped_out, (*conn).skipped_in) };
        let close = ConnClose {
            header: header(Kind::ConnClose),
            conn_id,
            seq: next_seq(conn),
            fd: fd as i32,
            _pad0: 0,
            skipped_out,
            skipped_in,
        };
        output_value(&close);
        let _ = CONNS.remove(k);
    }
}

/// hook: syscalls:sys_exit_{read,write,recvfrom,sendto,readv,writev,recvmsg,
/// sendmsg,connect,accept,accept4}(…) -> long
#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(saved) = SYSCALLS.get_ptr_mut(pid_tgid) else {
        return 0;
    };
    // SAFETY: live map value of this thread; copied out, then left idle for
    // the thread's next call.
    let args = unsafe {
        if (*saved).shape == SHAPE_IDLE {
            return 0;
        }
        let args = core::ptr::read(saved);
        (*saved).shape = SHAPE_IDLE;
        args
    };
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    let ret = unsafe { ctx.read_at::<i64>(RET_OFF) }.unwrap_or(-1);
    let tgid = (pid_tgid >> 32) as u32;
    match args.shape {
        SHAPE_AGENT_CONNECT => {
            if (ret == 0 || ret == -115)
                && let Some(port) = own_port(args.fd)
            {
                let _ = AGENT_PORTS.insert(port, 0u8, 0);
            }
        }
        SHAPE_CONNECT => {
            // 0, or -EINPROGRESS for a non-blocking connect: either way the
            // local address and port are already chosen.
            if ret == 0 || ret == -115 {
                retrack(tgid, args.fd, Role::Client);
            }
        }
        SHAPE_ACCEPT => {
            if ret >= 0 {
                retrack(tgid, ret, Role::Server);
            }
        }
        _ => {
            if ret > 0 {
                data(&args, ret as u64);
            }
        }
    }
    0
}

/// Forgets whatever was known about `fd` (a missed close) and tracks it anew.
#[inline(always)]
fn retrack(tgid: u32, fd: i64, role: Role) {
    let k = key(tgid, fd);
    let _ = CONNS.remove(k);
    let _ = NOT_TCP.remove(k);
    let _ = track(fd, role, true);
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper reads user memory safely, failing on bad addresses.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// True if `b` starts like a TLS record: content type 20–23, version 3.x.
#[inline(always)]
fn looks_like_tls(b: [u8; 3]) -> bool {
    (0x14..=0x17).contains(&b[0]) && b[1] == 3 && b[2] <= 4
}

#[inline(always)]
fn data(args: &SyscallArgs, len: u64) {
    let Some(conn) = lookup_or_track(args.fd, Role::Unknown) else {
        return;
    };
    // SAFETY: live map value.
    let mut flags = unsafe { (*conn).flags };
    if flags & CONN_HELLO_DONE == 0 {
        first_bytes(conn, args, len);
        // SAFETY: live map value.
        flags = unsafe { (*conn).flags };
    }
    if flags & CONN_TLS != 0 {
        tls_socket_io(args);
        return;
    }
    let (iov, iovlen) = iovecs(args);
    let call = socket_call(conn, args, Source::Plain);
    if args.shape == SHAPE_BUF {
        emit_data::<BUF_CHUNKS>(&call, args.ptr, len, len, 0);
        return;
    }
    let mut done: u64 = 0;
    let mut i: u32 = 0;
    while i < MAX_IOV {
        if i as u64 >= iovlen || done >= len {
            return;
        }
        let entry = iov + i as u64 * 16;
        let (Some(base), Some(iov_len)) = (read_user::<u64>(entry), read_user::<u64>(entry + 8))
        else {
            return;
        };
        let take = if iov_len < len - done {
            iov_len
        } else {
            len - done
        };
        emit_data::<IOV_CHUNKS>(&call, base, take, len, done);
        done += take;
        i += 1;
    }
}

/// The data call of socket syscall `args` on `conn`.
#[inline(always)]
fn socket_call(conn: *mut ConnState, args: &SyscallArgs, source: Source) -> DataCall {
    DataCall {
        conn,
        // SAFETY: live map value.
        conn_id: unsafe { (*conn).conn_id },
        fd: args.fd,
        direction: args.direction,
        source: source as u32,
    }
}

/// The iovec array and its length of a vectored call: for msghdr,
/// `msg_iov` at 16 and `msg_iovlen` at 24. `(0, 0)` for a plain buffer.
#[inline(always)]
fn iovecs(args: &SyscallArgs) -> (u64, u64) {
    match args.shape {
        SHAPE_BUF => (0, 0),
        SHAPE_IOV => (args.ptr, args.len),
        _ => (
            read_user::<u64>(args.ptr + 16).unwrap_or(0),
            read_user::<u64>(args.ptr + 24).unwrap_or(0),
        ),
    }
}

/// TLS record header: content type, version, length.
const TLS_RECORD_HEADER: u64 = 5;
/// TLS content type `handshake` and handshake type `client_hello` (RFC 8446
/// §5.1, §4).
const TLS_HANDSHAKE: u8 = 22;
const TLS_CLIENT_HELLO: u8 = 1;

/// A connection's first socket bytes (`len` moved by the call in `args`):
/// decides TLS or plain, and copies a ClientHello found there — the first
/// TLS record, at most `MAX_HELLO` bytes — as one `Source::Handshake`
/// record, for the server name. Runs once per connection, or twice when a
/// server's first read took the record header alone (OpenSSL reads the 5
/// header bytes, then the rest): the header goes out as it is and the next
/// read brings the message. Nothing after the ClientHello is copied.
#[inline(always)]
fn first_bytes(conn: *mut ConnState, args: &SyscallArgs, len: u64) {
    // SAFETY: live map value.
    let (flags, body) = unsafe { ((*conn).flags, (*conn).hello_body as u64) };
    // SAFETY: as above.
    unsafe {
        (*conn).flags |= CONN_HELLO_DONE;
        (*conn).hello_body = 0;
    }
    let (iov, _) = iovecs(args);
    let (first, first_len) = if args.shape == SHAPE_BUF {
        (args.ptr, len)
    } else {
        let (Some(base), Some(n)) = (read_user::<u64>(iov), read_user::<u64>(iov + 8)) else {
            return;
        };
        (base, n.min(len))
    };
    let ingress = args.direction == Direction::Ingress as u32;
    let mut take = 0;
    let head = if first_len >= 3 {
        read_user::<[u8; 3]>(first)
    } else {
        None
    };
    if body > 0 {
        // The message whose record header the previous read took.
        if ingress && read_user::<u8>(first) == Some(TLS_CLIENT_HELLO) {
            take = body
                .min(first_len)
                .min(MAX_HELLO as u64 - TLS_RECORD_HEADER);
        }
    } else if let Some(head) = head
        && looks_like_tls(head)
    {
        // SAFETY: live map value.
        unsafe { (*conn).flags |= CONN_TLS };
        if head[0] == TLS_HANDSHAKE
            && first_len >= TLS_RECORD_HEADER
            && let Some(rec) = read_user::<[u8; 5]>(first)
        {
            let body_len = u16::from_be_bytes([rec[3], rec[4]]) as u64;
            if first_len == TLS_RECORD_HEADER {
                if ingress {
                    // Header alone: sent now, the message comes next.
                    take = TLS_RECORD_HEADER;
                    // SAFETY: live map value.
                    unsafe {
                        (*conn).flags &= !CONN_HELLO_DONE;
                        (*conn).hello_body = body_len as u32;
                    }
                }
            } else if read_user::<u8>(first + TLS_RECORD_HEADER) == Some(TLS_CLIENT_HELLO) {
                take = (TLS_RECORD_HEADER + body_len).min(first_len);
            }
        }
    } else if flags & CONN_TLS == 0 {
        // SAFETY: live map value.
        unsafe { (*conn).flags |= CONN_PLAIN };
    }
    if take == 0 || flags & CONN_NO_PAYLOAD != 0 {
        return;
    }
    let call = socket_call(conn, args, Source::Handshake);
    let take = take.min(MAX_HELLO as u64);
    emit_data::<1>(&call, first, take, take, 0);
}

/// Ciphertext moved on a TLS socket outside a TLS call (memory-BIO
/// libraries): a read names the fd for this thread's next TLS call.
#[inline(always)]
fn tls_socket_io(args: &SyscallArgs) {
    if args.direction == Direction::Ingress as u32 {
        if LAST_TLS_READ
            .insert(bpf_get_current_pid_tgid(), args.fd, 0)
            .is_err()
        {
            count(DropReason::MapInsert, 1);
        }
    }
}
