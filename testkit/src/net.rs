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
