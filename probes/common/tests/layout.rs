//! Pins each wire type's size and field offsets, so a change on one side of the
//! kernel/user boundary cannot go unnoticed, and checks the decoder against
//! hand-built bytes.

use core::mem::offset_of;

use tapwire_common::config::{Config, KernelOffsets};
use tapwire_common::{
    ConnClose, ConnOpen, Data, DecodeError, Direction, ExecMap, FileKey, FileSend, Header, Kind,
    ProcExec, ProcExit, Record, Source, decode,
};

#[test]
fn header_layout() {
    assert_eq!(size_of::<Header>(), 24);
    assert_eq!(offset_of!(Header, kind), 0);
    assert_eq!(offset_of!(Header, cpu), 4);
    assert_eq!(offset_of!(Header, ts_ns), 8);
    assert_eq!(offset_of!(Header, pid), 16);
    assert_eq!(offset_of!(Header, tid), 20);
}

#[test]
fn conn_open_layout() {
    assert_eq!(size_of::<ConnOpen>(), 112);
    assert_eq!(offset_of!(ConnOpen, conn_id), 24);
    assert_eq!(offset_of!(ConnOpen, seq), 32);
    assert_eq!(offset_of!(ConnOpen, cgroup_id), 40);
    assert_eq!(offset_of!(ConnOpen, comm), 48);
    assert_eq!(offset_of!(ConnOpen, local_addr), 64);
    assert_eq!(offset_of!(ConnOpen, remote_addr), 80);
    assert_eq!(offset_of!(ConnOpen, local_port), 96);
    assert_eq!(offset_of!(ConnOpen, remote_port), 98);
    assert_eq!(offset_of!(ConnOpen, family), 100);
    assert_eq!(offset_of!(ConnOpen, _pad0), 102);
    assert_eq!(offset_of!(ConnOpen, role), 104);
    assert_eq!(offset_of!(ConnOpen, fd), 108);
}

#[test]
fn data_layout() {
    assert_eq!(size_of::<Data>(), 80);
    assert_eq!(offset_of!(Data, conn_id), 24);
    assert_eq!(offset_of!(Data, seq), 32);
    assert_eq!(offset_of!(Data, call_len), 40);
    assert_eq!(offset_of!(Data, offset), 48);
    assert_eq!(offset_of!(Data, cap_len), 56);
    assert_eq!(offset_of!(Data, direction), 60);
    assert_eq!(offset_of!(Data, source), 64);
    assert_eq!(offset_of!(Data, fd), 68);
    assert_eq!(offset_of!(Data, shed_len), 72);
}

#[test]
fn close_exec_exit_layout() {
    assert_eq!(size_of::<ConnClose>(), 64);
    assert_eq!(offset_of!(ConnClose, conn_id), 24);
    assert_eq!(offset_of!(ConnClose, seq), 32);
    assert_eq!(offset_of!(ConnClose, fd), 40);
    assert_eq!(offset_of!(ConnClose, skipped_out), 48);
    assert_eq!(offset_of!(ConnClose, skipped_in), 56);
    assert_eq!(size_of::<ProcExec>(), 304);
    assert_eq!(offset_of!(ProcExec, cgroup_id), 24);
    assert_eq!(offset_of!(ProcExec, comm), 32);
    assert_eq!(offset_of!(ProcExec, filename), 48);
    assert_eq!(size_of::<ProcExit>(), 32);
    assert_eq!(offset_of!(ProcExit, cgroup_id), 24);
}

#[test]
fn exec_map_layout() {
    assert_eq!(size_of::<ExecMap>(), 56);
    assert_eq!(offset_of!(ExecMap, dev), 24);
    assert_eq!(offset_of!(ExecMap, ino), 32);
    assert_eq!(offset_of!(ExecMap, addr), 40);
    assert_eq!(offset_of!(ExecMap, fd), 48);
    assert_eq!(size_of::<FileKey>(), 16);
    assert_eq!(offset_of!(FileKey, ino), 8);
    let mut b = Vec::new();
    b.extend_from_slice(&(Kind::ExecMap as u32).to_le_bytes());
    b.extend_from_slice(&[0u8; 4 + 8 + 8]); // cpu, ts, pid, tid
    for v in [0x0080_0001u64, 42, 0x7f00_0000_0000] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&3i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    match decode(&b) {
        Ok(Record::ExecMap(m)) => {
            assert_eq!(
                (m.dev, m.ino, m.addr, m.fd),
                (0x0080_0001, 42, 0x7f00_0000_0000, 3)
            );
        }
        other => panic!("unexpected decode result {other:?}"),
    }
}

#[test]
fn file_send_layout() {
    assert_eq!(size_of::<FileSend>(), 360);
    assert_eq!(offset_of!(FileSend, path), 104);
    assert_eq!(offset_of!(FileSend, conn_id), 24);
    assert_eq!(offset_of!(FileSend, seq), 32);
    assert_eq!(offset_of!(FileSend, offset), 40);
    assert_eq!(offset_of!(FileSend, len), 48);
    assert_eq!(offset_of!(FileSend, file_size), 56);
    assert_eq!(offset_of!(FileSend, mtime_sec), 64);
    assert_eq!(offset_of!(FileSend, dev), 72);
    assert_eq!(offset_of!(FileSend, ino), 80);
    assert_eq!(offset_of!(FileSend, chunks), 88);
    assert_eq!(offset_of!(FileSend, fd), 92);
    assert_eq!(offset_of!(FileSend, in_fd), 96);
}

#[test]
fn data_encode_is_what_decode_reads() {
    let b = data_bytes(b"GET / HTTP/1.1\r\n", Direction::Egress as u32);
    let Ok(Record::Data { data, .. }) = decode(&b) else {
        panic!("decode");
    };
    assert_eq!(data.encode()[..], b[..size_of::<Data>()]);
}

#[test]
fn config_layout() {
    assert_eq!(size_of::<KernelOffsets>(), 100);
    assert_eq!(size_of::<Config>(), 120);
    assert_eq!(offset_of!(Config, flags), 0);
    assert_eq!(offset_of!(Config, wake_divisor), 4);
    assert_eq!(offset_of!(Config, offsets), 8);
    assert_eq!(offset_of!(Config, overload_percent), 116);
}

fn data_bytes(payload: &[u8], direction: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(Kind::Data as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // cpu
    b.extend_from_slice(&99u64.to_le_bytes()); // ts
    b.extend_from_slice(&10u32.to_le_bytes()); // pid
    b.extend_from_slice(&11u32.to_le_bytes()); // tid
    b.extend_from_slice(&7u64.to_le_bytes()); // conn
    b.extend_from_slice(&3u64.to_le_bytes()); // seq
    b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&direction.to_le_bytes());
    b.extend_from_slice(&(Source::Tls as u32).to_le_bytes());
    b.extend_from_slice(&5i32.to_le_bytes());
    b.extend_from_slice(&4000u64.to_le_bytes()); // shed_len
    b.extend_from_slice(payload);
    b
}

#[test]
fn decode_data_roundtrip() {
    let b = data_bytes(b"GET / HTTP/1.1\r\n", Direction::Egress as u32);
    assert_eq!(b.len(), size_of::<Data>() + 16);
    match decode(&b) {
        Ok(Record::Data {
            data,
            direction,
            source,
            payload,
        }) => {
            assert_eq!(data.header.pid, 10);
            assert_eq!(data.conn_id, 7);
            assert_eq!(data.seq, 3);
            assert_eq!(data.shed_len, 4000);
            assert_eq!(direction, Direction::Egress);
            assert_eq!(source, Source::Tls);
            assert_eq!(payload, b"GET / HTTP/1.1\r\n");
        }
        other => panic!("unexpected decode result {other:?}"),
    }
}

#[test]
fn decode_rejects_bad_input() {
    assert!(matches!(decode(&[0u8; 3]), Err(DecodeError::Short { .. })));
    let mut b = data_bytes(b"abc", 9);
    assert!(matches!(
        decode(&b),
        Err(DecodeError::BadField {
            field: "direction",
            value: 9
        })
    ));
    b = data_bytes(b"abc", 1);
    b.truncate(b.len() - 1);
    assert!(matches!(decode(&b), Err(DecodeError::Short { .. })));
    b[0] = 77;
    assert_eq!(decode(&b), Err(DecodeError::UnknownKind(77)));
}
