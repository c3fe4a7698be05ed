//! Container and pod attribution: a process the test moves into a cgroup named
//! like a Kubernetes containerd container's (created under the cgroup v2 mount)
//! yields events carrying that container id, pod UID and QoS class, and the
//! node's name.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Client, http_server, start_agent_with};

/// The cgroup v2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid host).
fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split(' ');
            let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(dir))
        })
        .expect("a cgroup2 mount")
}

/// Directories this test created, removed (deepest first) when it ends.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    fn create(root: &Path, parts: &[&str]) -> Cgroups {
        let mut made = Vec::new();
        let mut dir = root.to_path_buf();
        for part in parts {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                made.push(dir.clone());
            }
        }
        Cgroups(made)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            // A cgroup can be removed once its last process has exited.
            let start = Instant::now();
            while std::fs::remove_dir(dir).is_err() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn events_name_the_container_and_pod_of_a_kubepods_cgroup() {
    if !common::can_run("events_name_the_container_and_pod_of_a_kubepods_cgroup") {
        return;
    }
    let _serial = common::serial();
    let nonce = std::process::id();
    let uid = format!("1b2c3d4e-0000-4000-8000-{nonce:012x}");
    let container = format!("{:064x}", u128::from(nonce) << 64 | 0xc0ffee);
    let pod_slice = format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
    let scope = format!("cri-containerd-{container}.scope");
    let parts = [
        "kubepods.slice",
        "kubepods-besteffort.slice",
        pod_slice.as_str(),
        scope.as_str(),
    ];
    let root = cgroup2_mount();
    let cgroups = Cgroups::create(&root, &parts);
    let leaf = root.join(parts.join("/"));

    let server_port = common::free_port();
    let _server = http_server(server_port);
    let mut client = Client::start(server_port);
    std::fs::write(leaf.join("cgroup.procs"), client.pid().to_string())
        .unwrap_or_else(|e| panic!("move the client into {}: {e}", leaf.display()));
    let status_port = common::free_port();
    let agent = start_agent_with(
        None,
        client.pid(),
        status_port,
        &[("TAPWIRE_NODE_NAME", "node-under-test")],
    );
    client.requests(2);
    let txn = agent.wait_for("a transaction event", Duration::from_secs(20), |v| {
        v["type"] == "http_transaction" && v["path"] == "/item/1"
    });
    assert_eq!(txn["container_id"], container.as_str(), "{txn}");
    assert_eq!(txn["container_runtime"], "containerd", "{txn}");
    assert_eq!(txn["pod_uid"], uid.as_str(), "{txn}");
    assert_eq!(txn["pod_qos"], "besteffort", "{txn}");
    assert_eq!(txn["host"], "node-under-test", "{txn}");
    assert_eq!(txn["cgroup"], format!("/{}", parts.join("/")), "{txn}");
    let open = agent.wait_for("a connection event", Duration::from_secs(5), |v| {
        v["type"] == "connection" && v["pid"] == client.pid()
    });
    assert_eq!(open["container_id"], container.as_str(), "{open}");
    assert_eq!(open["pod_uid"], uid.as_str(), "{open}");
    drop(agent);
    drop(client);
    drop(cgroups);
}
