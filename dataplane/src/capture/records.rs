//! `--print-records`: the raw capture, one NDJSON line per ring record on
//! stdout (payload in base64, whole), drop counters every few seconds and at
//! exit, logs on stderr; no parsing, no stores. For inspecting what the probes
//! see.
//!
//! Not the hot path: lines are built with `serde_json` and written under the
//! stdout lock, one per record.

use std::{
    collections::HashMap,
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};
use tapwire_common::{COMM_LEN, Direction, DropReason, Record, Role, Source, decode::cstr};

use super::{
    Capture, loader,
    sendfile::{FileSendCounters, FileSends},
};

/// How often drop counters are printed while running.
const DROPS_EVERY: Duration = Duration::from_secs(2);

fn comm_str(c: &[u8; COMM_LEN]) -> String {
    String::from_utf8_lossy(cstr(c)).into_owned()
}

fn addr(family: u16, a: &[u8; 16], port: u16) -> String {
    if family == 2 {
        format!("{}:{port}", Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        format!("[{}]:{port}", Ipv6Addr::from(*a))
    }
}

fn proc_comm(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The JSON line for one record. `comms` remembers each connection's comm from
/// its open record (which may be read by another CPU's reader).
pub fn record_json(record: &Record<'_>, comms: &Mutex<HashMap<u64, String>>) -> Value {
    let h = record.header();
    match record {
        Record::ConnOpen(o) => {
            let comm = comm_str(&o.comm);
            if let Ok(mut m) = comms.lock() {
                m.insert(o.conn_id, comm.clone());
            }
            let role = match Role::try_from(o.role) {
                Ok(Role::Client) => "client",
                Ok(Role::Server) => "server",
                _ => "unknown",
            };
            json!({
                "type": "open", "cpu": h.cpu, "ts": h.ts_ns, "conn": o.conn_id, "seq": o.seq,
                "pid": h.pid, "tid": h.tid, "comm": comm, "cgroup": o.cgroup_id, "fd": o.fd,
                "family": if o.family == 2 { "ipv4" } else { "ipv6" },
                "local": addr(o.family, &o.local_addr, o.local_port),
                "remote": addr(o.family, &o.remote_addr, o.remote_port),
                "role": role,
            })
        }
        Record::Data {
            data,
            direction,
            source,
            payload,
        } => {
            let comm = comms
                .lock()
                .ok()
                .and_then(|m| m.get(&data.conn_id).cloned())
                .unwrap_or_else(|| proc_comm(h.tid));
            // A ClientHello copy is not stream data: its own line type, so
            // readers of a connection's stream leave it out.
            let kind = if *source == Source::Handshake {
                "hello"
            } else {
                "data"
            };
            json!({
                "type": kind, "cpu": h.cpu, "ts": h.ts_ns, "conn": data.conn_id, "seq": data.seq,
                "pid": h.pid, "tid": h.tid, "comm": comm, "fd": data.fd,
                "direction": match direction { Direction::Egress => "egress", Direction::Ingress => "ingress" },
                "source": match source {
                    Source::Tls => "tls",
                    Source::Plain => "plain",
                    Source::Handshake => "handshake",
                },
                "call_len": data.call_len, "offset": data.offset, "len": data.cap_len,
                "shed_len": data.shed_len,
                "payload": base64::engine::general_purpose::STANDARD.encode(payload),
            })
        }
        Record::ConnClose(c) => json!({
            "type": "close", "cpu": h.cpu, "ts": h.ts_ns, "conn": c.conn_id, "seq": c.seq,
            "pid": h.pid, "tid": h.tid, "fd": c.fd,
            "skipped_out": c.skipped_out, "skipped_in": c.skipped_in,
        }),
        Record::ProcExec(e) => json!({
            "type": "exec", "cpu": h.cpu, "ts": h.ts_ns, "pid": h.pid, "tid": h.tid,
            "comm": comm_str(&e.comm), "cgroup": e.cgroup_id,
            "filename": String::from_utf8_lossy(cstr(&e.filename)),
        }),
        Record::ProcExit(e) => json!({
            "type": "exit", "cpu": h.cpu, "ts": h.ts_ns, "pid": h.pid, "tid": h.tid,
            "cgroup": e.cgroup_id,
        }),
        Record::FileSend(f) => json!({
            "type": "sendfile", "cpu": h.cpu, "ts": h.ts_ns, "conn": f.conn_id, "seq": f.seq,
            "pid": h.pid, "tid": h.tid, "fd": f.fd, "in_fd": f.in_fd, "offset": f.offset,
            "len": f.len, "chunks": f.chunks, "dev": f.dev, "ino": f.ino,
        }),
        Record::ExecMap(m) => json!({
            "type": "exec_map", "cpu": h.cpu, "ts": h.ts_ns, "pid": h.pid, "tid": h.tid,
            "dev": m.dev, "ino": m.ino, "addr": m.addr, "fd": m.fd,
        }),
    }
}

fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn drops_json(capture: &Capture, last: bool, file_sends: &FileSendCounters) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), "drops".into());
    m.insert("final".into(), last.into());
    for (reason, n) in DropReason::ALL.iter().zip(capture.drops()) {
        m.insert(reason.name().into(), n.into());
    }
    let (mut records, mut errors, mut batches) = (0u64, 0u64, 0u64);
    for (_, c) in capture.reader_counters() {
        records += c.records.load(std::sync::atomic::Ordering::Relaxed);
        errors += c.decode_errors.load(std::sync::atomic::Ordering::Relaxed);
        batches += c.batches.load(std::sync::atomic::Ordering::Relaxed);
    }
    m.insert("records".into(), records.into());
    m.insert("batches".into(), batches.into());
    m.insert("decode_errors".into(), errors.into());
    m.insert(
        "placement_fallbacks".into(),
        capture.placement_fallbacks().into(),
    );
    m.insert("late_files".into(), json!(capture.late_files()));
    m.insert("sendfile".into(), json!(file_sends));
    Value::Object(m)
}

/// Runs capture as `plan` says and prints records until SIGINT or SIGTERM.
pub fn run(plan: &crate::plan::Plan) -> anyhow::Result<()> {
    let signals = crate::signals::Signals::block()?;
    let opts = plan.capture_options();
    let comms = Arc::new(Mutex::new(HashMap::new()));
    let file_sends = Arc::new(FileSendCounters::default());
    let capture = Capture::start(opts, |_cpu| {
        let comms = Arc::clone(&comms);
        let counters = Arc::clone(&file_sends);
        let mut sends = FileSends::default();
        move |_raw: &[u8], record: Record<'_>| {
            print_line(&record_json(&record, &comms));
            if let Record::FileSend(rec) = &record {
                // The bytes read back from the file, as the data lines they stand for.
                sends.expand(rec, &counters, |parts| {
                    if let Ok(data) = tapwire_common::decode(&parts.concat()) {
                        print_line(&record_json(&data, &comms));
                    }
                });
            }
        }
    })
    .map_err(|e| anyhow::anyhow!(loader::error_chain(&e)))
    .context("starting capture")?;
    print_line(&json!({"type": "ready", "pid": std::process::id()}));
    let mut next_drops = Instant::now() + DROPS_EVERY;
    let signal = loop {
        match signals.wait_timeout(Duration::from_millis(200)) {
            Some(crate::signals::Signal::Hangup) | None => {}
            Some(sig) => break sig,
        }
        if Instant::now() >= next_drops {
            print_line(&drops_json(&capture, false, &file_sends));
            next_drops = Instant::now() + DROPS_EVERY;
        }
    };
    tracing::info!(signal = signal.name(), "stopping");
    let last = drops_json(&capture, true, &file_sends);
    capture.stop();
    print_line(&last);
    Ok(())
}
