//! Test set-up shared by every tapwire test suite (a dev-dependency only).
//!
//! - [`process`]: child processes in their own process group, killed with the
//!   group when their guard drops and by the kernel when the test process dies,
//!   so nothing a test starts outlives it.
//! - [`net`]: free loopback ports, waiting for a listener.
//! - [`certs`]: a throwaway self-signed certificate.
//! - [`cgroup`]: fresh cgroups that programs join before they exec.
//! - [`agent`]: the `tapwire` binary under test, its output collected.
//! - [`records`]: queries over the agent's JSON lines.
//! - [`servers`]: the Python test servers in `testkit/py/`.
//! - [`golang`]: the Go TLS peers in `testkit/go/`, built with the system's Go.
//! - [`weed`]: a real S3 server (SeaweedFS) on loopback.
//! - [`fault_proxy`]: a fault-injecting proxy (403s, a blackhole) in front of it.
//! - [`status`]: the agent's status server (`/metrics` parsed by Python's
//!   `prometheus_client`), a plain HTTP client to capture.
//!
//! Everything is re-exported at the root, so a suite's `tests/common/mod.rs` is a
//! single `pub use tapwire_testkit::*;`.

pub mod agent;
pub mod certs;
pub mod cgroup;
pub mod fault_proxy;
pub mod golang;
pub mod net;
pub mod process;
pub mod records;
pub mod servers;
pub mod status;
pub mod weed;

pub use agent::*;
pub use certs::*;
pub use cgroup::*;
pub use fault_proxy::*;
pub use golang::*;
pub use net::*;
pub use process::*;
pub use records::*;
pub use servers::*;
pub use status::*;
pub use weed::*;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ has a parent")
        .to_owned()
}

/// A binary of the workspace built by cargo for the running test: integration
/// tests live in `target/<profile>/deps/`, their package's binaries one level up.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} not built (is `{name}` a binary of the package under test?)",
        bin.display()
    );
    bin
}

/// True if the test may run: root. Without root, panics under CI, else says why
/// and skips.
pub fn can_run(name: &str) -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name}: needs root (eBPF probes); CI must run it as root");
    }
    eprintln!("{name}: skipped: needs root to load eBPF probes");
    false
}

/// Serialises the capture tests of one binary: each starts its own agent and
/// the machine has two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// `p` as `&str`.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Absolute path of a program on `PATH`; panics if there is none.
pub fn which(name: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .expect("sh");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!s.is_empty(), "{name} not found");
    s
}

/// `python3` on `PATH`.
pub fn python() -> String {
    which("python3")
}
