//! S3 faults after start-up, against a real SeaweedFS behind a fault-injecting
//! proxy: a 403 storm pauses the store and every object arrives once it ends,
//! without a restart; a blackholed endpoint loses nothing and never blocks the
//! caller; a full spool filesystem refuses only what the counters report.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Fault, FaultProxy, Weed, block_on};
use tapwire_store::config::S3Config;
use tapwire_store::spool::header::header_len;
use tapwire_store::{Object, ObjectStore as _, Receipt, S3Store, StoreStats};

fn object(tag: &str, i: usize, size: usize) -> Vec<u8> {
    let mut b = format!("{tag} object {i}\n").into_bytes();
    b.resize(size, b'.');
    b
}

/// Puts `objects` with one receipt; returns it.
fn put_all(store: &S3Store, objects: &[Vec<u8>]) -> std::sync::Arc<Receipt> {
    let receipt = Receipt::new();
    for (i, o) in objects.iter().enumerate() {
        store.put_with(
            Object::new("application/octet-stream", Bytes::from(o.clone())),
            receipt.ticket(i),
        );
    }
    receipt
}

fn wait(what: &str, timeout: Duration, store: &S3Store, done: impl Fn(&StoreStats) -> bool) {
    let until = Instant::now() + timeout;
    loop {
        let stats = store.stats();
        if done(&stats) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what} within {timeout:?}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keys(weed: &Weed, bucket: &str) -> Vec<String> {
    block_on(weed.client(bucket).list_keys()).unwrap_or_else(|e| panic!("list: {e}"))
}

fn assert_all_stored(weed: &Weed, bucket: &str, objects: &[Vec<u8>]) {
    let keys = keys(weed, bucket);
    for (i, o) in objects.iter().enumerate() {
        let key = blake3::hash(o).to_hex().to_string();
        assert!(keys.contains(&key), "object {i} ({key}) not in the bucket");
    }
}

fn proxied(
    weed: &Weed,
    proxy: &FaultProxy,
    id: &str,
    bucket: &str,
    spool: &std::path::Path,
) -> S3Config {
    let mut cfg = weed.store_config(id, bucket, spool);
    cfg.endpoint = proxy.endpoint().to_owned();
    cfg
}

#[test]
fn a_403_storm_pauses_the_store_and_every_object_arrives_after_it_without_a_restart() {
    let Some(weed) = Weed::start() else { return };
    weed.create_bucket("storm");
    let proxy = FaultProxy::start(&weed.endpoint());
    let spool = tempfile::tempdir().expect("spool dir");
    let store = S3Store::start(&proxied(&weed, &proxy, "storm", "storm", spool.path()))
        .unwrap_or_else(|e| panic!("start: {e}"));

    let before: Vec<Vec<u8>> = (0..50).map(|i| object("before", i, 2000)).collect();
    put_all(&store, &before);
    wait(
        "the first 50 stored",
        Duration::from_secs(20),
        &store,
        |s| s.stored == 50,
    );

    proxy.set(Fault::Forbidden);
    let during: Vec<Vec<u8>> = (0..200).map(|i| object("during", i, 2000)).collect();
    let receipt = put_all(&store, &during);
    wait("the 403s seen", Duration::from_secs(20), &store, |s| {
        s.errors >= 3
    });
    std::thread::sleep(Duration::from_secs(3));
    let stats = store.stats();
    assert_eq!(
        stats.stored, 50,
        "nothing stored through the 403s: {stats:?}"
    );
    assert_eq!(
        stats.dropped, 0,
        "a 403 is the store's fault, not the objects': {stats:?}"
    );
    assert!(receipt.settled(), "every object spooled: {stats:?}");
    assert!((0..200).all(|i| receipt.kept(i)));
    // The store pauses and probes: far fewer requests than objects.
    let faulted = proxy.faulted.load(Ordering::Relaxed);
    assert!(faulted < 60, "{faulted} requests answered 403 in 3 s");

    proxy.set(Fault::None);
    wait(
        "every object stored after the storm",
        Duration::from_secs(40),
        &store,
        |s| s.stored == 250,
    );
    let stats = store.stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    store.shutdown(Duration::from_secs(5));
    assert_all_stored(&weed, "storm", &before);
    assert_all_stored(&weed, "storm", &during);
}

#[test]
fn a_blackholed_endpoint_never_blocks_the_caller_and_loses_nothing() {
    let Some(weed) = Weed::start() else { return };
    weed.create_bucket("hole");
    let proxy = FaultProxy::start(&weed.endpoint());
    let spool = tempfile::tempdir().expect("spool dir");
    let cfg = proxied(&weed, &proxy, "hole", "hole", spool.path());
    let store = S3Store::start(&cfg).unwrap_or_else(|e| panic!("start: {e}"));
    proxy.set(Fault::Blackhole);

    let objects: Vec<Vec<u8>> = (0..300).map(|i| object("hole", i, 4000)).collect();
    let started = Instant::now();
    let receipt = put_all(&store, &objects);
    let put_time = started.elapsed();
    assert!(
        put_time < Duration::from_millis(500),
        "put blocked for {put_time:?}"
    );
    let until = Instant::now() + Duration::from_secs(10);
    while !receipt.settled() {
        assert!(
            Instant::now() < until,
            "objects not spooled: {:?}",
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!((0..300).all(|i| receipt.kept(i)), "all spooled and kept");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        proxy.faulted.load(Ordering::Relaxed) > 0,
        "uploads reached the blackhole"
    );
    let stats = store.stats();
    assert_eq!((stats.stored, stats.dropped), (0, 0), "{stats:?}");

    // Stopping is bounded by its deadline even with uploads hanging.
    let stopping = Instant::now();
    store.shutdown(Duration::from_secs(2));
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    drop(store);

    // The next start, with the endpoint reachable, uploads every object.
    let store = S3Store::start(&weed.store_config("hole", "hole", spool.path()))
        .unwrap_or_else(|e| panic!("restart: {e}"));
    assert_eq!(store.recovered(), 300);
    wait("the spool uploaded", Duration::from_secs(30), &store, |s| {
        s.stored == 300
    });
    store.shutdown(Duration::from_secs(5));
    assert_all_stored(&weed, "hole", &objects);
}

/// A small tmpfs for the spool, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mount a tmpfs at {} (needs root)", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_spool_filesystem_refuses_only_what_the_counters_report() {
    let Some(weed) = Weed::start() else { return };
    if !common::can_run("a_full_spool_filesystem_refuses_only_what_the_counters_report") {
        return;
    }
    weed.create_bucket("full");
    let proxy = FaultProxy::start(&weed.endpoint());
    let dir = tempfile::tempdir().expect("mount point");
    let _tmpfs = Tmpfs::mount(dir.path(), "1m");
    let mut cfg = proxied(&weed, &proxy, "full", "full", dir.path());
    // The byte limit is far above the filesystem: the disk fills first.
    cfg.spool_max_bytes = 1 << 30;
    let store = S3Store::start(&cfg).unwrap_or_else(|e| panic!("start: {e}"));
    // Uploads hang, so nothing leaves the spool while it fills.
    proxy.set(Fault::Blackhole);

    let objects: Vec<Vec<u8>> = (0..40).map(|i| object("full", i, 64 * 1024)).collect();
    let receipt = put_all(&store, &objects);
    let until = Instant::now() + Duration::from_secs(10);
    while !receipt.settled() {
        assert!(Instant::now() < until, "not settled: {:?}", store.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let kept: Vec<usize> = (0..40).filter(|&i| receipt.kept(i)).collect();
    let stats = store.stats();
    assert!(stats.drops.no_space > 0, "the disk filled: {stats:?}");
    assert!(!kept.is_empty(), "some objects fit: {stats:?}");
    assert_eq!(
        stats.dropped,
        40 - kept.len() as u64,
        "every refused object is counted: {stats:?}"
    );
    assert_eq!(
        stats.dropped,
        stats.drops.no_space + stats.drops.write_error
    );
    // No half-written object is left behind: the segments hold the kept
    // objects, whole, and nothing else.
    let spooled: u64 = std::fs::read_dir(dir.path())
        .expect("list spool")
        .map(|d| d.expect("entry"))
        .filter(|d| d.file_name().to_string_lossy().ends_with(".seg"))
        .map(|d| d.metadata().expect("stat").len())
        .sum();
    let record = u64::from(header_len("application/octet-stream")) + 64 * 1024;
    assert_eq!(spooled, kept.len() as u64 * record, "{stats:?}");

    // The store still answers, and once the endpoint is back every kept object
    // arrives; the counters said exactly what was lost.
    proxy.set(Fault::None);
    wait(
        "kept objects stored",
        Duration::from_secs(60),
        &store,
        |s| s.stored == kept.len() as u64,
    );
    store.shutdown(Duration::from_secs(5));
    let kept_objects: Vec<Vec<u8>> = kept.iter().map(|&i| objects[i].clone()).collect();
    assert_all_stored(&weed, "full", &kept_objects);
}

/// The headers S3 sees: a session token and server-side encryption are sent and
/// signed, and the signed host is the `Host` sent (here with an uppercase name,
/// which the URL lowercases).
#[test]
fn session_token_and_encryption_are_sent_and_signed() {
    let Some(weed) = Weed::start() else { return };
    weed.create_bucket("sse");
    let proxy = FaultProxy::start(&weed.endpoint());
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = proxied(&weed, &proxy, "sse", "sse", spool.path());
    let port = proxy
        .endpoint()
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    cfg.endpoint = format!("LOCALHOST:{port}");
    cfg.startup_check = tapwire_store::config::StartupCheck::Warn;
    cfg.session_token = Some(tapwire_store::config::Secret {
        source: tapwire_store::config::SecretSource::Text,
        value: "session-token-123".to_owned(),
    });
    cfg.server_side_encryption = Some(tapwire_store::config::ServerSideEncryption::Kms);
    cfg.kms_key_id = Some("key-42".to_owned());
    // Answer everything with 403: only the requests matter here.
    proxy.set(Fault::Forbidden);
    let store = S3Store::start(&cfg).unwrap_or_else(|e| panic!("start: {e}"));
    store.put(Object::new(
        "text/plain",
        Bytes::from_static(b"encrypted please"),
    ));
    let until = Instant::now() + Duration::from_secs(10);
    let put = loop {
        let heads = proxy.heads.lock().expect("heads").clone();
        if let Some(put) = heads.into_iter().find(|h| h.starts_with("PUT ")) {
            break put;
        }
        assert!(Instant::now() < until, "no PUT reached the proxy");
        std::thread::sleep(Duration::from_millis(20));
    };
    store.shutdown(Duration::from_secs(1));
    let header = |name: &str| {
        put.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no `{name}` in {put}"))
    };
    assert_eq!(header("host"), format!("localhost:{port}"));
    assert_eq!(header("x-amz-security-token"), "session-token-123");
    assert_eq!(header("x-amz-server-side-encryption"), "aws:kms");
    assert_eq!(
        header("x-amz-server-side-encryption-aws-kms-key-id"),
        "key-42"
    );
    let authorization = header("authorization");
    let signed = authorization
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("SignedHeaders");
    for name in [
        "host",
        "x-amz-security-token",
        "x-amz-server-side-encryption",
        "x-amz-server-side-encryption-aws-kms-key-id",
    ] {
        assert!(
            signed.split(';').any(|s| s == name),
            "{name} not signed: {signed}"
        );
    }
    // The bucket check (a GET) carries the token but asks for no encryption.
    let get = proxy.heads.lock().expect("heads")[0].clone();
    assert!(get.starts_with("GET "), "{get}");
    assert!(
        get.to_ascii_lowercase()
            .contains("x-amz-security-token: session-token-123")
    );
    assert!(
        !get.to_ascii_lowercase()
            .contains("x-amz-server-side-encryption")
    );
}
