//! Process lifecycle: keeps the selection and the filter decisions
//! (`FILTERED`) current and reports exec/exit of selected processes.
//!
//! Why these hooks: `sched:sched_process_fork` runs in the parent as the child
//! is created, so a selected parent's child is selected before it runs a single
//! instruction (pid with descendants); `sched:sched_process_exec` runs after the
//! new image is in place, so `current->mm->exe_file` is the new executable
//! (selection by executable). `sched:sched_process_exit` runs per thread;
//! `group_dead` marks the last one.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tapwire_common::{
    DropReason, Kind, ProcExec, ProcExit,
    config::{Config, select},
};

use crate::{
    emit::{count, header, output_value_wake},
    maps::{
        CONFIG, FILTERED, NSS_SSL_LAYERS, OPENS, SCRATCH, SELECTED, SELECTED_EXES, SHAPE_IDLE,
        SYSCALLS, TLS_CALLS,
    },
    select::{selected, selection_on},
    tls::call_in_flight,
};

/// `sched_process_fork`: `child_pid` at 20.
const FORK_CHILD_PID: usize = 20;
/// `sched_process_exec`: `__data_loc char[] filename` at 8.
const EXEC_FILENAME: usize = 8;
/// `sched_process_exit`: `group_dead` at 32.
const EXIT_GROUP_DEAD: usize = 32;

/// hook: sched:sched_process_fork(parent_comm, parent_pid, child_comm, child_pid)
#[tracepoint]
pub fn sched_fork(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A filtered parent's child runs the same program: it inherits the
    // decision before it runs a single instruction.
    // SAFETY: plain integer values.
    let skip = unsafe { FILTERED.get(tgid) }.copied();
    let bits = if selection_on() {
        // SAFETY: as above.
        unsafe { SELECTED.get(tgid) }.copied()
    } else {
        None
    };
    if skip.is_none() && bits.is_none() {
        return 0;
    }
    // SAFETY: `child_pid` is an i32 at a fixed offset of this tracepoint.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(FORK_CHILD_PID) }) else {
        return 0;
    };
    // Threads land here too; their tids are harmless keys, removed at exit.
    // A full map leaves the child unselected, or unfiltered (its events are
    // then dropped by the agent): counted.
    if let Some(bits) = bits
        && SELECTED.insert(child as u32, bits, 0).is_err()
    {
        count(DropReason::MapInsert, 1);
    }
    if let Some(skip) = skip
        && FILTERED.insert(child as u32, skip, 0).is_err()
    {
        count(DropReason::MapInsert, 1);
    }
    0
}

#[inline(always)]
fn read_kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper reads kernel memory safely.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// Inode number of the current task's executable.
#[inline(always)]
fn exe_inode(cfg: &Config) -> Option<u64> {
    let o = &cfg.offsets;
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = read_kernel(task + o.task_mm as u64)?;
    let file: u64 = read_kernel(mm + o.mm_exe_file as u64)?;
    let inode: u64 = read_kernel(file + o.file_inode as u64)?;
    read_kernel(inode + o.inode_ino as u64)
}

/// hook: sched:sched_process_exec(filename, pid, old_pid)
#[tracepoint]
pub fn sched_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A new program: user space decides its filters again from its path (on
    // the exec record below), and NSS's SSL layer identity of the old one
    // means nothing.
    let _ = FILTERED.remove(tgid);
    let _ = NSS_SSL_LAYERS.remove(tgid);
    if selection_on()
        && let Some(cfg) = CONFIG.get(0)
    {
        // SAFETY: plain integer values.
        let bits = unsafe { SELECTED.get(tgid) }.copied().unwrap_or(0);
        // SAFETY: as above.
        let exe_match =
            exe_inode(cfg).is_some_and(|ino| unsafe { SELECTED_EXES.get(ino) }.is_some());
        let new = if exe_match {
            bits | select::EXE
        } else {
            bits & !select::EXE
        };
        if new != bits {
            if new == 0 {
                let _ = SELECTED.remove(tgid);
            } else {
                let _ = SELECTED.insert(tgid, new, 0);
            }
        }
    }
    if !selected() {
        return 0;
    }
    // The record is 304 bytes: built in the per-CPU scratch, not on the stack.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let rec = scratch.cast::<ProcExec>();
    // SAFETY: the scratch slot is larger than `ProcExec` and 8-byte aligned;
    // this CPU's programs do not interleave.
    unsafe {
        (*rec).header = header(Kind::ProcExec);
        (*rec).cgroup_id = bpf_get_current_cgroup_id();
        (*rec).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*rec).filename[0] = 0;
        if let Ok(loc) = ctx.read_at::<u32>(EXEC_FILENAME) {
            let src = (ctx.as_ptr_u8()).add((loc & 0xffff) as usize);
            let _ = bpf_probe_read_kernel_str_bytes(src, &mut (*rec).filename);
        }
        // Woken at once: user space attaches TLS probes to the new program
        // before it gets far.
        output_value_wake(&*rec);
    }
    0
}

/// hook: sched:sched_process_exit(comm, pid, prio, group_dead)
#[tracepoint]
pub fn sched_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // A thread that dies inside a socket or TLS call (killed in `SSL_read`)
    // leaves its in-flight entry: reclaim it here, counted.
    // Entries idle between calls are removed without a count.
    let abandoned = u64::from(
        SYSCALLS
            .get_ptr(pid_tgid)
            // SAFETY: live map value of this thread.
            .is_some_and(|a| unsafe { (*a).shape } != SHAPE_IDLE),
    ) + u64::from(call_in_flight(pid_tgid).is_some());
    let _ = SYSCALLS.remove(pid_tgid);
    let _ = TLS_CALLS.remove(pid_tgid);
    let _ = OPENS.remove(pid_tgid);
    if abandoned > 0 {
        count(DropReason::AbandonedCall, abandoned);
    }
    let was_selected = selected();
    if selection_on() {
        let _ = SELECTED.remove(pid_tgid as u32);
    }
    let _ = FILTERED.remove(pid_tgid as u32);
    // SAFETY: `group_dead` is a bool at a fixed offset of this tracepoint.
    let group_dead = unsafe { ctx.read_at::<u8>(EXIT_GROUP_DEAD) }.unwrap_or(0);
    if group_dead != 0 {
        // The pid may be reused by another program.
        let _ = NSS_SSL_LAYERS.remove((pid_tgid >> 32) as u32);
    }
    if !was_selected {
        return 0;
    }
    if group_dead != 0 {
        let rec = ProcExit {
            header: header(Kind::ProcExit),
            // SAFETY: helper without preconditions.
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        };
        output_value_wake(&rec);
    }
    0
}

trait CtxBytes {
    fn as_ptr_u8(&self) -> *const u8;
}

impl CtxBytes for TracePointContext {
    fn as_ptr_u8(&self) -> *const u8 {
        use aya_ebpf::EbpfContext as _;
        self.as_ptr().cast::<u8>().cast_const()
    }
}
