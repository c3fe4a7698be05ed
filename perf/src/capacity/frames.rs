//! Synthetic records for the capacity run, and the decoder the shards use for
//! them.
//!
//! A frame is a 27-byte header (kind u8, connection id u64, sequence u64,
//! timestamp u64, flow u8, tls u8, all little-endian) and the payload. It carries
//! what [`Input`] needs, so the shards do the same work as for kernel records;
//! the kernel's own wire format differs, but not in any way that changes the
//! cost of sharding, reordering and parsing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tapwire::pipeline::input::{ConnInfo, Flow, Input, Role};

/// Header bytes before the payload.
pub const HEADER_BYTES: usize = 27;
/// Most payload bytes per record: the probes split larger writes (16 KiB, the
/// bounded copy per record of the design).
pub const MAX_RECORD_PAYLOAD: usize = 16 * 1024;

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Connection opened.
    Open = 0,
    /// Payload bytes.
    Data = 1,
    /// Connection closed.
    Close = 2,
}

/// Writes a frame header into `out`.
pub fn header(kind: Kind, conn: u64, seq: u64, ts_ns: u64, flow: Flow) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0] = kind as u8;
    h[1..9].copy_from_slice(&conn.to_le_bytes());
    h[9..17].copy_from_slice(&seq.to_le_bytes());
    h[17..25].copy_from_slice(&ts_ns.to_le_bytes());
    h[25] = u8::from(flow == Flow::Egress);
    h[26] = 1; // captured inside TLS
    h
}

/// Decodes a frame ([`tapwire::pipeline::shard::Decode`]).
pub fn decode(f: &[u8]) -> Option<Input<'_>> {
    let u64_at = |i: usize| Some(u64::from_le_bytes(f.get(i..i + 8)?.try_into().ok()?));
    let (conn_id, seq, ts_ns) = (u64_at(1)?, u64_at(9)?, u64_at(17)?);
    let flow = if *f.get(25)? == 1 {
        Flow::Egress
    } else {
        Flow::Ingress
    };
    let tls = *f.get(26)? == 1;
    Some(match *f.first()? {
        0 => Input::Open(ConnInfo {
            conn_id,
            pid: 1000,
            tid: 1000,
            comm: "nginx".into(),
            cgroup_id: 1,
            local: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443),
            remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), (conn_id % 60000) as u16),
            role: Role::Server,
            ts_ns,
        }),
        1 => Input::Data {
            conn_id,
            seq,
            ts_ns,
            pid: 1000,
            tid: 1000,
            flow,
            tls,
            payload: f.get(HEADER_BYTES..)?,
            shed: 0,
        },
        2 => Input::Close {
            conn_id,
            seq,
            ts_ns,
            skipped_sent: 0,
            skipped_received: 0,
        },
        _ => return None,
    })
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
    use tapwire::pipeline::shard::{Output, Shard};

    use super::*;

    #[test]
    fn a_shard_turns_the_records_into_transactions() {
        let ex = Exchange::new(64 * 1024);
        let mut shard = Shard::new(decode, Vec::new());
        let open = header(Kind::Open, 7, 0, 1, Flow::Egress);
        shard.offer(&open, 1);
        let mut seq = 1;
        for _ in 0..3 {
            for (flow, payload) in ex.records() {
                let mut f = header(Kind::Data, 7, seq, seq, flow).to_vec();
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
