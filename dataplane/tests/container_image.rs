//! The agent as a container: an image built from scratch with buildah (the
//! binary, the libraries it links, the default config), run by podman with the
//! host's PID namespace, the host's tracefs and only the capabilities the
//! Dockerfile and the manifests name, captures a request made by a process on
//! the host.
//!
//! No registry can be reached here, so the image is not built from the
//! Dockerfile (whose base images must be pulled) but assembled the same way
//! its runtime stage is: a glibc binary on an empty root. This machine's
//! sandbox adds two run flags a normal host does not need: `--runtime runc`
//! (crun refuses its hybrid cgroup layout) and lower ulimits (root here lacks
//! CAP_SYS_RESOURCE to raise them).

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, cargo_bin, http_server, path_str, workspace_root};
use serde_json::Value;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The image, removed when the test ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
    }
}

/// The running container, removed when the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "2", &self.0])
            .output();
    }
}

/// Assembles the image: the agent, the shared libraries `ldd` names, the
/// default config (events to stdout, no payloads).
fn build_image(tag: &str) -> Image {
    let bin = cargo_bin("tapwire");
    let working = run("buildah", &["from", "scratch"]);
    let root = std::path::PathBuf::from(run("buildah", &["mount", &working]));
    let copy = |from: &std::path::Path, to: &str| {
        let dest = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest)
            .unwrap_or_else(|e| panic!("copy {} into the image: {e}", from.display()));
    };
    copy(&bin, "/usr/local/bin/tapwire");
    copy(
        &workspace_root().join("deploy/config/qpoint.yaml"),
        "/etc/tapwire/qpoint.yaml",
    );
    let ldd = run("ldd", &[path_str(&bin)]);
    for lib in ldd.lines().filter_map(|l| {
        l.split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_owned)
    }) {
        let real = std::fs::canonicalize(&lib).unwrap();
        copy(&real, &lib);
    }
    run(
        "buildah",
        &[
            "config",
            "--entrypoint",
            r#"["/usr/local/bin/tapwire"]"#,
            "--env",
            "TAPWIRE_CONFIG=/etc/tapwire/qpoint.yaml",
            &working,
        ],
    );
    run("buildah", &["commit", "-q", &working, tag]);
    run("buildah", &["rm", &working]);
    Image(tag.to_owned())
}

#[test]
fn the_agent_in_a_container_captures_a_host_process() {
    if !common::can_run("the_agent_in_a_container_captures_a_host_process") {
        return;
    }
    if !(have("podman") && have("buildah") && have("runc")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have podman, buildah and runc (cargo xtask setup --test)"
        );
        eprintln!("skipped: podman, buildah or runc missing; run `cargo xtask setup --test`");
        return;
    }
    let _serial = common::serial();
    let tag = format!("localhost/tapwire-test:{}", std::process::id());
    let image = build_image(&tag);

    let server_port = common::free_port();
    let _server = http_server(server_port);
    let mut client = Client::start(server_port);
    let name = format!("tapwire-test-{}", std::process::id());
    let container = Container(name.clone());
    let mut podman = Command::new("podman");
    podman
        .args(["--runtime", "runc", "run", "--rm", "--name", &name])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(["--pid=host", "--network=host", "--cap-drop=ALL"])
        .args(["--cap-add=BPF", "--cap-add=PERFMON", "--cap-add=SYS_ADMIN"])
        .args(["--cap-add=SYS_PTRACE", "--cap-add=DAC_READ_SEARCH"])
        .args(["--security-opt", "seccomp=unconfined"])
        .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing"])
        .arg(&image.0)
        .args(["--pid", &client.pid().to_string(), "--httpd-listen", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = common::guard(&mut podman).spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    let stderr = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = child.stdout.take().unwrap();
    let l = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                l.lock().unwrap().push(v);
            }
        }
    });
    let err = child.stderr.take().unwrap();
    let e = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("container: {line}");
            e.lock().unwrap().push(line);
        }
    });
    let start = Instant::now();
    while !stderr
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("capture ready"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the containerised agent did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    client.requests(1);
    let start = Instant::now();
    let txn = loop {
        if let Some(v) = lines
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["type"] == "http_transaction" && v["path"] == "/item/0")
        {
            break v.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no transaction from the container"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(txn["pid"], client.pid());
    assert_eq!(txn["status"], 200);
    assert_eq!(txn["method"], "GET");
    assert!(
        lines.lock().unwrap().iter().all(|v| v["type"] != "object"),
        "the default config writes no payloads"
    );
    drop(container);
    let _ = child.wait();
}
