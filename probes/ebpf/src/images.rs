//! Executable images: files a selected process maps executable.
//!
//! Why here: TLS uprobes belong to files, attached once per file. A library no
//! process had mapped when the agent started (a container image's own libssl,
//! a copy on `LD_LIBRARY_PATH`, a `dlopen`) becomes known to user space when a
//! process maps it; reporting that mapping the moment it is made keeps the time
//! from load to probes-live short. The executable itself is mapped by exec
//! (reported by [`crate::process`]), every shared library by `mmap` with
//! `PROT_EXEC` from the dynamic loader.
//!
//! Pairing: `sys_enter_mmap` keeps the file's identity per thread in
//! `MMAP_CALLS`; `sys_exit_mmap` emits it with the mapping's address once the
//! mapping exists, so user space can open the file through
//! `/proc/PID/map_files` even after the loader has closed the fd. Files user
//! space has inspected are in `INSPECTED` and emit nothing.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tapwire_common::{ExecMap, FileKey, Kind};

use crate::{
    emit::{header, output_value_wake},
    files::{file_of, key_of, read},
    maps::{CONFIG, INSPECTED, MMAP_CALLS},
    select::selected,
};

/// `PROT_EXEC` from `<sys/mman.h>`.
const PROT_EXEC: u64 = 4;
/// `sys_enter_mmap`: args are 8-byte slots from offset 16:
/// `addr, len, prot, flags, fd, off`.
const MMAP_PROT: usize = 16 + 8 * 2;
const MMAP_FD: usize = 16 + 8 * 4;
/// `sys_exit_mmap`: `ret` at 16.
const RET_OFF: usize = 16;
/// Return values in `[-4095, -1]` are errors.
const MAX_ERRNO: u64 = 4095;

/// Device and inode of `fd` of the current task.
#[inline(always)]
fn file_key(fd: i64) -> Option<FileKey> {
    let o = &CONFIG.get(0)?.offsets;
    let file = file_of(o, fd)?;
    key_of(o, read(file, o.file_inode)?)
}

/// hook: syscalls:sys_enter_mmap(addr, len, prot, flags, fd, off)
#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    // Anonymous and non-executable mappings (malloc, data segments) leave first.
    // SAFETY: fixed offsets of this tracepoint's record.
    let (prot, fd) = unsafe {
        (
            ctx.read_at::<u64>(MMAP_PROT).unwrap_or(0),
            ctx.read_at::<u64>(MMAP_FD).unwrap_or(u64::MAX) as i32 as i64,
        )
    };
    if prot & PROT_EXEC == 0 || fd < 0 || !selected() {
        return 0;
    }
    let Some(key) = file_key(fd) else {
        return 0;
    };
    // SAFETY: presence test only.
    if unsafe { INSPECTED.get(&key) }.is_some() {
        return 0;
    }
    let rec = ExecMap {
        header: header(Kind::ExecMap),
        dev: key.dev,
        ino: key.ino,
        addr: 0,
        fd: fd as i32,
        _pad0: 0,
    };
    let _ = MMAP_CALLS.insert(bpf_get_current_pid_tgid(), rec, 0);
    0
}

/// hook: syscalls:sys_exit_mmap(ret)
#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(saved) = MMAP_CALLS.get_ptr_mut(pid_tgid) else {
        return 0;
    };
    // SAFETY: `ret` is a long at a fixed offset of this tracepoint.
    let ret = unsafe { ctx.read_at::<u64>(RET_OFF) }.unwrap_or(u64::MAX);
    if ret < u64::MAX - MAX_ERRNO {
        // SAFETY: live map value of this thread.
        unsafe { (*saved).addr = ret };
        // SAFETY: as above; the record is copied into the ring.
        output_value_wake(unsafe { &*saved });
    }
    let _ = MMAP_CALLS.remove(pid_tgid);
    0
}
