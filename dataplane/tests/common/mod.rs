//! The shared test set-up (`testkit/`), under the name the suites use.
#![allow(unused_imports, dead_code, reason = "each test binary uses a subset")]

pub use tapwire_testkit::*;

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
