//! TLS stacks beyond OpenSSL, with real programs: GnuTLS (`wget`), Go
//! `crypto/tls` (a client and server built here with Debian's Go, with and
//! without symbols), NSS (`tstclnt`), and where their probes sit.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

/// Body the Go test server answers with (`testkit/go/gotls/main.go`).
const GO_BODY: &[u8] = b"hello from go server\n";

/// Open lines of `pid` whose remote address is `remote`.
fn open_with_remote(lines: &[Value], pid: u32, remote: &str) -> Option<Value> {
    lines
        .iter()
        .find(|v| v["type"] == "open" && v["pid"] == pid && v["remote"] == remote)
        .cloned()
}

/// Client and server connection ids of one TLS exchange, with the 4-tuple
/// checked from both ends.
fn both_ends(lines: &[Value], client: u32, server: u32, port: u16) -> (u64, u64) {
    let open = conn_of(lines, client, port).expect("an open line for the client");
    assert_eq!(open["role"], "client", "{open}");
    assert_eq!(open["family"], "ipv4");
    assert_eq!(open["remote"], format!("127.0.0.1:{port}"));
    let local = open["local"].as_str().expect("local address").to_owned();
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    let sopen = open_with_remote(lines, server, &local)
        .unwrap_or_else(|| panic!("no server connection from {local}"));
    assert_eq!(sopen["role"], "server", "{sopen}");
    assert_eq!(sopen["local"], format!("127.0.0.1:{port}"));
    (
        open["conn"].as_u64().expect("conn"),
        sopen["conn"].as_u64().expect("conn"),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every data record of `conn` is TLS plaintext.
fn all_tls(lines: &[Value], conn: u64) {
    let data = data_of(lines, conn);
    assert!(!data.is_empty(), "no data on connection {conn}");
    for d in data {
        assert_eq!(d["source"], "tls", "ciphertext or plain data: {d}");
    }
}

fn no_tls_drops(lines: &[Value]) {
    let drops = last_drops(lines);
    for reason in ["ring_full", "copy_failed", "tls_no_fd", "lost_bytes"] {
        assert_eq!(drops[reason], 0, "drops: {drops}");
    }
}

/// The python HTTPS server (OpenSSL), and an agent capturing it (`--pid`)
/// and the client program `exe` (`--exe`): the server is captured too, an
/// independent record of the same bytes. `certs` must outlive the server
/// (it may load them after it listens).
fn server_and_agent(exe: &Path, certs: &Certs) -> (Bg, u16, Agent) {
    let port = free_port();
    let server = https_server(port, certs);
    let agent = Agent::start(
        &[
            "--exe".into(),
            path_str(exe).into(),
            "--pid".into(),
            server.pid().to_string(),
        ],
        &[],
    );
    (server, port, agent)
}

/// The client's TLS connection to `port` and the server's end of it, both
/// read as TLS plaintext with no drop: the client's connection id, and the
/// request and response it carried, which the server read and sent byte for
/// byte.
fn exchange(
    lines: &[Value],
    client: u32,
    comm: &str,
    server: u32,
    port: u16,
) -> (u64, Vec<u8>, Vec<u8>) {
    let (conn, sconn) = both_ends(lines, client, server, port);
    let open = conn_of(lines, client, port).expect("client open");
    assert_eq!(open["comm"], comm);
    all_tls(lines, conn);
    all_tls(lines, sconn);
    let request = stream(lines, conn, "egress");
    let response = stream(lines, conn, "ingress");
    assert_eq!(stream(lines, sconn, "ingress"), request);
    assert_eq!(stream(lines, sconn, "egress"), response);
    no_tls_drops(lines);
    (conn, request, response)
}

#[test]
fn wget_gnutls_started_after_the_agent_exact_bytes() {
    if !can_run("wget_gnutls_started_after_the_agent_exact_bytes") {
        return;
    }
    let _serial = serial();
    let wget = std::fs::canonicalize(which("wget")).expect("wget path");
    let certs = certs();
    let (server, port, agent) = server_and_agent(&wget, &certs);
    let server_pid = server.pid();
    let child = Command::new(&wget)
        .args([
            "-q",
            "-O",
            "-",
            "--no-config",
            "--no-hsts",
            "--no-check-certificate",
        ])
        .arg(format!("https://127.0.0.1:{port}/gnutls"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wget");
    let wget_pid = child.id();
    let out = child.wait_with_output().expect("wget output");
    assert!(
        out.status.success(),
        "wget failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello from tls server\n");
    agent.wait_for("server's close", Duration::from_secs(10), |v| {
        v["type"] == "close" && v["pid"] == server_pid
    });
    // wget exits without closing its socket: wait for its last read instead.
    agent.wait_for("wget's response", Duration::from_secs(10), |v| {
        v["type"] == "data"
            && v["pid"] == wget_pid
            && v["direction"] == "ingress"
            && payload(v).ends_with(b"hello from tls server\n")
    });
    let lines = agent.stop_with(libc::SIGINT);
    let (_, request, response) = exchange(&lines, wget_pid, "wget", server_pid, port);
    // Byte for byte but wget's version.
    let head = format!("GET /gnutls HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Wget/");
    let tail = "\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: Keep-Alive\r\n\r\n";
    let text = String::from_utf8_lossy(&request);
    assert!(
        text.starts_with(&head)
            && text.ends_with(tail)
            && !text[head.len()..].contains("\r\n\r\n\r"),
        "{text:?}"
    );
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(response.ends_with(b"\r\n\r\nhello from tls server\n"));
}

/// Runs a Go client (`bin`) against the Go server, HTTP/1.1 then HTTP/2, and
/// checks both exchanges from both ends.
fn go_exchanges(name: &str, client_bin: &Path) {
    let certs = certs();
    let port = free_port();
    let server = go_https_server(port, &certs);
    let server_pid = server.pid();
    let client_bin = path_str(client_bin);
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    // The clients wait for a line on stdin: both are running (and mapped)
    // before the agent starts.
    let mut h1 = Gated::stdin(client_bin, &["client", &url("/h1"), "h1"]);
    let mut h2 = Gated::stdin(client_bin, &["client", &url("/h2"), "h2"]);
    let (h1_pid, h2_pid) = (h1.pid(), h2.pid());
    let mut args = Vec::new();
    for pid in [h1_pid, h2_pid, server_pid] {
        args.extend(["--pid".to_owned(), pid.to_string()]);
    }
    let agent = Agent::start(&args, &[]);
    h1.go();
    let out = h1.finish(Duration::from_secs(30));
    assert_eq!(out, [b"HTTP/1.1 ".as_slice(), GO_BODY].concat(), "{name}");
    h2.go();
    let out = h2.finish(Duration::from_secs(30));
    assert_eq!(out, [b"HTTP/2.0 ".as_slice(), GO_BODY].concat(), "{name}");
    for pid in [h1_pid, h2_pid] {
        agent.wait_for("client close", Duration::from_secs(10), |v| {
            v["type"] == "close" && v["pid"] == pid
        });
    }
    let server_closes = |lines: &[Value]| {
        lines
            .iter()
            .filter(|v| v["type"] == "close" && v["pid"] == server_pid)
            .count()
    };
    let start = std::time::Instant::now();
    while server_closes(&agent.lines()) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name}: server closes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = agent.stop_with(libc::SIGINT);

    // HTTP/1.1: the request is known byte for byte.
    let (conn, sconn) = both_ends(&lines, h1_pid, server_pid, port);
    all_tls(&lines, conn);
    all_tls(&lines, sconn);
    let request = stream(&lines, conn, "egress");
    assert_eq!(
        String::from_utf8_lossy(&request),
        format!(
            "GET /h1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Go-http-client/1.1\r\n\
             Accept-Encoding: gzip\r\n\r\n"
        ),
        "{name}"
    );
    let response = stream(&lines, conn, "ingress");
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"), "{name}");
    assert!(
        response.ends_with(&[b"\r\n\r\n".as_slice(), GO_BODY].concat()),
        "{name}: {:?}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(stream(&lines, sconn, "ingress"), request, "{name}");
    assert_eq!(stream(&lines, sconn, "egress"), response, "{name}");

    // HTTP/2: the client preface, and the same bytes at both ends.
    let (conn, sconn) = both_ends(&lines, h2_pid, server_pid, port);
    all_tls(&lines, conn);
    all_tls(&lines, sconn);
    let request = stream(&lines, conn, "egress");
    assert!(
        request.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        "{name}: {:?}",
        String::from_utf8_lossy(&request)
    );
    let response = stream(&lines, conn, "ingress");
    assert!(
        contains(&response, GO_BODY),
        "{name}: the DATA frame's body"
    );
    assert_eq!(stream(&lines, sconn, "ingress"), request, "{name}");
    assert_eq!(stream(&lines, sconn, "egress"), response, "{name}");
    no_tls_drops(&lines);
}

#[test]
fn go_client_and_server_h1_h2_exact_bytes() {
    if !can_run("go_client_and_server_h1_h2_exact_bytes") {
        return;
    }
    let _serial = serial();
    go_exchanges("go with symbols", &go_peers().full);
}

#[test]
fn go_stripped_client_h1_h2_exact_bytes() {
    if !can_run("go_stripped_client_h1_h2_exact_bytes") {
        return;
    }
    let _serial = serial();
    go_exchanges("stripped go client", &go_peers().stripped);
}

/// Where the Go probes sit: the stack check's `jbe` at entry (emulated), the
/// plaintext copy's `call` in `Read` (emulated); the stripped program's points
/// (found through `.gopclntab`) are the same as with symbols; the socket
/// offsets from DWARF equal the release table's for Debian's Go.
#[test]
fn go_probes_sit_on_emulated_instructions_with_or_without_symbols() {
    use tapwire::capture::{
        LibraryKind,
        golang::{self, KNOWN_OFFSETS},
        libraries::plan,
        placement::{Elf, PointKind},
    };
    let peers = go_peers();
    let full_data = std::fs::read(&peers.full).expect("read go binary");
    let stripped_data = std::fs::read(&peers.stripped).expect("read stripped go binary");
    let (kind, points) = plan(&full_data).expect("plan go binary");
    assert_eq!(kind, LibraryKind::GoTls);
    let (kind, stripped_points) = plan(&stripped_data).expect("plan stripped go binary");
    assert_eq!(kind, LibraryKind::GoTls);
    let kinds: Vec<(PointKind, &str)> = points.iter().map(|p| (p.kind, p.symbol)).collect();
    assert_eq!(
        kinds,
        [
            (PointKind::GoEntry, golang::WRITE),
            (PointKind::GoEntry, golang::READ),
            (PointKind::GoReadCopy, golang::READ),
        ]
    );
    for p in &points {
        assert!(p.placement.emulated(), "{p:?}");
        eprintln!(
            "{} {:?} at {:#x}: {:?}",
            p.symbol, p.kind, p.vaddr, p.placement
        );
    }
    // Same code, same addresses: only the symbol table differs.
    let addrs = |ps: &[tapwire::capture::placement::ProbePoint]| {
        ps.iter().map(|p| (p.vaddr, p.cookie)).collect::<Vec<_>>()
    };
    assert_eq!(addrs(&points), addrs(&stripped_points));

    let elf = Elf::parse(&full_data).expect("parse");
    let version = golang::version(&elf).expect("go version");
    let selfs = Elf::parse(&stripped_data).expect("parse");
    assert_eq!(golang::version(&selfs), Some(version));
    let from_dwarf = golang::dwarf_offsets(&elf).expect("dwarf offsets");
    let table = KNOWN_OFFSETS
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&version.1))
        .map(|t| t.2)
        .expect("Debian's go release is in the table");
    assert_eq!(from_dwarf, table);
    assert_eq!(golang::dwarf_offsets(&selfs), None, "-w removes DWARF");
    // `.gopclntab` finds what the symbol table finds.
    let names = [golang::READ, golang::WRITE];
    let entries = |fs: Vec<Option<golang::Function>>| {
        fs.into_iter()
            .map(|f| f.expect("function found").entry)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        entries(golang::pclntab_functions(&elf, &names).expect("pclntab")),
        entries(golang::functions(&elf, &names))
    );
}

/// NSS (`tstclnt`, Debian's NSS test client) started after the agent, fed
/// its request on stdin (which it reads with NSPR's `PR_Read` too: only the
/// SSL descriptor's calls are TLS), against the python HTTPS server: the
/// request and response exact at both ends, nothing else captured of it.
#[test]
fn nss_tstclnt_started_after_the_agent_exact_bytes() {
    if !can_run("nss_tstclnt_started_after_the_agent_exact_bytes") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let tstclnt = private_copy("tstclnt", dir.path());
    let certs = certs();
    let (server, port, agent) = server_and_agent(&tstclnt, &certs);
    let server_pid = server.pid();
    let request = format!(
        "GET /nss HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: tstclnt\r\n\
         Connection: close\r\n\r\n"
    );
    // -D: no certificate database; -o: accept the test's self-signed
    // certificate. It sends stdin, prints what it reads until the server
    // closes. Stdin is a file: at the end of a pipe tstclnt keeps polling
    // after EOF and never exits.
    let request_file = dir.path().join("request");
    std::fs::write(&request_file, &request).expect("write request");
    let child = guard(
        Command::new(&tstclnt)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-D", "-o"])
            .stdin(std::fs::File::open(&request_file).expect("open request"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .spawn()
    .expect("spawn tstclnt");
    let client_pid = child.id();
    let printed = finish(child, Duration::from_secs(30));
    assert!(
        printed.starts_with(b"HTTP/1.1 200 OK\r\n")
            && printed.ends_with(b"\r\n\r\nhello from tls server\n"),
        "{:?}",
        String::from_utf8_lossy(&printed)
    );
    agent.wait_for("tstclnt's close", Duration::from_secs(10), |v| {
        v["type"] == "close" && v["pid"] == client_pid
    });
    agent.wait_for("server's close", Duration::from_secs(10), |v| {
        v["type"] == "close" && v["pid"] == server_pid
    });
    let lines = agent.stop_with(libc::SIGINT);
    let (conn, sent, read) = exchange(&lines, client_pid, "tstclnt", server_pid, port);
    assert_eq!(String::from_utf8_lossy(&sent), request);
    // What tstclnt printed is what it read.
    assert_eq!(read, printed);
    // Its stdin and stdout (NSPR calls on non-SSL descriptors) are not data.
    let others: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "data" && v["pid"] == client_pid && v["conn"] != conn)
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

/// NSS's probe points in Debian's libraries: the four NSPR I/O functions
/// (single-stepped: they are `mov rax,[rdi]; jmp [rax+…]`), `PR_Close`, and
/// `SSL_ImportFD`'s return; the fd offset read from NSPR's code is the one
/// NSPR 4.35 has (`PRFilePrivate.md.osfd` at 0x1c).
#[test]
fn nss_probe_points_in_debian_libraries() {
    use tapwire::capture::{
        LibraryKind,
        libraries::plan,
        nss,
        placement::{Elf, PointKind},
    };
    let lib = |name: &str| {
        let path = Path::new("/usr/lib/x86_64-linux-gnu").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let nspr = lib("libnspr4.so");
    let (kind, points) = plan(&nspr).expect("plan libnspr4");
    assert_eq!(kind, LibraryKind::Nss);
    let got: Vec<(&str, PointKind, u64)> = points
        .iter()
        .map(|p| (p.symbol, p.kind, tapwire_common::nss::shape(p.cookie)))
        .collect();
    use tapwire_common::tls_fn::{READ, WRITE};
    assert_eq!(
        got,
        [
            ("PR_Read", PointKind::NssCall, READ),
            ("PR_Recv", PointKind::NssCall, READ),
            ("PR_Write", PointKind::NssCall, WRITE),
            ("PR_Send", PointKind::NssCall, WRITE),
            ("PR_Close", PointKind::SessionEnd, 0),
        ]
    );
    assert_eq!(
        nss::osfd_offset(&Elf::parse(&nspr).expect("parse")),
        Some(0x1c)
    );
    for p in &points[..4] {
        assert_eq!(tapwire_common::nss::osfd_offset(p.cookie), 0x1c);
        assert!(!p.placement.emulated(), "{p:?}");
    }
    let (kind, points) = plan(&lib("libssl3.so")).expect("plan libssl3");
    assert_eq!(kind, LibraryKind::Nss);
    let got: Vec<(&str, PointKind)> = points.iter().map(|p| (p.symbol, p.kind)).collect();
    assert_eq!(got, [("SSL_ImportFD", PointKind::NssImport)]);
}
