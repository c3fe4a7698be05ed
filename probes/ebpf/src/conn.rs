//! File descriptor → TCP connection.
//!
//! Syscall tracepoints see only an fd. To know whether it is an AF_INET/AF_INET6
//! stream socket, and its addresses, we follow kernel pointers from the current
//! task: `task->files->fdt->fd[fd]` is the `struct file`; its inode mode says
//! socket; `file->private_data` is the `struct socket` (type) whose `sk` holds
//! family, addresses and ports. The field offsets come from the running
//! kernel's BTF through `CONFIG` (there is no CO-RE for Rust programs here). A
//! failed read means "not a TCP socket" and is counted.
//!
//! The walk runs once per (process, fd): the result is kept in `CONNS` (a TCP
//! socket) or `NOT_TCP` (anything else, or a socket left out on purpose) until
//! `close`.
//!
//! Filters (`tap.filters`): a process user space marked in `FILTERED` has its
//! connections left out like an excluded direction, or tracked without
//! payload (`CONN_NO_PAYLOAD`), decided here once per connection.
//!
//! The agent's own traffic: its sockets are never walked (`select`), and the
//! local port of each connection it opens is kept in `AGENT_PORTS` from
//! `connect` until `close`. A connection whose peer is on this host at one of
//! those ports is the server side of the agent's own upload; it is left out.
//! An accepted connection can be tracked before the agent's `connect` has
//! returned and named its port, so for a connection with a local peer the
//! decision (and the open record) waits for its first data, which the agent
//! sent after its `connect` returned ([`settle`]).

use aya_ebpf::btf_maps::PerCpuArray;
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_task,
    bpf_get_smp_processor_id, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
};
use tapwire_common::{
    ConnOpen, DropReason, Kind, Role,
    config::{Config, Exclusion, KernelOffsets, capture, skip},
};

use crate::{
    emit::{count, header, output_value},
    maps::{
        AGENT_PORTS, CONFIG, CONN_IDS, CONN_NO_PAYLOAD, CONN_OPEN_PENDING, CONNS, ConnState,
        EXCLUDED, NOT_TCP, OPEN_SCRATCH, STATE_SCRATCH,
    },
    select::filter_skip,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;
const S_IFMT: u16 = 0o170_000;
const S_IFSOCK: u16 = 0o140_000;

/// Key of `CONNS` and `NOT_TCP`.
#[inline(always)]
pub fn key(tgid: u32, fd: i64) -> u64 {
    ((tgid as u64) << 32) | (fd as u64 & 0xffff_ffff)
}

#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: `bpf_probe_read_kernel` tolerates any address and fails cleanly.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Addresses of a TCP socket: read straight into the open record being
/// built in this CPU's [`OPEN_SCRATCH`] slot (see [`track`]).
type SockInfo = ConnOpen;

/// The `struct sock *` behind `fd` of the current task, if it is an inet
/// stream socket. `Err(())` when a kernel read failed.
#[inline(always)]
fn tcp_sock(o: &KernelOffsets, fd: i64) -> Result<Option<u64>, ()> {
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, o.task_files).ok_or(())?;
    let fdt: u64 = read(files, o.files_fdt).ok_or(())?;
    let max_fds: u32 = read(fdt, o.fdt_max_fds).ok_or(())?;
    if fd as u64 >= max_fds as u64 {
        return Ok(None);
    }
    let fd_array: u64 = read(fdt, o.fdt_fd).ok_or(())?;
    let file: u64 = read(fd_array + (fd as u64) * 8, 0).ok_or(())?;
    if file == 0 {
        return Ok(None);
    }
    let inode: u64 = read(file, o.file_inode).ok_or(())?;
    let mode: u16 = read(inode, o.inode_mode).ok_or(())?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(None);
    }
    let socket: u64 = read(file, o.file_private_data).ok_or(())?;
    let ty: u16 = read(socket, o.socket_type).ok_or(())?;
    if ty != SOCK_STREAM {
        return Ok(None);
    }
    let sk: u64 = read(socket, o.socket_sk).ok_or(())?;
    let family: u16 = read(sk, o.sk_family).ok_or(())?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    Ok(Some(sk))
}

/// Reads the addresses of socket `sk` into `info`; `None` when a kernel
/// read failed.
#[inline(always)]
fn sock_info(o: &KernelOffsets, sk: u64, info: &mut SockInfo) -> Option<()> {
    let family: u16 = read(sk, o.sk_family)?;
    info.family = family;
    info.local_port = read(sk, o.sk_num)?;
    info.remote_port = u16::from_be(read(sk, o.sk_dport)?);
    if family == AF_INET {
        info.local_addr = [0; 16];
        info.remote_addr = [0; 16];
        read_into(sk, o.sk_rcv_saddr, &mut info.local_addr[..4])?;
        read_into(sk, o.sk_daddr, &mut info.remote_addr[..4])?;
    } else {
        read_into(sk, o.sk_v6_rcv_saddr, &mut info.local_addr)?;
        read_into(sk, o.sk_v6_daddr, &mut info.remote_addr)?;
    }
    Some(())
}

/// Reads `dst.len()` bytes at `base + off` into `dst`.
#[inline(always)]
fn read_into(base: u64, off: u32, dst: &mut [u8]) -> Option<()> {
    // SAFETY: `bpf_probe_read_kernel` tolerates any address and fails cleanly.
    unsafe { bpf_probe_read_kernel_buf((base + off as u64) as *const u8, dst).ok() }
}

/// This CPU's slot of `map`, to build a record in off the stack (see
/// [`track`]).
#[inline(always)]
fn cpu_slot<T>(map: &'static PerCpuArray<T, 1>) -> Option<&'static mut T> {
    let Some(slot) = map.get_ptr_mut(0) else {
        count(DropReason::Internal, 1);
        return None;
    };
    // SAFETY: this CPU's slot; the one program running on this CPU fills it
    // and uses it before it returns.
    Some(unsafe { &mut *slot })
}

#[inline(always)]
fn new_conn_id() -> u64 {
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let n = match CONN_IDS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent user on this CPU.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    };
    (cpu << 48) | (n & 0xffff_ffff_ffff)
}

/// Adds one to this CPU's counter of connections left out for `why`.
#[inline(always)]
pub fn count_excluded(why: Exclusion) {
    if let Some(p) = EXCLUDED.get_ptr_mut(why as u32) {
        // SAFETY: per-CPU slot, only this CPU's programs touch it.
        unsafe { *p += 1 };
    }
}

/// True if `info`'s peer is on this host: a loopback address, or the socket's
/// own local address.
#[inline(always)]
fn local_peer(info: &SockInfo) -> bool {
    let r = &info.remote_addr;
    if info.family == AF_INET {
        return r[0] == 127 || r[..4] == info.local_addr[..4];
    }
    let v4_mapped = r[..10] == [0; 10] && r[10] == 0xff && r[11] == 0xff;
    (v4_mapped && r[12] == 127) || (r[..15] == [0; 15] && r[15] == 1) || r == &info.local_addr
}

/// The IPv4 address inside `a` (plain or v4-mapped IPv6), if any.
#[inline(always)]
fn v4(family: u16, a: &[u8; 16]) -> Option<[u8; 4]> {
    if family == AF_INET {
        return Some([a[0], a[1], a[2], a[3]]);
    }
    if a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff {
        return Some([a[12], a[13], a[14], a[15]]);
    }
    None
}

/// True if the peer is a loopback address.
#[inline(always)]
fn loopback_peer(info: &SockInfo) -> bool {
    match v4(info.family, &info.remote_addr) {
        Some(a) => a[0] == 127,
        None => info.remote_addr[..15] == [0; 15] && info.remote_addr[15] == 1,
    }
}

/// True if the peer is internal: loopback, RFC 1918, link-local, CGNAT
/// (IPv4); loopback, RFC 4193, link-local (IPv6).
#[inline(always)]
fn internal_peer(info: &SockInfo) -> bool {
    match v4(info.family, &info.remote_addr) {
        Some(a) => {
            a[0] == 127
                || a[0] == 10
                || (a[0] == 172 && a[1] & 0xf0 == 16)
                || (a[0] == 192 && a[1] == 168)
                || (a[0] == 169 && a[1] == 254)
                || (a[0] == 100 && a[1] & 0xc0 == 64)
        }
        None => {
            let r = &info.remote_addr;
            (r[..15] == [0; 15] && r[15] == 1)
                || r[0] & 0xfe == 0xfc
                || (r[0] == 0xfe && r[1] & 0xc0 == 0x80)
        }
    }
}

/// Lowest port of Linux's default ephemeral range.
const EPHEMERAL_MIN: u16 = 32_768;

/// The `capture` bit of a connection, or 0 if its side cannot be told.
#[inline(always)]
fn direction_bit(info: &SockInfo, role: Role) -> u32 {
    let client = match role {
        Role::Client => true,
        Role::Server => false,
        Role::Unknown => {
            let local_eph = info.local_port >= EPHEMERAL_MIN;
            let remote_eph = info.remote_port >= EPHEMERAL_MIN;
            if local_eph == remote_eph {
                return 0;
            }
            local_eph
        }
    };
    if !client {
        capture::INGRESS
    } else if internal_peer(info) {
        capture::EGRESS_INTERNAL
    } else {
        capture::EGRESS_EXTERNAL
    }
}

/// Why `tap` settings leave this connection out, if they do.
#[inline(always)]
fn excluded_by_tap(cfg: &Config, info: &SockInfo, role: Role) -> Option<Exclusion> {
    if cfg.capture & capture::IGNORE_LOOPBACK != 0 && loopback_peer(info) {
        return Some(Exclusion::Loopback);
    }
    let wanted = cfg.capture & capture::ALL_DIRECTIONS;
    if wanted != capture::ALL_DIRECTIONS && direction_bit(info, role) & wanted == 0 {
        return Some(Exclusion::Direction);
    }
    None
}

/// True if `port` is the local port of one of the agent's own connections.
#[inline(always)]
fn agent_port(port: u16) -> bool {
    // SAFETY: plain byte values; only presence is tested.
    unsafe { AGENT_PORTS.get(port as u32) }.is_some()
}

/// The local port of the agent's TCP socket `fd` (the current task is the
/// agent), for `AGENT_PORTS`.
#[inline(always)]
pub fn own_port(fd: i64) -> Option<u32> {
    let o = &CONFIG.get(0)?.offsets;
    let sk = tcp_sock(o, fd).ok()??;
    let port: u16 = read(sk, o.sk_num)?;
    Some(port as u32)
}

/// The tracked connection of `fd` in the current process: looked up, or
/// discovered now (emitting its open record with `role`). `None` if `fd` is not
/// a TCP socket or is left out.
#[inline(always)]
pub fn lookup_or_track(fd: i64, role: Role) -> Option<*mut ConnState> {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let k = key(tgid, fd);
    if let Some(c) = CONNS.get_ptr_mut(k) {
        // SAFETY: live map value.
        if unsafe { (*c).flags } & CONN_OPEN_PENDING != 0 {
            return settle(k, fd, c);
        }
        return Some(c);
    }
    // SAFETY: `NOT_TCP` values are plain bytes; we only test presence.
    if unsafe { NOT_TCP.get(k) }.is_some() {
        return None;
    }
    // Data is moving now: the agent's port list is current, nothing waits.
    track(fd, role, false)
}

/// Decides a connection whose open record is pending, at its first data or
/// close: left out (and forgotten) if its peer is one of the agent's
/// connections, else its open record is emitted now.
///
/// A BPF function of its own (see [`track`]).
#[inline(never)]
pub fn settle(k: u64, fd: i64, conn: *mut ConnState) -> Option<*mut ConnState> {
    // SAFETY: live map value.
    let (peer_port, conn_id, role) = unsafe { ((*conn).peer_port, (*conn).conn_id, (*conn).role) };
    if agent_port(peer_port as u16) {
        let _ = CONNS.remove(k);
        let _ = NOT_TCP.insert(k, 0u8, 0);
        count_excluded(Exclusion::AgentPeer);
        return None;
    }
    // SAFETY: live map value.
    unsafe { (*conn).flags &= !CONN_OPEN_PENDING };
    let cfg: &Config = CONFIG.get(0)?;
    let o = &cfg.offsets;
    let info = cpu_slot(&OPEN_SCRATCH)?;
    let read = match tcp_sock(o, fd) {
        Ok(Some(sk)) => sock_info(o, sk, info),
        _ => None,
    };
    if read.is_none() {
        count(DropReason::KernelRead, 1);
        return Some(conn);
    }
    let role = Role::try_from(role).unwrap_or(Role::Unknown);
    emit_open(info, header(Kind::ConnOpen), conn_id, role, fd);
    Some(conn)
}

/// Fills in the rest of `open` (its addresses are read) and emits it.
#[inline(always)]
fn emit_open(open: &mut ConnOpen, hdr: tapwire_common::Header, conn_id: u64, role: Role, fd: i64) {
    open.header = hdr;
    open.conn_id = conn_id;
    open.seq = 0;
    // SAFETY: helper without preconditions.
    open.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    open.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    open._pad0 = 0;
    open.role = role as u32;
    open.fd = fd as i32;
    output_value(open);
}

/// Walks `fd` of the current task; tracks it and emits an open record if it is
/// a TCP socket, else remembers that it is not. With `defer` (at `accept`), a
/// connection whose peer is on this host waits for its first data
/// ([`settle`]) before its open record.
///
/// A BPF function of its own, not inlined: the socket walk and the new
/// connection's records took about 300 bytes of stack, needed only when a
/// connection is first seen (its open record and map entry are now built in
/// per-CPU slots, the socket's addresses read straight into the first).
/// Inlined, they made every data program's frame so large that with
/// `emit::chunk`'s frame (a `bpf_loop` callback's stack counts with its
/// caller's) the verifier's 512-byte limit was passed.
#[inline(never)]
pub fn track(fd: i64, role: Role, defer: bool) -> Option<*mut ConnState> {
    let cfg: &Config = CONFIG.get(0)?;
    let o = &cfg.offsets;
    let hdr = header(Kind::ConnOpen);
    let k = key(hdr.pid, fd);
    let sk = match tcp_sock(o, fd) {
        Ok(Some(sk)) => sk,
        Ok(None) => {
            if NOT_TCP.insert(k, 0u8, 0).is_err() {
                count(DropReason::MapInsert, 1);
            }
            return None;
        }
        Err(()) => {
            count(DropReason::KernelRead, 1);
            return None;
        }
    };
    let info = cpu_slot(&OPEN_SCRATCH)?;
    if sock_info(o, sk, info).is_none() {
        count(DropReason::KernelRead, 1);
        return None;
    }
    let local = local_peer(info);
    let skip = filter_skip();
    let excluded = if local && agent_port(info.remote_port) {
        Some(Exclusion::AgentPeer)
    } else if skip & skip::PROCESS != 0 {
        Some(Exclusion::Filter)
    } else {
        excluded_by_tap(cfg, info, role)
    };
    if let Some(why) = excluded {
        // Remembered like a non-TCP fd until close: no record, no payload.
        let _ = NOT_TCP.insert(k, 0u8, 0);
        count_excluded(why);
        return None;
    }
    // A client's peer port is a listening port, not one of the agent's
    // connections: only accepted or already open connections wait.
    let pending = defer && local && role != Role::Client;
    let mut flags = if pending { CONN_OPEN_PENDING } else { 0 };
    if skip & skip::PAYLOAD != 0 {
        flags |= CONN_NO_PAYLOAD;
        count_excluded(Exclusion::FilterPayload);
    }
    let conn_id = new_conn_id();
    // Built in this CPU's slot, not on the stack (see above).
    let state = cpu_slot(&STATE_SCRATCH)?;
    *state = ConnState {
        conn_id,
        seq: 1,
        flags,
        role: role as u32,
        peer_port: info.remote_port as u32,
        hello_body: 0,
        skipped_out: 0,
        skipped_in: 0,
    };
    if CONNS.insert(k, &*state, 0).is_err() {
        count(DropReason::ConnTableFull, 1);
        return None;
    }
    if !pending {
        emit_open(info, hdr, conn_id, role, fd);
    }
    CONNS.get_ptr_mut(k)
}
