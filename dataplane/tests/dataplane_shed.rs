//! A stalled spool costs objects, never whole records. The S3 store's spool
//! sits on a file system that is frozen (`fsfreeze`: every write and sync
//! blocks, as on a disk that hangs) while clients upload. The storage thread
//! blocks, the spool's queue fills, the shards wait for room, their queues
//! fill, the readers stop draining, and the kernel rings fill. Once a ring
//! is past its high-water mark the objects are refused (`drops.shed`) instead
//! of waited for, so the rings drain: no record is lost in the kernel, every
//! request has its event, and the shed objects are named `kept: false`.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Agent, answering_server, free_port, metric_sum, overload_client, path_str, stat};
use serde_json::Value;

const BUCKET: &str = "shed";
const CONNS: usize = 4;
const REQUESTS: usize = 32;
/// 128 uploads of 1 MiB: several times what the rings, frame queues and the
/// spool's queue hold.
const BODY: u64 = 1 << 20;

/// An ext4 file system in an image file, mounted on a loop device, that the
/// test freezes; thawed and unmounted when dropped, whatever happened.
struct FreezableDisk {
    mount: PathBuf,
    frozen: bool,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FreezableDisk {
    fn new(dir: &Path) -> Self {
        let image = dir.join("disk.img");
        let mount = dir.join("disk");
        std::fs::create_dir(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        Self {
            mount,
            frozen: false,
        }
    }

    fn freeze(&mut self) {
        run(Command::new("fsfreeze").arg("-f").arg(&self.mount));
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if std::mem::take(&mut self.frozen) {
            run(Command::new("fsfreeze").arg("-u").arg(&self.mount));
        }
    }
}

impl Drop for FreezableDisk {
    fn drop(&mut self) {
        self.thaw();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn a_frozen_spool_sheds_objects_and_the_kernel_loses_no_record() {
    if !common::can_run("a_frozen_spool_sheds_objects_and_the_kernel_loses_no_record") {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket(BUCKET);
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut disk = FreezableDisk::new(dir.path());
    let spool = disk.mount.join("spool");
    let config_path = dir.path().join("qpoint.yaml");
    std::fs::write(&config_path, weed.config_yaml(BUCKET, &spool)).unwrap();

    let (port, _server) = answering_server();
    let (client, mut client_in, done) = overload_client(port, CONNS, REQUESTS, BODY);
    let status_port = free_port();
    let agent = Agent::start_dataplane(
        &[
            "--config".into(),
            path_str(&config_path).into(),
            "--pid".into(),
            client.pid().to_string(),
            "--httpd-listen".into(),
            format!("127.0.0.1:{status_port}"),
        ],
        &[],
    );
    agent.wait_stderr("s3 store started", Duration::from_secs(30));
    disk.freeze();
    client_in.write_all(b"go\n").expect("start client");
    // Thawed as soon as an object is seen shed: the rings filled behind a
    // storage thread that cannot write.
    let shed = common::wait_metric(
        status_port,
        "tapwire_store_drops_shed_total",
        Duration::from_secs(60),
    );
    let waits = metric_sum(status_port, "tapwire_store_waits_total");
    disk.thaw();
    assert!(
        shed > 0,
        "no object was shed in 60 s (store waits: {waits})"
    );
    let made = CONNS * REQUESTS;
    let common::Finished {
        lines,
        stderr,
        counters,
    } = common::finish_overload(agent, &done, made);
    drop(client_in);
    eprintln!("shed counters: {counters}");

    // No whole record was lost in the kernel.
    assert_eq!(counters["kernel_drops"]["ring_full"], 0, "{counters}");
    // Every request has its event, with method, path and status.
    let events: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "http_transaction")
        .filter(|t| t["method"] == "POST" && t["status"] == 200)
        .filter(|t| {
            t["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/upload/"))
        })
        .collect();
    let mut paths: Vec<&str> = events.iter().filter_map(|t| t["path"].as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), made, "requests with an event; {counters}");
    // The S3 store counted what it shed, and each shed object's event says
    // it was not kept.
    let s3 = stderr
        .iter()
        .find(|l| l.contains("store stopped") && l.contains("s3_store") && l.contains("accepted"))
        .unwrap_or_else(|| panic!("no s3 store stop line: {stderr:?}"));
    let shed_at_stop = stat(s3, "shed");
    assert!(shed_at_stop >= shed, "{s3}");
    let not_kept = events
        .iter()
        .flat_map(|t| t["objects"].as_array().into_iter().flatten())
        .filter(|o| o["kept"] == false)
        .count() as u64;
    assert!(
        not_kept >= shed_at_stop,
        "{not_kept} objects named not kept, {shed_at_stop} shed: {s3}"
    );
}
