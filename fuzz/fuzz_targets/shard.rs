//! A shard fed records in any order: opens, data, closes and process exits for
//! any connection ids, with gaps, duplicates, out-of-order and wild sequence
//! numbers, TLS and plain sources mixed, and the clock jumping past the reorder
//! and idle timeouts. Whatever comes, the shard must not panic and must stay
//! consistent:
//!
//! - every frame is counted once, and the payload bytes it parsed plus those it
//!   dropped as late never exceed what was offered;
//! - no transaction's kept body exceeds the bytes it saw or the per-message
//!   limit, and the bodies and closed connections add up to no more than the
//!   bytes parsed;
//! - the memory budget is never overdrawn, and once the shard has stopped and
//!   its output is dropped every byte is given back (nothing leaks);
//! - the connection table stays within its limit.
//!
//! Input: a sequence of operations, each an opcode byte and its arguments (see
//! [`Ops`]); payloads may be far larger than the HTTP parsers' limits.

#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use tapwire_fuzz::pipeline::budget::Budget;
use tapwire_fuzz::pipeline::input::{ConnInfo, Flow, Input, Role};
use tapwire_fuzz::pipeline::shard::{MAX_CONNS_PER_SHARD, Output, Shard};
use tapwire_fuzz::pipeline::txn::MAX_BODY_BYTES;

/// The shard's memory budget here: small, so shedding and over-budget reorder
/// windows are reached.
const BUDGET_BYTES: usize = 256 * 1024;

/// Frame: kind u8, conn u64, seq u64, ts u64, pid u32, flow u8, tls u8, role u8,
/// then the payload. Kinds: 0 open, 1 data, 2 close, 3 exit, others unused.
const FRAME_HEADER: usize = 1 + 8 + 8 + 8 + 4 + 3;

fn frame(
    kind: u8,
    conn: u64,
    seq: u64,
    ts: u64,
    pid: u32,
    flags: [u8; 3],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER + payload.len());
    f.push(kind);
    f.extend_from_slice(&conn.to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&ts.to_le_bytes());
    f.extend_from_slice(&pid.to_le_bytes());
    f.extend_from_slice(&flags);
    f.extend_from_slice(payload);
    f
}

fn decode(f: &[u8]) -> Option<Input<'_>> {
    let u64_at = |i: usize| Some(u64::from_le_bytes(f.get(i..i + 8)?.try_into().ok()?));
    let (conn_id, seq, ts_ns) = (u64_at(1)?, u64_at(9)?, u64_at(17)?);
    let pid = u32::from_le_bytes(f.get(25..29)?.try_into().ok()?);
    let [flow, tls, role] = f.get(29..32)?.try_into().ok()?;
    let flow = if flow & 1 == 1 {
        Flow::Egress
    } else {
        Flow::Ingress
    };
    Some(match f[0] {
        0 => Input::Open(ConnInfo {
            conn_id,
            pid,
            tid: pid,
            comm: "fuzz".into(),
            cgroup_id: 1,
            local: SocketAddr::from(([127, 0, 0, 1], 40000)),
            remote: SocketAddr::from(([10, 0, 0, 1], 80)),
            role: match role % 3 {
                0 => Role::Client,
                1 => Role::Server,
                _ => Role::Unknown,
            },
            ts_ns,
        }),
        1 => Input::Data {
            conn_id,
            seq,
            ts_ns,
            pid,
            tid: pid,
            flow,
            tls: tls & 1 == 1,
            payload: &f[FRAME_HEADER..],
            // No graceful-overload prefixes: every byte a record stands for
            // is in its payload, which the byte-count checks rely on.
            shed: 0,
        },
        // Closes carry no skipped bytes (those of connections a filter keeps
        // without payload), so connection totals stay within the bytes parsed.
        2 => Input::Close {
            conn_id,
            seq,
            ts_ns,
            skipped_sent: 0,
            skipped_received: 0,
        },
        3 => Input::Exit { pid },
        _ => return None,
    })
}

/// Payload prefixes that take the parsers past detection quickly.
const PREFIXES: [&[u8]; 4] = [
    b"GET /a?token=x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x00\x00\x05\x01\x04\x00\x00\x00\x01",
];

/// Clock steps: none, within the reorder timeout, past it, past the idle timeout.
const STEPS_NS: [u64; 8] = [
    0,
    1_000,
    1_000_000,
    100_000_000,
    600_000_000,
    2_000_000_000,
    700_000_000_000,
    u64::MAX / 4,
];

/// The fuzz input read as operations.
struct Ops<'a> {
    data: &'a [u8],
}

impl<'a> Ops<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Any connection id: small ones (which collide), ones near the top of the
    /// range, and spread-out ones.
    fn conn_id(&mut self) -> Option<u64> {
        let c = self.byte()?;
        Some(match c >> 6 {
            0 => u64::from(c),
            1 => u64::MAX - u64::from(c & 63),
            2 => u64::from(c & 63) << 58,
            _ => u64::from(c).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        })
    }
}

/// Next sequence number per connection, so most records come in order and the
/// rest are duplicates, gaps or anywhere.
fn seq_for(next: &mut HashMap<u64, u64>, conn: u64, mode: u8) -> u64 {
    let n = next.entry(conn).or_insert(1);
    let arg = u64::from(mode >> 2);
    match mode & 3 {
        0 => {
            *n += 1;
            *n - 1
        }
        1 => n.saturating_sub(1 + arg % 4),
        2 => {
            *n += 1 + arg;
            *n - 1
        }
        _ if mode & 0x80 != 0 => u64::MAX - (arg & 31),
        _ => arg << (arg % 48),
    }
}

fuzz_target!(|data: &[u8]| {
    let budget = Budget::new(BUDGET_BYTES);
    let mut shard = Shard::with_budget(decode, Vec::<Output>::new(), budget.clone());
    let mut ops = Ops { data };
    let mut next_seq = HashMap::new();
    let mut now: u64 = 1;
    let (mut frames, mut offered_bytes) = (0u64, 0u64);
    while let Some(op) = ops.byte() {
        now = now.saturating_add(1_000);
        let f = match op % 8 {
            0 => {
                let (Some(conn), Some(pid), Some(role)) = (ops.conn_id(), ops.byte(), ops.byte())
                else {
                    break;
                };
                next_seq.insert(conn, 1);
                frame(0, conn, 0, now, u32::from(pid % 4), [0, 0, role], &[])
            }
            1..=3 => {
                let (Some(conn), Some(mode), Some(pid), Some(lo), Some(hi)) = (
                    ops.conn_id(),
                    ops.byte(),
                    ops.byte(),
                    ops.byte(),
                    ops.byte(),
                ) else {
                    break;
                };
                let seq = seq_for(&mut next_seq, conn, mode);
                let mut payload = Vec::new();
                if op >> 5 >= 4 {
                    payload.extend_from_slice(PREFIXES[usize::from(op >> 5) - 4]);
                }
                payload.extend_from_slice(ops.bytes(usize::from(u16::from_le_bytes([lo, hi]))));
                offered_bytes += payload.len() as u64;
                let flags = [(op >> 3) & 1, (op >> 4) & 1, 0];
                frame(1, conn, seq, now, u32::from(pid % 4), flags, &payload)
            }
            4 => {
                let (Some(conn), Some(mode)) = (ops.conn_id(), ops.byte()) else {
                    break;
                };
                let seq = seq_for(&mut next_seq, conn, mode);
                frame(2, conn, seq, now, 0, [0; 3], &[])
            }
            5 => {
                let Some(pid) = ops.byte() else { break };
                frame(3, 0, 0, now, u32::from(pid % 4), [0; 3], &[])
            }
            6 => {
                let Some(step) = ops.byte() else { break };
                now = now.saturating_add(STEPS_NS[usize::from(step % 8)]);
                shard.tick(now);
                continue;
            }
            _ => {
                // An undecodable frame.
                vec![0xff; usize::from(op >> 3)]
            }
        };
        shard.offer(&f, now);
        frames += 1;
        assert!(budget.used() <= BUDGET_BYTES, "budget overdrawn");
        assert!(shard.connections() <= MAX_CONNS_PER_SHARD);
    }
    shard.tick(now.saturating_add(STEPS_NS[5]));
    shard.stop();

    let stats = shard.stats;
    assert_eq!(stats.records, frames, "every frame counted once");
    assert!(
        stats.bytes + stats.late_bytes <= offered_bytes,
        "parsed {} + late {} bytes of {offered_bytes} offered",
        stats.bytes,
        stats.late_bytes
    );
    let outputs = std::mem::take(shard.sink_mut());
    let (mut txns, mut body_bytes, mut conn_bytes) = (0u64, 0u64, 0u64);
    for out in &outputs {
        match out {
            Output::Txn(t) => {
                txns += 1;
                for m in [&t.request, &t.response] {
                    assert!(
                        m.body.len() as u64 <= m.body_bytes,
                        "kept more body than seen"
                    );
                    assert!(m.body.len() <= MAX_BODY_BYTES);
                    body_bytes += m.body_bytes;
                }
            }
            Output::Closed(c) => conn_bytes += c.bytes_sent + c.bytes_received,
            Output::Opened(_) => {}
        }
    }
    assert_eq!(stats.transactions, txns, "every transaction counted once");
    assert!(
        body_bytes <= stats.bytes,
        "bodies {body_bytes} > parsed {}",
        stats.bytes
    );
    assert!(
        conn_bytes <= stats.bytes,
        "connections {conn_bytes} > parsed {}",
        stats.bytes
    );
    drop(outputs);
    drop(shard);
    assert_eq!(budget.used(), 0, "budget bytes leaked");
});
