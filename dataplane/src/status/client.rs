//! `tapwire reload-config`: `POST /reload` to the running agent's status server.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::cli::Listen;

/// How long to wait for the agent's answer (its reload may stop stores, each
/// with a grace period).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// Asks the agent listening at `listen` to reload; `Ok(message)` when the new
/// config runs, `Err(message)` otherwise (both end with a newline).
pub fn reload(listen: Listen) -> Result<String, String> {
    let Some(addr) = listen.addr() else {
        return Err(
            "the status server is off (`--httpd-listen off`); send SIGHUP to the agent instead\n"
                .to_owned(),
        );
    };
    // A wildcard address is reached on loopback, where `/reload` is accepted.
    let addr = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    };
    let fail = |what: &str, err: std::io::Error| format!("{what} the agent at {addr}: {err}\n");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| fail("cannot reach", e))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| fail("cannot talk to", e))?;
    stream
        .write_all(b"POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        .map_err(|e| fail("cannot talk to", e))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| fail("no answer from", e))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    match head.split(' ').nth(1) {
        Some("200") => Ok(body.to_owned()),
        _ => Err(body.to_owned()),
    }
}
