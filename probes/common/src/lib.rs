//! Wire types shared by the eBPF probes and the user-space agent.
//!
//! Every type here is `#[repr(C)]` with fixed-width integers and explicit padding;
//! sizes are pinned by `const` asserts so both sides agree byte for byte. Kinds,
//! directions, sources and roles travel as plain integers and are decoded with
//! `TryFrom<u32>`, never `transmute`.
//!
//! A record in a ring buffer is one fixed part starting with a [`Header`],
//! followed, for [`Data`], by `cap_len` payload bytes. [`decode`] turns ring bytes
//! into a borrowed [`Record`] with checked slicing only.
#![no_std]

pub mod config;
pub mod decode;

pub use decode::{DecodeError, Record, decode};

/// Most payload bytes one data record carries. A larger read or write is split
/// across several records (consecutive `seq`, increasing `offset`), so no byte is
/// cut. 16 KiB is the TLS record plaintext maximum: one `SSL_read` rarely returns
/// more, so most calls fit in one record.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// Most records one probe hit may emit for a single call (so `MAX_PAYLOAD *
/// MAX_CHUNKS` bytes, 8 MiB): the verifier needs a bound on the split loop. Bytes
/// beyond it are counted under [`DropReason::CallTooLarge`].
pub const MAX_CHUNKS: u32 = 512;

/// Bytes a call's first record still copies while its ring is past the
/// high-water mark ([`config::Config::overload_percent`]); later records of
/// the call copy none. 4 KiB holds the usual request or response head (and
/// an HTTP/2 frame header with the start of its payload); a power of two, so
/// the verifier can bound the copy with a mask.
pub const OVERLOAD_PREFIX: usize = 4 * 1024;

/// Most bytes copied of a connection's first TLS record (its ClientHello),
/// once per connection (see [`Source::Handshake`]). A ClientHello is usually
/// 250–600 bytes, about 1,800 with a post-quantum key share; the server name
/// extension comes early in every library's order, so 2 KiB holds it.
pub const MAX_HELLO: usize = 2 * 1024;

/// Length of `task_struct::comm`.
pub const COMM_LEN: usize = 16;

/// Bytes of the exec'd file name kept in [`ProcExec`].
pub const FILENAME_LEN: usize = 256;

/// Most CPUs the per-CPU ring array can hold.
pub const MAX_CPUS: u32 = 256;

/// TLS function shapes, passed as the uprobe attach cookie so one program
/// serves every hooked function.
pub mod tls_fn {
    /// `int SSL_read(SSL *s, void *buf, int num)`: returns bytes read.
    pub const READ: u64 = 1;
    /// `int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)`: 1 on
    /// success (also the shape of OpenSSL's internal `ssl_read_internal`).
    pub const READ_EX: u64 = 2;
    /// `int SSL_write(SSL *s, const void *buf, int num)`: returns bytes written.
    pub const WRITE: u64 = 3;
    /// `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`:
    /// 1 on success (also `ssl_write_internal`'s shape).
    pub const WRITE_EX: u64 = 4;
}

/// Go `crypto/tls` probes: the attach cookie carries the function's shape,
/// flags, and the struct offsets from a `*tls.Conn` to its socket's fd (they
/// differ per program, and a cookie is per attached point).
///
/// Layout: bits 0–7 shape, 8–15 flags, 16–31 `tls.Conn.conn` offset, 32–47
/// `net.TCPConn` → `*netFD` offset, 48–63 `netFD` → `pfd.Sysfd` offset.
pub mod go_tls {
    /// `(*Conn).Read(b []byte) (int, error)`; numbers continue [`super::tls_fn`].
    pub const READ: u64 = 5;
    /// `(*Conn).Write(b []byte) (int, error)`.
    pub const WRITE: u64 = 6;
    /// Flag: the probe sits on the stack check's `jbe`; when the branch is
    /// taken (CF or ZF set) the function will start over: ignore this pass.
    pub const STACK_CHECK: u64 = 1 << 8;

    /// Packs a cookie.
    pub const fn cookie(shape_and_flags: u64, conn: u16, fd: u16, sysfd: u16) -> u64 {
        (shape_and_flags & 0xffff) | (conn as u64) << 16 | (fd as u64) << 32 | (sysfd as u64) << 48
    }

    /// The shape bits of a cookie.
    pub const fn shape(cookie: u64) -> u64 {
        cookie & 0xff
    }

    /// `(conn, fd, sysfd)` offsets of a cookie.
    pub const fn offsets(cookie: u64) -> (u64, u64, u64) {
        (
            (cookie >> 16) & 0xffff,
            (cookie >> 32) & 0xffff,
            (cookie >> 48) & 0xffff,
        )
    }
}

/// NSS probes (`PR_Read`/`PR_Write`/`PR_Recv`/`PR_Send` of `libnspr4.so`):
/// the attach cookie carries the function's shape and where the OS
/// descriptor sits in the bottom layer's private data (`PRFilePrivate`,
/// which NSPR's public headers do not describe: user space reads the offset
/// from the library's code).
///
/// Layout: bits 0–7 shape ([`super::tls_fn::READ`] or `WRITE`), 16–31 the
/// `PRFilePrivate` → `md.osfd` offset.
pub mod nss {
    /// Packs a cookie.
    pub const fn cookie(shape: u64, osfd: u16) -> u64 {
        (shape & 0xff) | (osfd as u64) << 16
    }

    /// The shape bits of a cookie.
    pub const fn shape(cookie: u64) -> u64 {
        cookie & 0xff
    }

    /// The `PRFilePrivate` → `md.osfd` offset of a cookie.
    pub const fn osfd_offset(cookie: u64) -> u64 {
        (cookie >> 16) & 0xffff
    }
}

/// Record kinds. Numbers are explicit and never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`ConnOpen`]: a TCP connection seen for the first time.
    ConnOpen = 1,
    /// [`Data`]: bytes read from or written to a connection.
    Data = 2,
    /// [`ConnClose`]: the file descriptor of a connection was closed.
    ConnClose = 3,
    /// [`ProcExec`]: a selected process called `execve`.
    ProcExec = 4,
    /// [`ProcExit`]: a selected process exited.
    ProcExit = 5,
    /// [`ExecMap`]: a selected process mapped a file executable that user
    /// space has not inspected yet.
    ExecMap = 6,
    /// [`FileSend`]: a captured connection sent bytes straight from a file
    /// (`sendfile`).
    FileSend = 7,
}

impl TryFrom<u32> for Kind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::ConnOpen,
            2 => Self::Data,
            3 => Self::ConnClose,
            4 => Self::ProcExec,
            5 => Self::ProcExit,
            6 => Self::ExecMap,
            7 => Self::FileSend,
            other => return Err(other),
        })
    }
}

/// Which way the bytes went, seen from the traced process.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Written by the process (`write`, `send*`, `SSL_write`).
    Egress = 1,
    /// Read by the process (`read`, `recv*`, `SSL_read`).
    Ingress = 2,
}

impl TryFrom<u32> for Direction {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Egress),
            2 => Ok(Self::Ingress),
            other => Err(other),
        }
    }
}

/// Where the bytes were captured.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Socket syscalls on a connection not known to carry TLS.
    Plain = 1,
    /// Plaintext inside the TLS library (`SSL_read`/`SSL_write` and friends).
    Tls = 2,
    /// The TLS ClientHello as it crossed the socket, in clear: the first
    /// handshake record a connection's first socket call moved (written by a
    /// client, read by a server), at most [`MAX_HELLO`] bytes, once per
    /// connection. Not part of the stream: user space reads the server name
    /// from it. A server that reads the record header alone first (OpenSSL
    /// does) gives two records: the 5-byte header, then the handshake message.
    Handshake = 3,
}

impl TryFrom<u32> for Source {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Plain),
            2 => Ok(Self::Tls),
            3 => Ok(Self::Handshake),
            other => Err(other),
        }
    }
}

/// Which end of the connection the process is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// First seen on an already open socket: the role is unknown.
    Unknown = 0,
    /// The process called `connect`.
    Client = 1,
    /// The process got the socket from `accept`/`accept4`.
    Server = 2,
}

impl TryFrom<u32> for Role {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            0 => Ok(Self::Unknown),
            1 => Ok(Self::Client),
            2 => Ok(Self::Server),
            other => Err(other),
        }
    }
}

/// Why the kernel side lost something. Index into the per-CPU drop counter map
/// ([`DropReason::COUNT`] slots).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// `bpf_ringbuf_output` failed: the CPU's ring was full. Counted per record.
    RingFull = 0,
    /// Reading the payload from user memory failed (page not present). Per record.
    CopyFailed = 1,
    /// A TLS call returned but no socket read/write inside it named the fd.
    TlsNoFd = 2,
    /// A call was larger than `MAX_PAYLOAD * MAX_CHUNKS`; the rest was not sent.
    CallTooLarge = 3,
    /// The connection table was full; the connection is not tracked.
    ConnTableFull = 4,
    /// Bytes of the stream lost with the records counted above (what each
    /// stood for: its `cap_len` and, under overload, its `shed_len`).
    LostBytes = 5,
    /// A per-CPU scratch or ring lookup failed (should never happen).
    Internal = 6,
    /// Reading kernel structures (task, file, socket) failed.
    KernelRead = 7,
    /// Inserting into a kernel map failed (the call or fd it describes is not
    /// followed).
    MapInsert = 8,
    /// A thread exited inside a socket or TLS call; the call's in-flight entry
    /// was reclaimed at its exit (not a loss of captured bytes).
    AbandonedCall = 9,
    /// Bytes `splice` moved into or out of a captured socket that the probes
    /// cannot see (not a file's bytes through a pipe); their sequence numbers
    /// are skipped, so the transaction shows a gap. Counts bytes.
    UnseenBytes = 10,
    /// Data records sent with only a prefix of their bytes copied because the
    /// ring was past its high-water mark (graceful overload). Per record.
    OverloadRecords = 11,
    /// Bytes those records did not copy (the sum of their
    /// [`Data::shed_len`]); the stream stays in sequence around them.
    OverloadShedBytes = 12,
}

impl DropReason {
    /// Number of reasons, the size of the counter map.
    pub const COUNT: u32 = 13;
    /// All reasons, in index order.
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        Self::RingFull,
        Self::CopyFailed,
        Self::TlsNoFd,
        Self::CallTooLarge,
        Self::ConnTableFull,
        Self::LostBytes,
        Self::Internal,
        Self::KernelRead,
        Self::MapInsert,
        Self::AbandonedCall,
        Self::UnseenBytes,
        Self::OverloadRecords,
        Self::OverloadShedBytes,
    ];

    /// Stable snake_case name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingFull => "ring_full",
            Self::CopyFailed => "copy_failed",
            Self::TlsNoFd => "tls_no_fd",
            Self::CallTooLarge => "call_too_large",
            Self::ConnTableFull => "conn_table_full",
            Self::LostBytes => "lost_bytes",
            Self::Internal => "internal",
            Self::KernelRead => "kernel_read",
            Self::MapInsert => "map_insert",
            Self::AbandonedCall => "abandoned_call",
            Self::UnseenBytes => "unseen_bytes",
            Self::OverloadRecords => "overload_records",
            Self::OverloadShedBytes => "overload_shed_bytes",
        }
    }
}

/// Common start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// A [`Kind`] number.
    pub kind: u32,
    /// CPU the record was produced on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at capture.
    pub ts_ns: u64,
    /// Process id (thread-group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
}

/// A TCP connection seen for the first time (at `connect`/`accept` return, or at
/// the first read/write on a socket opened before the agent started).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnOpen {
    /// `kind` = [`Kind::ConnOpen`].
    pub header: Header,
    /// Connection id, unique on this host while the agent runs.
    pub conn_id: u64,
    /// Always 0: the open record comes first in the connection's sequence.
    pub seq: u64,
    /// cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// `comm` of the thread, NUL padded.
    pub comm: [u8; COMM_LEN],
    /// Local address: IPv4 in the first 4 bytes, or IPv6 (network order).
    pub local_addr: [u8; 16],
    /// Remote address, as `local_addr`.
    pub remote_addr: [u8; 16],
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order.
    pub remote_port: u16,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Explicit padding.
    pub _pad0: u16,
    /// A [`Role`] number.
    pub role: u32,
    /// The socket's file descriptor in the process.
    pub fd: i32,
}

/// Bytes read from or written to a connection; `cap_len` payload bytes follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Data {
    /// `kind` = [`Kind::Data`].
    pub header: Header,
    /// Connection id (see [`ConnOpen::conn_id`]).
    pub conn_id: u64,
    /// Per-connection sequence number: open is 0, each record after takes the
    /// next number, so a gap means a record was lost.
    pub seq: u64,
    /// Length of the whole call (the bytes the read/write moved).
    pub call_len: u64,
    /// Offset of this record's bytes within the call.
    pub offset: u64,
    /// Payload bytes following this header (≤ [`MAX_PAYLOAD`]).
    pub cap_len: u32,
    /// A [`Direction`] number.
    pub direction: u32,
    /// A [`Source`] number.
    pub source: u32,
    /// The socket's file descriptor.
    pub fd: i32,
    /// Bytes of the call right after the payload that were not copied: the
    /// ring was past its high-water mark, so the record carries only a
    /// prefix (graceful overload). The stream goes on `shed_len` bytes after
    /// the payload's end; 0 for a record carrying all its bytes.
    pub shed_len: u64,
}

/// The file descriptor of a connection was closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnClose {
    /// `kind` = [`Kind::ConnClose`].
    pub header: Header,
    /// Connection id.
    pub conn_id: u64,
    /// Sequence number after the last data record.
    pub seq: u64,
    /// The closed file descriptor.
    pub fd: i32,
    /// Explicit padding.
    pub _pad0: u32,
    /// Payload bytes the process wrote that no data record carries: a
    /// `tap.filters` entry skips the payload of this connection (else 0).
    pub skipped_out: u64,
    /// Payload bytes the process read that no data record carries (as
    /// `skipped_out`).
    pub skipped_in: u64,
}

/// A selected process called `execve`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcExec {
    /// `kind` = [`Kind::ProcExec`].
    pub header: Header,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// `comm` after exec, NUL padded.
    pub comm: [u8; COMM_LEN],
    /// The file name passed to exec, NUL terminated (truncated if longer).
    pub filename: [u8; FILENAME_LEN],
}

/// A selected process exited (its thread-group leader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcExit {
    /// `kind` = [`Kind::ProcExit`].
    pub header: Header,
    /// cgroup v2 id.
    pub cgroup_id: u64,
}

/// A selected process mapped a file executable (`mmap` with `PROT_EXEC` of a
/// file descriptor) that user space has not marked inspected: a shared library
/// loaded by the dynamic loader or `dlopen`. User space finds the file through
/// the mapping (`/proc/PID/map_files`) and probes it if it has TLS functions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMap {
    /// `kind` = [`Kind::ExecMap`].
    pub header: Header,
    /// The file's device in the kernel's encoding (`MAJOR << 20 | MINOR`).
    pub dev: u64,
    /// The file's inode number.
    pub ino: u64,
    /// Start address of the new mapping.
    pub addr: u64,
    /// The mapped file descriptor.
    pub fd: i32,
    /// Explicit padding.
    pub _pad0: u32,
}

/// A captured connection sent `len` bytes of a file with `sendfile`: the bytes
/// never pass through user memory, so the probes name the file and range and
/// user space reads them from the file. The record stands for `chunks`
/// consecutive sequence numbers from `seq`, one per [`MAX_PAYLOAD`] bytes, so
/// user space can hand the bytes on as ordinary data records.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSend {
    /// `kind` = [`Kind::FileSend`].
    pub header: Header,
    /// Connection id.
    pub conn_id: u64,
    /// First sequence number taken.
    pub seq: u64,
    /// Offset in the file of the first byte sent.
    pub offset: u64,
    /// Bytes sent.
    pub len: u64,
    /// The file's size at the call.
    pub file_size: u64,
    /// The file's modification time at the call, seconds (0 if unknown).
    pub mtime_sec: u64,
    /// The file's device, as [`ExecMap::dev`].
    pub dev: u64,
    /// The file's inode number.
    pub ino: u64,
    /// Sequence numbers taken: `len` in [`MAX_PAYLOAD`] pieces.
    pub chunks: u32,
    /// The socket's file descriptor.
    pub fd: i32,
    /// The file's descriptor.
    pub in_fd: i32,
    /// Explicit padding.
    pub _pad0: u32,
    /// The path the process opened the file by (`openat`), NUL terminated,
    /// empty if not seen: user space opens the file by it when the descriptor
    /// is already closed.
    pub path: [u8; FILENAME_LEN],
}

impl Default for FileSend {
    fn default() -> Self {
        Self {
            header: Header::default(),
            conn_id: 0,
            seq: 0,
            offset: 0,
            len: 0,
            file_size: 0,
            mtime_sec: 0,
            dev: 0,
            ino: 0,
            chunks: 0,
            fd: 0,
            in_fd: 0,
            _pad0: 0,
            path: [0; FILENAME_LEN],
        }
    }
}

impl Data {
    /// The record's bytes as the probes write them (for records user space
    /// makes itself, e.g. from a [`FileSend`]).
    pub fn encode(&self) -> [u8; size_of::<Data>()] {
        let mut out = [0u8; size_of::<Data>()];
        let h = &self.header;
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&h.kind.to_le_bytes());
        put(&h.cpu.to_le_bytes());
        put(&h.ts_ns.to_le_bytes());
        put(&h.pid.to_le_bytes());
        put(&h.tid.to_le_bytes());
        put(&self.conn_id.to_le_bytes());
        put(&self.seq.to_le_bytes());
        put(&self.call_len.to_le_bytes());
        put(&self.offset.to_le_bytes());
        put(&self.cap_len.to_le_bytes());
        put(&self.direction.to_le_bytes());
        put(&self.source.to_le_bytes());
        put(&self.fd.to_le_bytes());
        put(&self.shed_len.to_le_bytes());
        out
    }
}

/// Key of the probes' `INSPECTED` map: a file user space has looked at, so
/// mapping it again emits no [`ExecMap`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// As [`ExecMap::dev`].
    pub dev: u64,
    /// As [`ExecMap::ino`].
    pub ino: u64,
}

const _: () = assert!(size_of::<Header>() == 24);
const _: () = assert!(size_of::<ExecMap>() == 56);
const _: () = assert!(size_of::<FileKey>() == 16);
const _: () = assert!(size_of::<FileSend>() == 360);
const _: () = assert!(size_of::<ConnOpen>() == 112);
const _: () = assert!(size_of::<Data>() == 80);
const _: () = assert!(size_of::<ConnClose>() == 64);
const _: () = assert!(size_of::<ProcExec>() == 304);
const _: () = assert!(size_of::<ProcExit>() == 32);
// The kernel reserves ring records at 8-byte alignment.
const _: () = assert!(align_of::<Data>() <= 8 && align_of::<ConnOpen>() <= 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these types are `#[repr(C)]`, contain only integers and byte
    // arrays, and have no implicit padding (every gap is an explicit `_pad`
    // field, pinned by the size asserts above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Header {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::config::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FileKey {}
}
