//! The Python test servers (`testkit/py/`), started as guarded children.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Bg, Certs, net::wait_listening, path_str, python};

/// Path of `servers.py` (HTTPS, plaintext and TLS-post servers and clients).
pub fn servers_py() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/py/servers.py").to_owned()
}

/// Path of `http_server.py` (a plain HTTP/1.1 server with fixed bodies).
pub fn http_server_py() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/py/http_server.py").to_owned()
}

/// Starts `http_server.py` on `port` (HTTPS with `tls`, else plain HTTP)
/// and waits until it listens.
pub fn http_server_with(port: u16, tls: Option<&Certs>) -> Bg {
    let mut cmd = Command::new(python());
    cmd.arg(http_server_py()).arg(port.to_string());
    if let Some(c) = tls {
        cmd.args([path_str(&c.cert), path_str(&c.key)]);
    }
    let server = Bg::spawn(cmd.stdout(Stdio::null()));
    wait_listening(port, Duration::from_secs(20));
    server
}

/// Starts the python HTTPS server on `port`.
pub fn https_server(port: u16, certs: &Certs) -> Bg {
    let bg = Bg::spawn(
        Command::new(python())
            .arg(servers_py())
            .args([
                "https",
                &port.to_string(),
                path_str(&certs.cert),
                path_str(&certs.key),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    wait_listening(port, Duration::from_secs(20));
    bg
}
