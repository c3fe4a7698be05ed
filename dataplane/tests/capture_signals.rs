//! SIGINT and SIGTERM: the agent exits cleanly and its probes are gone. A
//! uprobe is a breakpoint (`int3`, 0xcc) written into the traced process's
//! copy of the probed page; after detaching, the original byte is back.

mod common;

use std::{io::Read as _, io::Seek as _, time::Duration};

use common::*;
use tapwire::capture::{libraries::plan, placement::PointKind};

const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

/// Runtime addresses in `pid` of the read/write probe points in libssl.
fn probe_addresses(pid: u32) -> Vec<u64> {
    let data = std::fs::read(LIBSSL).expect("read libssl");
    let (_, points) = plan(&data).expect("plan libssl");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut out = Vec::new();
    for p in points.iter().filter(|p| p.kind == PointKind::Call) {
        for line in maps.lines().filter(|l| l.ends_with("libssl.so.3")) {
            let mut f = line.split_whitespace();
            let range = f.next().unwrap();
            let offset = u64::from_str_radix(f.nth(1).unwrap(), 16).unwrap();
            let (start, end) = range.split_once('-').unwrap();
            let start = u64::from_str_radix(start, 16).unwrap();
            let end = u64::from_str_radix(end, 16).unwrap();
            if p.file_offset >= offset && p.file_offset < offset + (end - start) {
                out.push(start + p.file_offset - offset);
            }
        }
    }
    assert!(!out.is_empty(), "libssl probe points not mapped in {pid}");
    out
}

fn byte_at(pid: u32, addr: u64) -> u8 {
    let mut f = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    f.seek(std::io::SeekFrom::Start(addr)).expect("seek");
    let mut b = [0u8];
    f.read_exact(&mut b).expect("read mem");
    b[0]
}

fn exits_cleanly_and_detaches(sig: i32) {
    let certs = certs();
    let port = free_port();
    let server = https_server(port, &certs);
    let pid = server.0.id();
    let addrs = probe_addresses(pid);
    let before: Vec<u8> = addrs.iter().map(|&a| byte_at(pid, a)).collect();
    assert!(
        before.iter().all(|&b| b != 0xcc),
        "probes left over from an earlier run"
    );
    let agent = Agent::start(&["--pid".into(), pid.to_string()], &[]);
    let during: Vec<u8> = addrs.iter().map(|&a| byte_at(pid, a)).collect();
    assert!(
        during.iter().all(|&b| b == 0xcc),
        "probes attached while running: {during:x?}"
    );
    let stderr = std::sync::Arc::clone(&agent.stderr);
    let lines = agent.stop_with(sig);
    let last = last_drops(&lines);
    assert_eq!(last["final"], true, "a final drop counter line at exit");
    assert!(
        stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("probes detached")),
        "the agent logs that its probes are detached"
    );
    std::thread::sleep(Duration::from_millis(100));
    let after: Vec<u8> = addrs.iter().map(|&a| byte_at(pid, a)).collect();
    assert_eq!(after, before, "original instructions restored after exit");
}

#[test]
fn sigint_exits_cleanly_and_detaches() {
    if !can_run("sigint_exits_cleanly_and_detaches") {
        return;
    }
    let _serial = serial();
    exits_cleanly_and_detaches(libc::SIGINT);
}

#[test]
fn sigterm_exits_cleanly_and_detaches() {
    if !can_run("sigterm_exits_cleanly_and_detaches") {
        return;
    }
    let _serial = serial();
    exits_cleanly_and_detaches(libc::SIGTERM);
}
