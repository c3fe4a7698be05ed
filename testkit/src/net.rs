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
