//! Every map the probes use. User space creates the per-CPU rings and fills
//! `RINGS`, writes `CONFIG`, seeds the selection maps and reads `DROPS`.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use tapwire_common::{
    Data, DropReason, ExecMap, FILENAME_LEN, FileKey, FileSend, MAX_CPUS, MAX_PAYLOAD,
    config::{Config, Exclusion},
};

/// Template size of a ring; user space creates the real rings with its own size
/// (the kernel does not compare `max_entries` of ring buffers in map-in-map).
pub const RING_TEMPLATE_BYTES: usize = 256 * 1024;

/// Connections tracked at once (LRU: a process that exits without closing its
/// sockets does not leak entries).
pub const MAX_CONNS: usize = 65_536;

/// One ring buffer per CPU, indexed by `bpf_get_smp_processor_id()`.
#[btf_map]
pub static RINGS: ArrayOfMaps<RingBuf<u8, RING_TEMPLATE_BYTES>, { MAX_CPUS as usize }> =
    ArrayOfMaps::new();

/// Slot 0: [`Config`] written by user space before attaching.
#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();

/// Per-CPU drop counters, indexed by [`DropReason`].
#[btf_map]
pub static DROPS: PerCpuArray<u64, { DropReason::COUNT as usize }> = PerCpuArray::new();

/// Per-CPU counters of connections left out on purpose, indexed by
/// [`Exclusion`].
#[btf_map]
pub static EXCLUDED: PerCpuArray<u64, { Exclusion::COUNT as usize }> = PerCpuArray::new();

/// Local ports of the agent's own open TCP connections (value unused). A
/// connection whose peer is on this host at one of these ports is the other
/// end of the agent's own traffic and is not captured. LRU: a missed close
/// cannot fill it.
#[btf_map]
pub static AGENT_PORTS: LruHashMap<u32, u8, 4096> = LruHashMap::new();

/// A data record being built: fixed part then payload, sent with one
/// `bpf_ringbuf_output` of the used length. Too big for the 512-byte stack.
#[repr(C)]
pub struct Scratch {
    pub data: Data,
    pub payload: [u8; MAX_PAYLOAD],
}

/// Per-CPU scratch for data records.
#[btf_map]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Per-CPU space to build a connection's open record in (see
/// `conn::emit_open`).
#[btf_map]
pub static OPEN_SCRATCH: PerCpuArray<tapwire_common::ConnOpen, 1> = PerCpuArray::new();

/// Per-CPU space to build a new connection's `CONNS` entry in (see
/// `conn::track`).
#[btf_map]
pub static STATE_SCRATCH: PerCpuArray<ConnState, 1> = PerCpuArray::new();

/// Per-CPU counter for connection ids: `cpu << 48 | n`.
#[btf_map]
pub static CONN_IDS: PerCpuArray<u64, 1> = PerCpuArray::new();

/// `ConnState::flags`: the connection carries TLS; its socket bytes are ciphertext.
pub const CONN_TLS: u32 = 1;
/// `ConnState::flags`: the first plain bytes were seen and were not a TLS record.
pub const CONN_PLAIN: u32 = 2;
/// `ConnState::flags`: the peer is on this host and the connection was
/// accepted (or found open): its open record waits for the first data, when
/// the agent's own port list is sure to name the peer if it is the agent's
/// (see `conn::settle`).
pub const CONN_OPEN_PENDING: u32 = 4;
/// `ConnState::flags`: a `tap.filters` entry skips the payload of this
/// process's connections: no data record is made (`config::skip::PAYLOAD`).
pub const CONN_NO_PAYLOAD: u32 = 8;
/// `ConnState::flags`: the connection's first socket bytes were looked at
/// for a TLS ClientHello (`sockets::first_bytes`).
pub const CONN_HELLO_DONE: u32 = 16;

/// What the probes know about one tracked TCP socket.
#[repr(C)]
pub struct ConnState {
    pub conn_id: u64,
    /// Next sequence number (the open record took 0).
    pub seq: u64,
    pub flags: u32,
    pub role: u32,
    /// Remote port while `CONN_OPEN_PENDING`.
    pub peer_port: u32,
    /// Length of the ClientHello message the next read brings: the first
    /// read took the record header alone.
    pub hello_body: u32,
    /// Payload bytes written and read while `CONN_NO_PAYLOAD` (no data
    /// record carries them), for the close record.
    pub skipped_out: u64,
    pub skipped_in: u64,
}

/// Tracked connections, keyed by `tgid << 32 | fd`.
#[btf_map]
pub static CONNS: LruHashMap<u64, ConnState, MAX_CONNS> = LruHashMap::new();

/// File descriptors known not to be TCP sockets, keyed like `CONNS`; cleared on
/// `close`.
#[btf_map]
pub static NOT_TCP: LruHashMap<u64, u8, MAX_CONNS> = LruHashMap::new();

/// Arguments of a socket syscall in flight, saved at entry for the exit probe.
#[repr(C)]
pub struct SyscallArgs {
    pub fd: i64,
    /// Buffer, iovec array or msghdr, depending on `shape`.
    pub ptr: u64,
    /// Byte count or iovec count.
    pub len: u64,
    /// `SHAPE_*`; [`SHAPE_IDLE`] when no call is in flight.
    pub shape: u32,
    /// Direction number.
    pub direction: u32,
}

/// The thread's entry is kept between calls, marked idle, so that a call
/// costs a lookup and a store instead of an insert and a delete.
pub const SHAPE_IDLE: u32 = 0;
pub const SHAPE_BUF: u32 = 1;
pub const SHAPE_IOV: u32 = 2;
pub const SHAPE_MSG: u32 = 3;
pub const SHAPE_CONNECT: u32 = 4;
pub const SHAPE_ACCEPT: u32 = 5;
/// A `connect` by the agent itself: only its local port is noted.
pub const SHAPE_AGENT_CONNECT: u32 = 6;

/// In-flight socket syscalls, keyed by `pid_tgid`: one entry per thread that
/// made one, reused by its next call (idle in between, `SHAPE_IDLE`). LRU,
/// and removed at thread exit (`process::sched_exit`): a thread that dies
/// inside a call never leaves its entry for good.
#[btf_map]
pub static SYSCALLS: LruHashMap<u64, SyscallArgs, 16_384> = LruHashMap::new();

/// A TLS call in flight on a thread: saved at the uprobe, completed at the
/// uretprobe.
#[repr(C)]
pub struct TlsCall {
    pub ssl: u64,
    pub buf: u64,
    /// `size_t *readbytes`/`*written` for the `_ex` shape, else 0.
    pub out: u64,
    /// fd named by a socket syscall inside this call, or -1.
    pub fd: i64,
    /// The session's fd in `SSL_FDS` when the call began, or -1: a socket
    /// syscall inside the call on that fd neither looks it up nor writes it.
    pub known_fd: i64,
    /// Stack pointer at entry: a session probe ([`crate::tls::ssl_session`])
    /// is at the call's return when the stack is one return address higher.
    /// 0 for calls paired by a uretprobe.
    pub sp: u64,
    /// `tls::FN_*` (from the attach cookie).
    pub func: u32,
    /// 1 while the call is in flight; 0 once it returned (the entry is kept
    /// for the thread's next call, as in [`SYSCALLS`]).
    pub live: u32,
}

/// TLS calls in flight, keyed by `pid_tgid`: one entry per thread, reused by
/// its next call. LRU, and removed at thread exit like [`SYSCALLS`] (a thread
/// killed inside `SSL_read`).
#[btf_map]
pub static TLS_CALLS: LruHashMap<u64, TlsCall, 16_384> = LruHashMap::new();

/// `SSL *` → fd, learned from the syscalls inside earlier calls.
#[repr(C)]
pub struct SslKey {
    pub tgid: u64,
    pub ssl: u64,
}

#[btf_map]
pub static SSL_FDS: LruHashMap<SslKey, i64, MAX_CONNS> = LruHashMap::new();

/// Selected processes (tgid or tid → `select::*` bits), when selection is on.
#[btf_map]
pub static SELECTED: HashMap<u32, u32, 65_536> = HashMap::new();

/// Selected cgroup ids.
#[btf_map]
pub static SELECTED_CGROUPS: HashMap<u64, u8, 256> = HashMap::new();

/// Processes a `tap.filters` entry applies to (tgid or tid →
/// `config::skip` bits). Written by user space when a process starts (it
/// knows the executable's path), copied to children at fork, cleared at exec
/// (the new program is decided again) and exit.
#[btf_map]
pub static FILTERED: HashMap<u32, u32, 65_536> = HashMap::new();

/// Inode numbers of selected executables.
#[btf_map]
pub static SELECTED_EXES: HashMap<u64, u8, 256> = HashMap::new();

/// Per-thread fd of the last ciphertext read made outside any TLS call, for
/// libraries driven through memory BIOs (node): there the socket I/O happens
/// outside `SSL_read`/`SSL_write`, so no syscall inside the call names the fd.
/// The read of a TLS record precedes, on the same thread, the `SSL_*` call
/// that consumes it; a session without a known fd takes this one at its
/// first call (see `tls::ssl_enter`). Keyed by `pid_tgid`.
#[btf_map]
pub static LAST_TLS_READ: LruHashMap<u64, i64, 16_384> = LruHashMap::new();

/// NSS's SSL layer identity per process (tgid), read at `SSL_ImportFD`'s
/// return (`nss::nss_import_return`): NSPR calls on descriptors without a
/// layer of this identity are not TLS. Removed at exec and process exit
/// (`process.rs`).
#[btf_map]
pub static NSS_SSL_LAYERS: LruHashMap<u32, i32, 16_384> = LruHashMap::new();

/// A Go `(*tls.Conn).Read` in flight, saved at entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoCall {
    /// The connection's socket.
    pub fd: i64,
    /// `b`'s pointer (for the `RET` probes).
    pub buf: u64,
}

/// Key of a Go call in flight: process and goroutine (`R14`, the `g`).
#[repr(C)]
pub struct GoKey {
    pub tgid: u64,
    pub goroutine: u64,
}

/// Go reads in flight, keyed by goroutine (LRU: a `Read` that returns early,
/// on an error, leaves its entry until the goroutine's next `Read`).
#[btf_map]
pub static GO_CALLS: LruHashMap<GoKey, GoCall, 16_384> = LruHashMap::new();

/// Files user space has inspected for TLS functions (written by user space):
/// mapping one of them emits no [`ExecMap`] record.
#[btf_map]
pub static INSPECTED: LruHashMap<FileKey, u8, 16_384> = LruHashMap::new();

/// Executable file mappings in flight: saved at `mmap` entry, emitted at its
/// return with the address. Keyed by `pid_tgid`.
#[btf_map]
pub static MMAP_CALLS: LruHashMap<u64, ExecMap, 4096> = LruHashMap::new();

/// `sendfile` calls in flight on captured connections: saved at entry,
/// emitted at return with the bytes sent. Keyed by `pid_tgid`.
#[btf_map]
pub static SENDFILES: LruHashMap<u64, FileSend, 4096> = LruHashMap::new();

/// Per-CPU space to build a [`FileSend`] (too big for the stack).
#[btf_map]
pub static SEND_SCRATCH: PerCpuArray<FileSend, 1> = PerCpuArray::new();

/// `openat` calls in flight of captured processes: the path pointer, keyed by
/// `pid_tgid`; a thread's entry is kept between its calls (0 when idle), like
/// [`SYSCALLS`].
#[btf_map]
pub static OPENS: LruHashMap<u64, u64, 4096> = LruHashMap::new();

/// The path each file descriptor of a captured process was opened by, keyed
/// like `CONNS` (`tgid << 32 | fd`), for naming the file of a `sendfile`.
/// Stale entries (a reused fd) are harmless: user space checks the inode.
#[btf_map]
pub static FD_PATHS: LruHashMap<u64, [u8; FILENAME_LEN], 8192> = LruHashMap::new();

/// Per-CPU space to read a path into.
#[btf_map]
pub static PATH_SCRATCH: PerCpuArray<[u8; FILENAME_LEN], 1> = PerCpuArray::new();

/// A `splice` call in flight of a captured process, saved at entry (see
/// [`crate::splice`]). Keyed by `pid_tgid`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SpliceCall {
    /// What the call moves: `splice::PIPE_TO_SOCKET` and friends.
    pub what: u32,
    /// The socket's descriptor, or the file's.
    pub fd: i32,
    /// The pipe.
    pub pipe: FileKey,
}

/// `splice` calls in flight.
#[btf_map]
pub static SPLICES: LruHashMap<u64, SpliceCall, 4096> = LruHashMap::new();

/// Where the bytes queued in a pipe came from, as far as `splice` shows it:
/// `unknown` bytes of no known source first, then `send.len` bytes of a file
/// range.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PipeSource {
    /// Bytes queued first whose source is not known.
    pub unknown: u64,
    /// The file range queued after them (`offset`, `len`).
    pub send: FileSend,
}

/// Pipes of captured processes that `splice` fed, by the pipe's inode.
#[btf_map]
pub static PIPE_SOURCES: LruHashMap<FileKey, PipeSource, 4096> = LruHashMap::new();

/// Per-CPU space to build a [`PipeSource`] (too big for the stack).
#[btf_map]
pub static PIPE_SCRATCH: PerCpuArray<PipeSource, 1> = PerCpuArray::new();
