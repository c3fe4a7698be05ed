//! Bytes moved with `splice`: a file's bytes sent through a pipe, and bytes
//! spliced into or out of a socket from or to anywhere else.
//!
//! Why here: `splice` moves pages between a pipe and another descriptor
//! inside the kernel; no user buffer holds them, so the read/write probes see
//! nothing. A server sending a file this way splices it into a pipe
//! (`file → pipe`) and the pipe into the socket (`pipe → socket`); a proxy
//! splices one socket into a pipe and the pipe into another socket.
//!
//! What is seen: per pipe (by its inode), where the bytes queued in it came
//! from, as far as splices show it. `file → pipe` records the file and range
//! (described as `sendfile` describes it, [`crate::sendfile`]) in
//! `PIPE_SOURCES`; a later `pipe → socket` that takes bytes of that range
//! emits a [`FileSend`] for them, and user space reads them from the file as
//! it does for `sendfile`. Bytes whose source is not a file — spliced in from
//! a socket, or mixed from files that do not follow each other — are not
//! seen: their sequence numbers are taken without a record, so the
//! transaction is flagged `gap`, and the bytes are counted
//! ([`DropReason::UnseenBytes`]). The same holds for every `socket → pipe`
//! (a received body spliced to a file or another socket). Bytes put into a
//! pipe with `write` or `vmsplice` are not followed: a pipe mixing them with
//! file splices would be misread, which no server known to us does.
//!
//! Pairing: the enter probe classifies the call and keeps it in `SPLICES`
//! (the file's description in `SENDFILES`) keyed by `pid_tgid`; the exit probe
//! acts on the bytes actually moved.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tapwire_common::{DropReason, FileKey, Kind, MAX_PAYLOAD, Role};

use crate::{
    conn::{key, lookup_or_track},
    emit::{count, header, output_value_wake},
    files::{file_of, key_of, read},
    maps::{
        CONFIG, CONN_TLS, CONNS, FD_PATHS, PIPE_SCRATCH, PIPE_SOURCES, PipeSource, SEND_SCRATCH,
        SENDFILES, SPLICES, SpliceCall,
    },
    select::selected,
    sendfile::describe_file,
};

/// `sys_enter_splice`: `fd_in, off_in, fd_out, off_out, len, flags` in
/// 8-byte slots from 16. `sys_exit_splice`: `ret` at 16.
const fn arg_off(n: usize) -> usize {
    16 + 8 * n
}
const RET_OFF: usize = 16;

/// [`SpliceCall::what`]: a pipe into a socket.
const PIPE_TO_SOCKET: u32 = 1;
/// A socket into a pipe (or anything else).
const FROM_SOCKET: u32 = 2;
/// A file into a pipe.
const FILE_TO_PIPE: u32 = 3;
/// A pipe with a known source into something other than a socket (a file,
/// another pipe): its bytes leave unseen.
const PIPE_DRAIN: u32 = 4;

/// The identity of `fd`'s inode (a pipe's, here).
#[inline(always)]
fn inode_key(fd: i64) -> Option<FileKey> {
    let o = &CONFIG.get(0)?.offsets;
    let file = file_of(o, fd)?;
    key_of(o, read(file, o.file_inode)?)
}

/// hook: syscalls:sys_enter_splice(fd_in, loff_t *off_in, fd_out, loff_t *off_out, len, flags)
#[tracepoint]
pub fn sys_enter_splice(ctx: TracePointContext) -> u32 {
    if !selected() {
        return 0;
    }
    // SAFETY: syscall tracepoint records hold six 8-byte args from offset 16.
    let arg = |n| unsafe { ctx.read_at::<u64>(arg_off(n)) }.unwrap_or(0);
    let (fd_in, off_in, fd_out) = (arg(0) as i32 as i64, arg(1), arg(2) as i32 as i64);
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = if let Some(conn) = lookup_or_track(fd_out, Role::Unknown) {
        // SAFETY: live map value.
        if unsafe { (*conn).flags } & CONN_TLS != 0 {
            // Kernel TLS: the bytes are encrypted on the way; not followed.
            return 0;
        }
        SpliceCall {
            what: PIPE_TO_SOCKET,
            fd: fd_out as i32,
            pipe: inode_key(fd_in).unwrap_or_default(),
        }
    } else if let Some(conn) = lookup_or_track(fd_in, Role::Unknown) {
        // SAFETY: live map value.
        if unsafe { (*conn).flags } & CONN_TLS != 0 {
            return 0;
        }
        SpliceCall {
            what: FROM_SOCKET,
            fd: fd_in as i32,
            pipe: inode_key(fd_out).unwrap_or_default(),
        }
    } else if let Some(pipe) = inode_key(fd_in)
        // SAFETY: presence test only.
        && unsafe { PIPE_SOURCES.get(&pipe) }.is_some()
    {
        SpliceCall {
            what: PIPE_DRAIN,
            fd: fd_in as i32,
            pipe,
        }
    } else {
        let Some(pipe) = inode_key(fd_out) else {
            return 0;
        };
        // Built in per-CPU scratch: the record (with its path) is too big for
        // the stack.
        let Some(rec) = SEND_SCRATCH.get_ptr_mut(0) else {
            count(DropReason::Internal, 1);
            return 0;
        };
        // SAFETY: this CPU's scratch slot; nothing else runs on this CPU until
        // we return.
        let rec = unsafe { &mut *rec };
        rec.header = header(Kind::FileSend);
        rec.in_fd = fd_in as i32;
        rec.path[0] = 0;
        // SAFETY: a live map value, copied whole.
        if let Some(path) = unsafe { FD_PATHS.get(key((pid_tgid >> 32) as u32, fd_in)) } {
            rec.path = *path;
        }
        if describe_file(rec, fd_in, off_in).is_none()
            || SENDFILES.insert(pid_tgid, &*rec, 0).is_err()
        {
            return 0;
        }
        SpliceCall {
            what: FILE_TO_PIPE,
            fd: fd_in as i32,
            pipe,
        }
    };
    if SPLICES.insert(pid_tgid, call, 0).is_err() {
        count(DropReason::MapInsert, 1);
    }
    0
}

/// Takes the sequence numbers of `len` bytes of the connection of `fd`
/// without a record: the bytes are not seen, the stream shows a gap.
#[inline(always)]
fn skip(pid_tgid: u64, fd: i32, len: u64) {
    if let Some(conn) = CONNS.get_ptr_mut(key((pid_tgid >> 32) as u32, fd as i64)) {
        // SAFETY: live map value.
        unsafe { (*conn).seq += len.div_ceil(MAX_PAYLOAD as u64) };
        count(DropReason::UnseenBytes, len);
    }
}

/// `len` bytes left the pipe `src` (a map value) for the socket `fd`: sent
/// as a [`FileSend`] if they are all bytes of its file range, else skipped.
#[inline(always)]
fn take_from_pipe(pid_tgid: u64, fd: i32, src: *mut PipeSource, len: u64) {
    // SAFETY: live map value of this pipe.
    let s = unsafe { &mut *src };
    if s.unknown > 0 || s.send.len < len {
        // Consumed in order: first what is not known, then the file range.
        drain_pipe_value(s, len);
        skip(pid_tgid, fd, len);
        return;
    }
    let Some(conn) = CONNS.get_ptr_mut(key((pid_tgid >> 32) as u32, fd as i64)) else {
        return;
    };
    let Some(rec) = SEND_SCRATCH.get_ptr_mut(0) else {
        count(DropReason::Internal, 1);
        return;
    };
    let chunks = len.div_ceil(MAX_PAYLOAD as u64);
    // SAFETY: this CPU's scratch slot and live map values (the connection,
    // the pipe's source).
    unsafe {
        *rec = s.send;
        (*rec).header = header(Kind::FileSend);
        (*rec).conn_id = (*conn).conn_id;
        (*rec).seq = (*conn).seq;
        (*conn).seq += chunks;
        (*rec).fd = fd;
        (*rec).len = len;
        (*rec).chunks = chunks as u32;
        s.send.offset += len;
        s.send.len -= len;
        // Woken at once, as for `sendfile`: the file is likely still open.
        output_value_wake(&*rec);
    }
}

/// `len` bytes of the file described in this thread's `SENDFILES` entry went
/// into `pipe`.
#[inline(always)]
fn put_file_in_pipe(pid_tgid: u64, pipe: FileKey, len: u64) {
    let Some(rec) = SENDFILES.get_ptr(pid_tgid) else {
        return;
    };
    // SAFETY: live map values: this thread's call, the pipe's source.
    unsafe {
        if let Some(src) = PIPE_SOURCES.get_ptr_mut(&pipe) {
            let s = &mut *src;
            if s.send.len == 0 && s.unknown == 0 {
                s.send = *rec;
                s.send.len = len;
            } else if s.unknown == 0
                && s.send.dev == (*rec).dev
                && s.send.ino == (*rec).ino
                && s.send.offset + s.send.len == (*rec).offset
            {
                // The next bytes of the same file.
                s.send.len += len;
            } else {
                // Bytes of two sources queued: none can be told apart.
                s.unknown += s.send.len + len;
                s.send.len = 0;
            }
            return;
        }
        let Some(scratch) = PIPE_SCRATCH.get_ptr_mut(0) else {
            count(DropReason::Internal, 1);
            return;
        };
        (*scratch).unknown = 0;
        (*scratch).send = *rec;
        (*scratch).send.len = len;
        if PIPE_SOURCES.insert(&pipe, &*scratch, 0).is_err() {
            count(DropReason::MapInsert, 1);
        }
    }
}

/// Bytes of no known source went into `pipe`.
#[inline(always)]
fn put_unknown_in_pipe(pipe: FileKey, len: u64) {
    if let Some(src) = PIPE_SOURCES.get_ptr_mut(&pipe) {
        // SAFETY: live map value.
        unsafe {
            (*src).unknown += (*src).send.len + len;
            (*src).send.len = 0;
        }
        return;
    }
    let Some(scratch) = PIPE_SCRATCH.get_ptr_mut(0) else {
        count(DropReason::Internal, 1);
        return;
    };
    // SAFETY: this CPU's scratch slot; `send` is unused while its `len` is 0.
    unsafe {
        (*scratch).unknown = len;
        (*scratch).send.len = 0;
        if PIPE_SOURCES.insert(&pipe, &*scratch, 0).is_err() {
            count(DropReason::MapInsert, 1);
        }
    }
}

/// `len` bytes left the pipe whose source is `s`, in order: first the bytes
/// of no known source, then the file range.
#[inline(always)]
fn drain_pipe_value(s: &mut PipeSource, len: u64) {
    let unknown = if s.unknown < len { s.unknown } else { len };
    s.unknown -= unknown;
    let rest = len - unknown;
    let from_file = if s.send.len < rest { s.send.len } else { rest };
    s.send.offset += from_file;
    s.send.len -= from_file;
}

/// hook: syscalls:sys_exit_splice(ret)
#[tracepoint]
pub fn sys_exit_splice(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a plain value, copied.
    let Some(call) = (unsafe { SPLICES.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = SPLICES.remove(pid_tgid);
    // SAFETY: `ret` is a long at a fixed offset of this tracepoint.
    let ret = unsafe { ctx.read_at::<i64>(RET_OFF) }.unwrap_or(-1);
    if ret > 0 {
        let len = ret as u64;
        match call.what {
            PIPE_TO_SOCKET => match PIPE_SOURCES.get_ptr_mut(&call.pipe) {
                Some(src) => take_from_pipe(pid_tgid, call.fd, src, len),
                None => skip(pid_tgid, call.fd, len),
            },
            FROM_SOCKET => {
                skip(pid_tgid, call.fd, len);
                put_unknown_in_pipe(call.pipe, len);
            }
            FILE_TO_PIPE => put_file_in_pipe(pid_tgid, call.pipe, len),
            PIPE_DRAIN => {
                if let Some(src) = PIPE_SOURCES.get_ptr_mut(&call.pipe) {
                    // SAFETY: live map value.
                    drain_pipe_value(unsafe { &mut *src }, len);
                }
            }
            _ => {}
        }
    }
    if call.what == FILE_TO_PIPE {
        let _ = SENDFILES.remove(pid_tgid);
    }
    0
}
