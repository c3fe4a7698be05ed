//! Bytes a process sends straight from a file: `sendfile`.
//!
//! Why here: `sendfile(sock, file, &off, n)` moves file pages to the socket
//! inside the kernel; no user buffer ever holds them, so the write probes see
//! nothing. The probes name the file (device, inode, size and modification
//! time at the call) and the range; user space reads the same range from the
//! file and hands it on as the connection's data, flagged when the file
//! changed in between.
//!
//! Pairing: the enter probe saves the file and the starting offset (from
//! `*offset`, or the file position when `offset` is NULL) in `SENDFILES`
//! keyed by `pid_tgid`; the exit probe emits a [`FileSend`] for the bytes
//! actually sent, taking one sequence number per `MAX_PAYLOAD` bytes.
//!
//! Not covered: `splice` from a pipe into a socket (the pipe's bytes came from
//! anywhere) and io_uring sends (no syscall per operation); see
//! `docs/dataplane.md`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use tapwire_common::{FileSend, Kind, MAX_PAYLOAD, Role};

use crate::{
    conn::{key, lookup_or_track},
    emit::{header, output_value_wake},
    maps::{CONFIG, CONN_TLS, CONNS, SENDFILES},
    select::selected,
};

/// `sys_enter_sendfile64`: `out_fd, in_fd, offset, count` in 8-byte slots
/// from 16. `sys_exit_sendfile64`: `ret` at 16.
const fn arg_off(n: usize) -> usize {
    16 + 8 * n
}
const RET_OFF: usize = 16;

#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: `bpf_probe_read_kernel` tolerates any address and fails cleanly.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Fills the file part of `rec` from `fd` of the current task; `offset_ptr`
/// (user `loff_t *`, or 0 for the file position) gives the start.
#[inline(always)]
fn describe_file(rec: &mut FileSend, fd: i64, offset_ptr: u64) -> Option<()> {
    let o = &CONFIG.get(0)?.offsets;
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, o.task_files)?;
    let fdt: u64 = read(files, o.files_fdt)?;
    let max_fds: u32 = read(fdt, o.fdt_max_fds)?;
    if fd < 0 || fd as u64 >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = read(fdt, o.fdt_fd)?;
    let file: u64 = read(fd_array + (fd as u64) * 8, 0)?;
    if file == 0 {
        return None;
    }
    let inode: u64 = read(file, o.file_inode)?;
    let sb: u64 = read(inode, o.inode_sb)?;
    let dev: u32 = read(sb, o.sb_dev)?;
    rec.dev = dev as u64;
    rec.ino = read(inode, o.inode_ino)?;
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
    if unsafe { (*conn).flags } & CONN_TLS != 0 {
        // Kernel TLS: the file's bytes are encrypted on the way; not followed.
        return 0;
    }
    let mut rec = FileSend {
        header: header(Kind::FileSend),
        fd: out_fd as i32,
        in_fd: in_fd as i32,
        ..FileSend::default()
    };
    if describe_file(&mut rec, in_fd, offset_ptr).is_some() {
        let _ = SENDFILES.insert(bpf_get_current_pid_tgid(), rec, 0);
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
