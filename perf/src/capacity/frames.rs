//! Records for the capacity run, in the probes' own wire format (the bytes a
//! ring holds: [`tapwire_common`]'s `ConnOpen`, `Data` and `ConnClose`), so
//! the shards decode them with the agent's decoder
//! ([`tapwire::pipeline::wire::decode`]) and do exactly the work they do for
//! kernel records. Only the payloads are made up: an nginx-like exchange.

use tapwire::pipeline::input::Flow;
use tapwire_common::{ConnClose, ConnOpen, Data, Direction, Header, Role, Source};

pub use tapwire::pipeline::wire::decode;

/// Most payload bytes per record: the probes split larger calls (16 KiB, the
/// bounded copy per record of the design).
pub const MAX_RECORD_PAYLOAD: usize = tapwire_common::MAX_PAYLOAD;

/// The process every record comes from.
const PID: u32 = 1000;
/// Its socket.
const FD: i32 = 7;

fn header(kind: tapwire_common::Kind, ts_ns: u64) -> Header {
    Header {
        kind: kind as u32,
        cpu: 0,
        ts_ns,
        pid: PID,
        tid: PID,
    }
}

/// Appends `h` as the probes write it.
fn put_header(out: &mut Vec<u8>, h: &Header) {
    out.extend_from_slice(&h.kind.to_le_bytes());
    out.extend_from_slice(&h.cpu.to_le_bytes());
    out.extend_from_slice(&h.ts_ns.to_le_bytes());
    out.extend_from_slice(&h.pid.to_le_bytes());
    out.extend_from_slice(&h.tid.to_le_bytes());
}

/// The open record of server-side TLS connection `conn` (nginx on
/// 127.0.0.1:8443).
pub fn open(conn: u64, ts_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of::<ConnOpen>());
    put_header(&mut out, &header(tapwire_common::Kind::ConnOpen, ts_ns));
    out.extend_from_slice(&conn.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // seq
    out.extend_from_slice(&1u64.to_le_bytes()); // cgroup id
    let mut comm = [0u8; tapwire_common::COMM_LEN];
    comm[..5].copy_from_slice(b"nginx");
    out.extend_from_slice(&comm);
    let mut local = [0u8; 16];
    local[..4].copy_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&local); // local address
    out.extend_from_slice(&local); // remote address
    out.extend_from_slice(&8443u16.to_le_bytes());
    out.extend_from_slice(&((conn % 60000) as u16 + 1024).to_le_bytes());
    out.extend_from_slice(&(libc::AF_INET as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // padding
    out.extend_from_slice(&(Role::Server as u32).to_le_bytes());
    out.extend_from_slice(&FD.to_le_bytes());
    out
}

/// The header of a data record of `conn` carrying `cap_len` payload bytes
/// (one whole call of that length), read from TLS.
pub fn data(
    conn: u64,
    seq: u64,
    ts_ns: u64,
    flow: Flow,
    cap_len: usize,
) -> [u8; size_of::<Data>()] {
    Data {
        header: header(tapwire_common::Kind::Data, ts_ns),
        conn_id: conn,
        seq,
        call_len: cap_len as u64,
        offset: 0,
        cap_len: cap_len as u32,
        direction: match flow {
            Flow::Egress => Direction::Egress,
            Flow::Ingress => Direction::Ingress,
        } as u32,
        source: Source::Tls as u32,
        fd: FD,
        shed_len: 0,
    }
    .encode()
}

/// The close record of `conn`, `seq` after its last data record.
pub fn close(conn: u64, seq: u64, ts_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of::<ConnClose>());
    put_header(&mut out, &header(tapwire_common::Kind::ConnClose, ts_ns));
    out.extend_from_slice(&conn.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&FD.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // padding
    out.extend_from_slice(&0u64.to_le_bytes()); // skipped out
    out.extend_from_slice(&0u64.to_le_bytes()); // skipped in
    out
}

/// One request/response exchange as the server sees it: records in order.
pub struct Exchange {
    /// The request bytes (read by the server).
    pub request: Vec<u8>,
    /// The response (head and body), written by the server.
    pub response: Vec<u8>,
}

impl Exchange {
    /// A GET answered with `body_bytes` of body.
    pub fn new(body_bytes: usize) -> Self {
        let request = format!(
            "GET /{body_bytes}.bin HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nUser-Agent: tapwire-bench\r\nAccept: */*\r\n\r\n"
        )
        .into_bytes();
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 00:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_bytes}\r\nConnection: keep-alive\r\nAccept-Ranges: bytes\r\n\r\n"
        )
        .into_bytes();
        response.extend((0..body_bytes).map(|i| b'a' + (i % 26) as u8));
        Self { request, response }
    }

    /// Mean payload bytes per record.
    pub fn mean_record_bytes(&self) -> f64 {
        let records = self.records();
        records.iter().map(|(_, p)| p.len()).sum::<usize>() as f64 / records.len() as f64
    }

    /// The payloads of its records, in order, with their flows.
    pub fn records(&self) -> Vec<(Flow, &[u8])> {
        let mut out = vec![(Flow::Ingress, self.request.as_slice())];
        out.extend(
            self.response
                .chunks(MAX_RECORD_PAYLOAD)
                .map(|c| (Flow::Egress, c)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use tapwire::pipeline::input::{Input, Role};
    use tapwire::pipeline::shard::{Output, Shard};

    use super::*;

    #[test]
    fn records_have_the_probes_sizes_and_decode_as_written() {
        let o = open(7, 1);
        assert_eq!(o.len(), size_of::<ConnOpen>());
        match decode(&o) {
            Some(Input::Open(info)) => {
                assert_eq!((info.conn_id, info.pid, info.role), (7, PID, Role::Server));
                assert_eq!(info.local.to_string(), "127.0.0.1:8443");
            }
            _ => panic!("not an open record"),
        }
        assert_eq!(close(7, 3, 2).len(), size_of::<ConnClose>());
        assert!(matches!(
            decode(&close(7, 3, 2)),
            Some(Input::Close {
                conn_id: 7,
                seq: 3,
                ..
            })
        ));
        let mut d = data(7, 1, 2, Flow::Egress, 5).to_vec();
        d.extend_from_slice(b"hello");
        match decode(&d) {
            Some(Input::Data {
                payload,
                tls,
                flow,
                seq,
                ..
            }) => {
                assert_eq!(
                    (payload, tls, flow, seq),
                    (&b"hello"[..], true, Flow::Egress, 1)
                );
            }
            _ => panic!("not a data record"),
        }
    }

    #[test]
    fn a_shard_turns_the_records_into_transactions() {
        let ex = Exchange::new(64 * 1024);
        let mut shard = Shard::new(decode, Vec::new());
        shard.offer(&open(7, 1), 1);
        let mut seq = 1;
        for _ in 0..3 {
            for (flow, payload) in ex.records() {
                let mut f = data(7, seq, seq, flow, payload.len()).to_vec();
                f.extend_from_slice(payload);
                shard.offer(&f, seq);
                seq += 1;
            }
        }
        shard.tick(u64::MAX);
        let txns = shard
            .sink_mut()
            .iter()
            .filter(|o| matches!(o, Output::Txn(_)))
            .count();
        assert_eq!(txns, 3);
        assert_eq!(shard.stats.parse_errors, 0);
        assert_eq!(shard.stats.records, 1 + 3 * ex.records().len() as u64);
    }
}
