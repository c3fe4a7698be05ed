//! File descriptor → `struct file` of the current task, and the file's
//! identity: shared by the probes that name files ([`crate::images`],
//! [`crate::sendfile`]). Offsets come from `CONFIG` (the kernel's BTF).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tapwire_common::{FileKey, config::KernelOffsets};

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: `bpf_probe_read_kernel` tolerates any address and fails cleanly.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// The `struct file *` of `fd` in the current task
/// (`task->files->fdt->fd[fd]`), if open.
#[inline(always)]
pub fn file_of(o: &KernelOffsets, fd: i64) -> Option<u64> {
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
    (file != 0).then_some(file)
}

/// Device (kernel encoding) and inode number of `inode`.
#[inline(always)]
pub fn key_of(o: &KernelOffsets, inode: u64) -> Option<FileKey> {
    let sb: u64 = read(inode, o.inode_sb)?;
    let dev: u32 = read(sb, o.sb_dev)?;
    Some(FileKey {
        dev: dev as u64,
        ino: read(inode, o.inode_ino)?,
    })
}
