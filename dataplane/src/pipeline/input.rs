//! What a shard consumes: one captured record, decoded from its frame.
//!
//! The shard works on these types rather than on the wire structs so it can be
//! driven by synthetic records (tests, the capacity benchmark) exactly as by the
//! kernel; [`decode`] is the one place that maps wire records onto them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which end of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It called `connect`.
    Client,
    /// It accepted the connection.
    Server,
    /// The socket was open before capture started.
    Unknown,
}

/// Which way bytes moved, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Written by the process.
    Egress,
    /// Read by the process.
    Ingress,
}

/// A connection's identity and owner, from its open record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Connection id.
    pub conn_id: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Kernel `comm` (shared: every transaction of the connection carries it).
    pub comm: std::sync::Arc<str>,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// Which end the process is.
    pub role: Role,
    /// Kernel monotonic time of the open, ns.
    pub ts_ns: u64,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// A connection was opened (seq 0).
    Open(ConnInfo),
    /// Bytes moved on a connection.
    Data {
        /// Connection id.
        conn_id: u64,
        /// Per-connection sequence number.
        seq: u64,
        /// Kernel monotonic time, ns.
        ts_ns: u64,
        /// Process that moved them.
        pid: u32,
        /// Thread that moved them.
        tid: u32,
        /// Direction.
        flow: Flow,
        /// Captured inside a TLS library.
        tls: bool,
        /// The bytes.
        payload: &'a [u8],
        /// Bytes right after `payload` that the probes did not copy (graceful
        /// overload): the stream goes on this many bytes later.
        shed: u64,
    },
    /// A TLS connection's ClientHello (or its record header alone), copied
    /// from the socket for the server name; not part of the stream.
    Hello {
        /// Connection id.
        conn_id: u64,
        /// Per-connection sequence number.
        seq: u64,
        /// Process that moved it.
        pid: u32,
        /// The bytes (at most `tapwire_common::MAX_HELLO`).
        payload: &'a [u8],
    },
    /// The connection was closed.
    Close {
        /// Connection id.
        conn_id: u64,
        /// Sequence number after the last data record.
        seq: u64,
        /// Kernel monotonic time, ns.
        ts_ns: u64,
        /// Payload bytes written that no data record carried (a filter
        /// skips the connection's payload).
        skipped_sent: u64,
        /// Payload bytes read that no data record carried.
        skipped_received: u64,
    },
    /// A process exited: its connections are released.
    Exit {
        /// Process id.
        pid: u32,
    },
    /// A record the shard has no use for (process exec).
    Other,
}

impl Input<'_> {
    /// The connection a record belongs to, for sharding and ordering.
    pub fn conn_seq(&self) -> Option<(u64, u64)> {
        match self {
            Input::Open(info) => Some((info.conn_id, 0)),
            Input::Data { conn_id, seq, .. }
            | Input::Hello { conn_id, seq, .. }
            | Input::Close { conn_id, seq, .. } => Some((*conn_id, *seq)),
            Input::Exit { .. } | Input::Other => None,
        }
    }

    /// The process that sent the record, where it says.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Input::Open(info) => Some(info.pid),
            Input::Data { pid, .. } | Input::Hello { pid, .. } | Input::Exit { pid } => Some(*pid),
            Input::Close { .. } | Input::Other => None,
        }
    }
}

/// Builds a socket address from the wire's 16-byte address, port and family.
pub fn socket_addr(addr: &[u8; 16], port: u16, family: u16) -> SocketAddr {
    const AF_INET: u16 = 2;
    let ip = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        let v6 = Ipv6Addr::from(*addr);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    SocketAddr::new(ip, port)
}

/// The text of a NUL-padded `comm`.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
