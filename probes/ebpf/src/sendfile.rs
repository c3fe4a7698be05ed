//! Bytes a process sends straight from a file: `sendfile`.
//!
//! Why here: `sendfile(sock, file, &off, n)` moves file pages to the socket
//! inside the kernel; no user buffer ever holds them, so the write probes see
//! nothing. The probes name the file (device, inode, size and modification
//! time at the call) and the range; user space reads the same range from the
//! file and hands it on as the connection's data, flagged when the file
//! changed in between.
//!
//! The file is named by device and inode, and by the path the process opened
//! it by (`openat`, kept per fd in `FD_PATHS` for captured processes): the
//! descriptor is often closed (nginx closes it as soon as the response is
//! out) before user space reads the bytes.
//!
//! Pairing: the enter probe saves the file and the starting offset (from
//! `*offset`, or the file position when `offset` is NULL) in `SENDFILES`
//! keyed by `pid_tgid`; the exit probe emits a [`FileSend`] for the bytes
//! actually sent, taking one sequence number per `MAX_PAYLOAD` bytes.
//!
//! `splice` through a pipe is [`crate::splice`]; io_uring sends are not
//! covered (no syscall per operation); see `docs/capture.md`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use tapwire_common::{FileSend, Kind, MAX_PAYLOAD, Role};

use crate::{
    conn::{key, lookup_or_track},
    emit::{count, header, output_value_wake},
    files::{file_of, key_of, read},
    maps::{
        CONFIG, CONN_NO_PAYLOAD, CONN_TLS, CONNS, FD_PATHS, OPENS, PATH_SCRATCH, SEND_SCRATCH,
        SENDFILES,
    },
    select::selected,
};

/// `O_ACCMODE` from `<fcntl.h>`.
const O_ACCMODE: u64 = 3;

/// `sys_enter_sendfile64`: `out_fd, in_fd, offset, count` in 8-byte slots
/// from 16. `sys_exit_sendfile64`: `ret` at 16.
const fn arg_off(n: usize) -> usize {
    16 + 8 * n
}
const RET_OFF: usize = 16;

/// Fills the file part of `rec` from `fd` of the current task; `offset_ptr`
/// (user `loff_t *`, or 0 for the file position) gives the start.
#[inline(always)]
pub fn describe_file(rec: &mut FileSend, fd: i64, offset_ptr: u64) -> Option<()> {
    let o = &CONFIG.get(0)?.offsets;
    let file = file_of(o, fd)?;
    let inode: u64 = read(file, o.file_inode)?;
    let key = key_of(o, inode)?;
    rec.dev = key.dev;
    rec.ino = key.ino;
    rec.file_size = read(inode, o.inode_size)?;
    rec.mtime_sec = read::<u64>(inode, o.inode_mtime).unwrap_or(0);
    rec.offset = if offset_ptr == 0 {
        read(file, o.file_pos)?
    } else {
        // SAFETY: the helper reads user memory safely.
        unsafe { bpf_probe_read_user(offset_ptr as *const u64) }.ok()?
    };
    Some(())
}

/// hook: syscalls:sys_enter_sendfile64(out_fd, in_fd, loff_t *offset, count)
#[tracepoint]
pub fn sys_enter_sendfile(ctx: TracePointContext) -> u32 {
    if !selected() {
        return 0;
    }
    // SAFETY: syscall tracepoint records hold six 8-byte args from offset 16.
    let arg = |n| unsafe { ctx.read_at::<u64>(arg_off(n)) }.unwrap_or(0);
    let (out_fd, in_fd, offset_ptr) = (arg(0) as i32 as i64, arg(1) as i32 as i64, arg(2));
    let Some(conn) = lookup_or_track(out_fd, Role::Unknown) else {
        return 0;
    };
    // SAFETY: live map value.
    let flags = unsafe { (*conn).flags };
    if flags & CONN_TLS != 0 {
        // Kernel TLS: the file's bytes are encrypted on the way; not followed.
        return 0;
    }
    if flags & CONN_NO_PAYLOAD != 0 {
        // A filter skips this process's payload.
        return 0;
    }
    // Built in per-CPU scratch: the record (with its path) is too big for the
    // stack.
    let Some(rec) = SEND_SCRATCH.get_ptr_mut(0) else {
        count(tapwire_common::DropReason::Internal, 1);
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: this CPU's scratch slot; nothing else runs on this CPU until we
    // return.
    let rec = unsafe { &mut *rec };
    rec.header = header(Kind::FileSend);
    rec.fd = out_fd as i32;
    rec.in_fd = in_fd as i32;
    rec.path[0] = 0;
    // SAFETY: a live map value, copied whole.
    if let Some(path) = unsafe { FD_PATHS.get(key((pid_tgid >> 32) as u32, in_fd)) } {
        rec.path = *path;
    }
    if describe_file(rec, in_fd, offset_ptr).is_some() {
        let _ = SENDFILES.insert(pid_tgid, &*rec, 0);
    }
    0
}

/// hook: syscalls:sys_enter_openat(dfd, filename, flags, mode)
#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // SAFETY: syscall tracepoint records hold six 8-byte args from offset 16.
    let flags = unsafe { ctx.read_at::<u64>(arg_off(2)) }.unwrap_or(u64::MAX);
    // Files a server sends are opened read-only.
    if flags & O_ACCMODE != 0 || !selected() {
        return 0;
    }
    // SAFETY: as above.
    let filename = unsafe { ctx.read_at::<u64>(arg_off(1)) }.unwrap_or(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    // Over the thread's idle entry (0) from its last `openat`, if any.
    if let Some(saved) = OPENS.get_ptr_mut(pid_tgid) {
        // SAFETY: live map value of this thread; only this thread writes it.
        unsafe { *saved = filename };
    } else {
        let _ = OPENS.insert(pid_tgid, filename, 0);
    }
    0
}

/// hook: syscalls:sys_exit_openat(ret): remembers the path of the new fd.
#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(saved) = OPENS.get_ptr_mut(pid_tgid) else {
        return 0;
    };
    // SAFETY: live map value of this thread; left idle for its next call.
    let filename = unsafe { core::mem::replace(&mut *saved, 0) };
    if filename == 0 {
        return 0;
    }
    // SAFETY: `ret` is a long at a fixed offset of this tracepoint.
    let fd = unsafe { ctx.read_at::<i64>(RET_OFF) }.unwrap_or(-1);
    if fd < 0 {
        return 0;
    }
    let fd_key = key((pid_tgid >> 32) as u32, fd);
    // A descriptor number the process used before (a server opening a file
    // per request gets the same one again): the path is read straight into
    // its entry, where an LRU insert of a scratch copy took half this
    // program's time. A failed read leaves the entry empty (the helper
    // zeroes it), and user space names the file by its inode alone.
    if let Some(entry) = FD_PATHS.get_ptr_mut(fd_key) {
        // SAFETY: live map value; the helper reads user memory safely.
        let _ = unsafe { bpf_probe_read_user_str_bytes(filename as *const u8, &mut *entry) };
        return 0;
    }
    let Some(buf) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot; the helper reads user memory safely.
    unsafe {
        if bpf_probe_read_user_str_bytes(filename as *const u8, &mut *buf).is_ok() {
            let _ = FD_PATHS.insert(fd_key, &*buf, 0);
        }
    }
    0
}

/// hook: syscalls:sys_exit_sendfile64(ret)
#[tracepoint]
pub fn sys_exit_sendfile(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(saved) = SENDFILES.get_ptr_mut(pid_tgid) else {
        return 0;
    };
    // SAFETY: `ret` is a long at a fixed offset of this tracepoint.
    let ret = unsafe { ctx.read_at::<i64>(RET_OFF) }.unwrap_or(-1);
    // SAFETY: live map value of this thread.
    let fd = unsafe { (*saved).fd } as i64;
    if ret > 0
        && let Some(conn) = CONNS.get_ptr_mut(key((pid_tgid >> 32) as u32, fd))
    {
        let chunks = (ret as u64).div_ceil(MAX_PAYLOAD as u64);
        // SAFETY: live map values: the connection and this thread's call.
        unsafe {
            (*saved).header.ts_ns = aya_ebpf::helpers::bpf_ktime_get_ns();
            (*saved).conn_id = (*conn).conn_id;
            (*saved).seq = (*conn).seq;
            (*conn).seq += chunks;
            (*saved).len = ret as u64;
            (*saved).chunks = chunks as u32;
            // Woken at once: user space reads the file while it is still
            // likely open in the process.
            output_value_wake(&*saved);
        }
    }
    let _ = SENDFILES.remove(pid_tgid);
    0
}
