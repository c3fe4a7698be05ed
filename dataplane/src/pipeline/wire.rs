//! Wire records (from the kernel's ring buffers) as shard [`Input`]s.

use tapwire_common::{Direction, Record, Role as WireRole, Source};

use super::input::{ConnInfo, Flow, Input, Role, comm_str, socket_addr};

/// Decodes one raw ring record; `None` if it is malformed.
pub fn decode(frame: &[u8]) -> Option<Input<'_>> {
    Some(from_record(tapwire_common::decode(frame).ok()?))
}

/// The shard's view of a decoded wire record.
pub fn from_record(record: Record<'_>) -> Input<'_> {
    match record {
        Record::ConnOpen(open) => Input::Open(ConnInfo {
            conn_id: open.conn_id,
            pid: open.header.pid,
            tid: open.header.tid,
            comm: comm_str(&open.comm).into(),
            cgroup_id: open.cgroup_id,
            local: socket_addr(&open.local_addr, open.local_port, open.family),
            remote: socket_addr(&open.remote_addr, open.remote_port, open.family),
            role: match WireRole::try_from(open.role) {
                Ok(WireRole::Client) => Role::Client,
                Ok(WireRole::Server) => Role::Server,
                _ => Role::Unknown,
            },
            ts_ns: open.header.ts_ns,
        }),
        Record::Data {
            data,
            source: Source::Handshake,
            payload,
            ..
        } => Input::Hello {
            conn_id: data.conn_id,
            seq: data.seq,
            pid: data.header.pid,
            payload,
        },
        Record::Data {
            data,
            direction,
            source,
            payload,
        } => Input::Data {
            conn_id: data.conn_id,
            seq: data.seq,
            ts_ns: data.header.ts_ns,
            pid: data.header.pid,
            tid: data.header.tid,
            flow: match direction {
                Direction::Egress => Flow::Egress,
                Direction::Ingress => Flow::Ingress,
            },
            tls: source == Source::Tls,
            payload,
            shed: data.shed_len,
        },
        Record::ConnClose(close) => Input::Close {
            conn_id: close.conn_id,
            seq: close.seq,
            ts_ns: close.header.ts_ns,
            skipped_sent: close.skipped_out,
            skipped_received: close.skipped_in,
        },
        Record::ProcExit(exit) => Input::Exit {
            pid: exit.header.pid,
        },
        Record::ProcExec(_) | Record::ExecMap(_) | Record::FileSend(_) => Input::Other,
    }
}

/// The connection a record belongs to, for routing to its shard.
#[inline]
pub fn conn_id(record: &Record<'_>) -> Option<u64> {
    match record {
        Record::ConnOpen(open) => Some(open.conn_id),
        Record::Data { data, .. } => Some(data.conn_id),
        Record::ConnClose(close) => Some(close.conn_id),
        Record::ProcExec(_) | Record::ProcExit(_) | Record::ExecMap(_) | Record::FileSend(_) => {
            None
        }
    }
}
