//! Settings user space writes into the probes' `CONFIG` array (slot 0) before
//! attaching them.
//!
//! The probes follow kernel pointers (task → files → fd table → file → socket →
//! sock) to learn whether an fd is a TCP socket and what its addresses are. This
//! kernel has no kprobes and aya's Rust programs get no CO-RE relocations, so the
//! field offsets are looked up by user space in `/sys/kernel/btf/vmlinux` at
//! start and handed over here.

/// `Config::flags` bit: capture is limited to selected processes.
pub const FLAG_SELECTION: u32 = 1;
/// `Config::flags` bit: the selection names cgroups (`SELECTED_CGROUPS` is
/// looked at only then).
pub const FLAG_SELECTION_CGROUPS: u32 = 2;

/// Byte offsets of kernel struct fields, from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.files`
    pub task_files: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `file.private_data`
    pub file_private_data: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_mode`
    pub inode_mode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `socket.type`
    pub socket_type: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock_common.skc_family` (within `struct sock`)
    pub sk_family: u32,
    /// `sock_common.skc_daddr`
    pub sk_daddr: u32,
    /// `sock_common.skc_rcv_saddr`
    pub sk_rcv_saddr: u32,
    /// `sock_common.skc_dport`
    pub sk_dport: u32,
    /// `sock_common.skc_num`
    pub sk_num: u32,
    /// `sock_common.skc_v6_daddr`
    pub sk_v6_daddr: u32,
    /// `sock_common.skc_v6_rcv_saddr`
    pub sk_v6_rcv_saddr: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `file.f_pos`
    pub file_pos: u32,
    /// `inode.i_size`
    pub inode_size: u32,
    /// Seconds of the inode's modification time (`i_mtime_sec`, `__i_mtime`
    /// or `i_mtime`, by kernel version).
    pub inode_mtime: u32,
    /// Explicit padding.
    pub _pad0: u32,
}

/// Everything the probes read from user space at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Force a reader wake-up once a ring holds more than `ring size / wake_divisor`
    /// bytes; below that, records go in with `BPF_RB_NO_WAKEUP` and the reader
    /// finds them on its poll timer.
    pub wake_divisor: u32,
    /// Kernel struct offsets.
    pub offsets: KernelOffsets,
    /// Thread-group id of the agent (as the kernel numbers it). Its own sockets
    /// are never captured, and neither are the loopback peer ends of them
    /// (`AGENT_PORTS`), whatever the selection.
    pub agent_tgid: u32,
    /// [`capture`] bits: which connections are captured (`tap.direction`,
    /// `tap.ignore_loopback`).
    pub capture: u32,
    /// Graceful overload: once a ring holds more than this percentage of its
    /// size, a call's data records copy only its first
    /// [`crate::OVERLOAD_PREFIX`] bytes and say how many they left out
    /// ([`crate::Data::shed_len`]). 100 or more: never.
    pub overload_percent: u32,
}

/// `Config::capture` bits. A connection is classified once, when tracked:
/// server side (accepted) is ingress; client side (connected) is
/// egress-internal when its peer is a loopback, RFC 1918, RFC 4193,
/// link-local or CGNAT address, else egress-external. A connection found
/// already open is classified by its ports (an ephemeral local port facing a
/// lower remote one is the client side).
pub mod capture {
    /// Capture server-side connections.
    pub const INGRESS: u32 = 1;
    /// Capture client-side connections to internal addresses.
    pub const EGRESS_INTERNAL: u32 = 2;
    /// Capture client-side connections to other addresses.
    pub const EGRESS_EXTERNAL: u32 = 4;
    /// All three directions.
    pub const ALL_DIRECTIONS: u32 = INGRESS | EGRESS_INTERNAL | EGRESS_EXTERNAL;
    /// Leave out connections whose peer is a loopback address.
    pub const IGNORE_LOOPBACK: u32 = 8;
}

const _: () = assert!(size_of::<KernelOffsets>() == 100);
const _: () = assert!(size_of::<Config>() == 120);

/// Why the probes left a connection out on purpose (not a loss): index into the
/// per-CPU `EXCLUDED` counter map, counted once per connection.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exclusion {
    /// The connection's loopback peer is one of the agent's own connections
    /// (the S3 or pulse server side of the agent's uploads).
    AgentPeer = 0,
    /// The connection's direction is not in `tap.direction`.
    Direction = 1,
    /// The peer is a loopback address and `tap.ignore_loopback` is set.
    Loopback = 2,
    /// The process is left out by a `tap.filters` entry without `only`.
    Filter = 3,
    /// The connection is kept (open and close) but its payload is not
    /// captured: a `tap.filters` entry with `only: [data]` or `[http]`.
    FilterPayload = 4,
}

impl Exclusion {
    /// Number of reasons, the size of the counter map.
    pub const COUNT: u32 = 5;
    /// All reasons, in index order.
    pub const ALL: [Exclusion; Self::COUNT as usize] = [
        Self::AgentPeer,
        Self::Direction,
        Self::Loopback,
        Self::Filter,
        Self::FilterPayload,
    ];

    /// Stable snake_case name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AgentPeer => "agent_peer",
            Self::Direction => "direction",
            Self::Loopback => "loopback",
            Self::Filter => "filter",
            Self::FilterPayload => "filter_payload",
        }
    }
}

/// `SELECTED` map value bits: why a process is selected.
pub mod select {
    /// Named with `--pid`, or a descendant of one.
    pub const PID: u32 = 1;
    /// Runs an executable named with `--exe`.
    pub const EXE: u32 = 2;
}

/// `FILTERED` map values: what a `tap.filters` entry skips for a process,
/// decided by user space from the executable's path when the process starts
/// (exec, or found running at agent start) and inherited by its forks.
pub mod skip {
    /// The whole process: its connections are not tracked (no records).
    pub const PROCESS: u32 = 1;
    /// Payload (`only: [data]` or `[http]`): connections are tracked, open and
    /// close records are kept, no data record is made.
    pub const PAYLOAD: u32 = 2;
    /// TLS plaintext (`only: [tls]`): the TLS probes ignore the process.
    pub const TLS: u32 = 4;
}
