//! The Go TLS peers (`testkit/go/gotls`), built with the system's `go` once
//! per test run into the target directory, with Go's build cache beside them
//! so a rerun takes a second or two.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{Bg, Certs, net::wait_listening, which};

/// Source of the Go peers.
pub fn gotls_source() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/go/gotls")
}

/// The built peers.
pub struct GoPeers {
    /// With symbols and DWARF.
    pub full: PathBuf,
    /// Stripped (`-ldflags="-s -w"`): no symbol table, no DWARF.
    pub stripped: PathBuf,
}

/// `target/tmp` of the running test (its executable is in
/// `target/<profile>/deps/`).
fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let target = exe
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("tmp")
}

/// Builds the Go peers (once per test process).
pub fn go_peers() -> &'static GoPeers {
    static BUILT: OnceLock<GoPeers> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = out_dir();
        let peers = GoPeers {
            full: out.join("go").join("gotls"),
            stripped: out.join("go").join("gotls-stripped"),
        };
        for (bin, ldflags) in [(&peers.full, ""), (&peers.stripped, "-s -w")] {
            let status = Command::new(which("go"))
                .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
                .arg(bin)
                .arg(".")
                .current_dir(gotls_source())
                .env("GOCACHE", out.join("gocache"))
                .env("GOPATH", out.join("gopath"))
                .env("GOFLAGS", "")
                .env("GOTOOLCHAIN", "local")
                .env("CGO_ENABLED", "0")
                .status()
                .expect("run go build");
            assert!(status.success(), "go build -ldflags='{ldflags}' failed");
        }
        peers
    })
}

/// Starts the Go HTTPS server (HTTP/1.1 and HTTP/2) on `port`.
pub fn go_https_server(port: u16, certs: &Certs) -> Bg {
    let bg = Bg::spawn(
        Command::new(&go_peers().full)
            .args(["server", &port.to_string()])
            .arg(&certs.cert)
            .arg(&certs.key)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    wait_listening(port, Duration::from_secs(20));
    bg
}
