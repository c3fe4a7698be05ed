//! Loopback ports.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free loopback TCP port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports (held open together while choosing).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr().expect("local addr").port();
    }
    ports
}

/// Waits until something listens on `127.0.0.1:port`.
pub fn wait_listening(port: u16, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listening on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback HTTP/1.1 server on threads of the calling process: for each
/// connection it reads one request head and writes `respond(request_line)`
/// (the request line without its CRLF), then reads until the client closes.
/// One fd serves both directions: a `dup`ed fd would be a socket found open,
/// whose side the probes judge by its ports (and this server's port is a high
/// one). Returns the port.
pub fn serve_loopback_http(respond: fn(&str) -> &'static [u8]) -> u16 {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut out = &conn;
                let mut first = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    first.get_or_insert_with(|| line.trim_end().to_owned());
                }
                let _ = out.write_all(respond(first.as_deref().unwrap_or("")));
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            });
        }
    });
    port
}

/// `curl` GET of `http://HOST:PORT/PATH` with `HOST` resolved to loopback and
/// a fixed request head, `Host` and `User-Agent: tapwire-test` only, so a
/// test knows the head byte for byte.
pub fn curl_loopback_get(host: &str, port: u16, path: &str) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-A",
            "tapwire-test",
            "-H",
            "Accept:",
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            &format!("http://{host}:{port}{path}"),
        ])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {path}: {out:?}");
}

/// A fixed answer for [`serve_loopback_http`]: `503 Service Unavailable`,
/// `text/plain` body `down\n`.
pub const ANSWER_503_DOWN: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\ndown\n";
/// A fixed answer for [`serve_loopback_http`]: `200 OK`, `text/plain` body
/// `hello\n` gzip-compressed (`Content-Encoding: gzip`).
pub const ANSWER_GZIP_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: 26\r\n\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xcbH\xcd\xc9\xc9\xe7\x02\x00\x20\x30\x3a\x36\x06\x00\x00\x00";
/// A fixed answer for [`serve_loopback_http`]: `200 OK`, `text/plain` body
/// `hello\n`.
pub const ANSWER_OK_HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
