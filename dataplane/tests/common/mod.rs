//! The shared test set-up (`testkit/`), under the name the suites use.
#![allow(unused_imports, dead_code, reason = "each test binary uses a subset")]

pub use tapwire_testkit::*;

/// Linux 6.13 or later: the kernel has uprobe sessions.
pub fn kernel_has_uprobe_sessions() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 13)
}

/// A script of this directory (`dataplane/tests/common/`).
pub fn script(name: &str) -> String {
    format!("{}/tests/common/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `answering_server.py` on a free loopback port, listening: its port, and
/// the server, killed on drop.
pub fn answering_server() -> (u16, Bg) {
    let port = free_port();
    let server = Bg::spawn(
        std::process::Command::new(python())
            .arg(script("answering_server.py"))
            .arg(port.to_string()),
    );
    wait_listening(port, std::time::Duration::from_secs(20));
    (port, server)
}

/// `overload_client.py` uploading to `port` (`conns` connections, each
/// `requests` POSTs of `body` bytes), waiting for its start signal: the
/// client (killed on drop), its stdin (write a line to start it; the client
/// exits once it closes), and the line it prints when done.
pub fn overload_client(
    port: u16,
    conns: usize,
    requests: usize,
    body: u64,
) -> (
    Bg,
    std::process::ChildStdin,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead as _;
    let mut client = Bg::spawn(
        std::process::Command::new(python())
            .arg(script("overload_client.py"))
            .arg(port.to_string())
            .args([conns as u64, requests as u64, body].map(|n| n.to_string()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    );
    let stdin = client.0.stdin.take().expect("client stdin");
    let out = client.0.stdout.take().expect("client stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    (client, stdin, rx)
}
