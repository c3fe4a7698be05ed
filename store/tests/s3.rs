//! The S3 store against a real S3 server (SeaweedFS on loopback).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Weed, block_on};
use tapwire_store::config::{Secret, SecretSource, StartupCheck};
use tapwire_store::stores::StoreMemory;
use tapwire_store::{Object, ObjectStore as _, S3Store};

/// How long a test waits for the store to upload what it was given.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

fn wait_until_settled(store: &S3Store) {
    let until = Instant::now() + UPLOAD_TIMEOUT;
    while store.pending() > 0 {
        assert!(
            Instant::now() < until,
            "objects still pending after {UPLOAD_TIMEOUT:?}: {} (stats {:?})",
            store.pending(),
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits, at most `timeout`, until every ticket of `receipt` is settled.
fn wait_for_receipt(receipt: &tapwire_store::Receipt, store: &S3Store, timeout: Duration) {
    let until = Instant::now() + timeout;
    while !receipt.settled() {
        assert!(Instant::now() < until, "not settled: {:?}", store.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One announcement: part, digest, size, URL, deduplicated.
type Announcement = (usize, String, u64, Option<String>, bool);

/// Announcements heard.
#[derive(Default)]
struct Heard(Mutex<Vec<Announcement>>);

impl tapwire_store::Announce for Heard {
    fn stored(&self, part: usize, stored: tapwire_store::Stored<'_>) {
        self.0.lock().expect("heard").push((
            part,
            stored.digest.to_hex().to_string(),
            stored.size,
            stored.url.map(|u| u.render(stored.digest)),
            stored.deduplicated,
        ));
    }
}

/// 40 MiB of pseudo-random bytes (BLAKE3's extendable output).
fn big_object() -> Vec<u8> {
    let mut bytes = vec![0u8; 40 << 20];
    blake3::Hasher::new()
        .update(b"tapwire big object")
        .finalize_xof()
        .fill(&mut bytes);
    bytes
}

#[test]
fn stores_1000_small_objects_and_a_40_mib_multipart_object() {
    let Some(weed) = Weed::start() else { return };
    weed.create_bucket("objects");
    let spool = tempfile::tempdir().expect("spool dir");
    let cfg = weed.store_config("s3-main", "objects", spool.path());
    let store = S3Store::start(&cfg).unwrap_or_else(|e| panic!("start: {e}"));

    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..1000u32 {
        let size = 1 + (i as usize * 37) % 4000;
        let mut bytes = format!("small object {i}\n").into_bytes();
        bytes.resize(size.max(bytes.len()), (i % 251) as u8);
        let object = Object::new("text/plain", Bytes::from(bytes.clone()));
        expected.insert(object.digest.to_hex().to_string(), bytes);
        store.put(object);
    }
    let big = big_object();
    let big_object = Object::new("application/octet-stream", Bytes::from(big.clone()));
    let big_digest = big_object.digest.to_hex().to_string();
    expected.insert(big_digest.clone(), big);
    store.put(big_object);
    wait_until_settled(&store);

    let stats = store.stats();
    assert_eq!(stats.accepted, 1001, "{stats:?}");
    assert_eq!(stats.stored, 1001, "{stats:?}");
    assert_eq!(
        stats.multipart, 1,
        "the 40 MiB object goes up as multipart: {stats:?}"
    );
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.deduplicated, 0, "{stats:?}");
    assert_eq!(
        store.spooled(),
        0,
        "the spool is empty once everything is stored"
    );

    // The same bytes again are not uploaded again: the object is settled
    // and announced before `put_with` returns (the store knows it is there).
    let again = expected.values().next().expect("an object").clone();
    let again = Object::new("text/plain", Bytes::from(again));
    let receipt = tapwire_store::Receipt::new();
    let heard = Arc::new(Heard::default());
    let notice = tapwire_store::Notice::new(heard.clone(), 7);
    store.put_with(again.clone(), receipt.ticket(0).with_notice(notice));
    assert!(
        receipt.settled() && receipt.kept(0),
        "kept at once: {:?}",
        store.stats()
    );
    let digest = again.digest.to_hex().to_string();
    assert_eq!(
        *heard.0.lock().expect("heard"),
        [(
            7,
            digest.clone(),
            again.bytes.len() as u64,
            Some(format!("http://{}/objects/{digest}", weed.endpoint())),
            true
        )]
    );
    wait_until_settled(&store);
    let stats = store.stats();
    assert_eq!((stats.stored, stats.deduplicated), (1001, 1), "{stats:?}");
    assert_eq!(stats.accepted, 1002, "{stats:?}");

    let url = store
        .access_url()
        .map(|u| u.render(&blake3::Hash::from_hex(&big_digest).expect("hex")));
    assert_eq!(
        url,
        Some(format!("http://{}/objects/{big_digest}", weed.endpoint()))
    );
    store.shutdown(Duration::from_secs(5));

    // Every key is the digest of its bytes, and the bytes read back are the same.
    let client = Arc::new(weed.client("objects"));
    let keys = block_on(client.list_keys()).unwrap_or_else(|e| panic!("list: {e}"));
    let want: Vec<&String> = expected.keys().collect();
    let mut got: Vec<&String> = keys.iter().collect();
    got.sort();
    assert_eq!(got, want, "the bucket holds exactly the objects put");
    let expected = Arc::new(expected);
    block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (n, key) in keys.into_iter().enumerate() {
            let client = Arc::clone(&client);
            let expected = Arc::clone(&expected);
            tasks.spawn(async move {
                let bytes = client
                    .get_object(&key)
                    .await
                    .unwrap_or_else(|e| panic!("GET {key}: {e}"));
                assert_eq!(
                    blake3::hash(&bytes).to_hex().as_str(),
                    key,
                    "key is the digest"
                );
                assert!(bytes[..] == expected[&key][..], "bytes of {key} differ");
            });
            if n % 16 == 15 {
                while tasks.len() > 8 {
                    tasks.join_next().await.expect("task").expect("GET task");
                }
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("GET task");
        }
    });
}

#[test]
fn wrong_secret_key_fails_start_up_with_signature_does_not_match() {
    let Some(weed) = Weed::start() else { return };
    weed.create_bucket("objects");
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = weed.store_config("bad-secret", "objects", spool.path());
    cfg.secret_key = Secret {
        source: SecretSource::Text,
        value: "not-the-secret".to_owned(),
    };
    let err = S3Store::start(&cfg).expect_err("a wrong secret must not start");
    assert_eq!(
        err.to_string(),
        format!(
            "store `bad-secret`: bucket `objects` at `{}` failed the start-up check: SignatureDoesNotMatch",
            weed.endpoint()
        )
    );
}

#[test]
fn missing_bucket_fails_start_up_with_no_such_bucket() {
    let Some(weed) = Weed::start() else { return };
    let spool = tempfile::tempdir().expect("spool dir");
    let cfg = weed.store_config("no-bucket", "absent", spool.path());
    let err = S3Store::start(&cfg).expect_err("a missing bucket must not start");
    assert_eq!(
        err.to_string(),
        format!(
            "store `no-bucket`: bucket `absent` at `{}` failed the start-up check: NoSuchBucket",
            weed.endpoint()
        )
    );

    // With `startup_check: warn` the store starts anyway and keeps objects spooled.
    let mut cfg = cfg;
    cfg.startup_check = StartupCheck::Warn;
    let store = S3Store::start(&cfg).unwrap_or_else(|e| panic!("warn-only start: {e}"));
    store.put(Object::new("text/plain", Bytes::from_static(b"kept")));
    store.shutdown(Duration::from_millis(300));
    assert_eq!(store.stats().stored, 0);
    assert_eq!(store.spooled(), 1, "the object waits in the spool");
}

#[test]
fn unreachable_endpoint_fails_start_up_with_connection_refused() {
    let Some(weed) = Weed::start() else { return };
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = weed.store_config("nobody-home", "objects", spool.path());
    let endpoint = format!("127.0.0.1:{}", common::free_port());
    cfg.endpoint.clone_from(&endpoint);
    let err = S3Store::start(&cfg).expect_err("nothing listens there");
    assert_eq!(
        err.to_string(),
        format!(
            "store `nobody-home`: bucket `objects` at `{endpoint}` failed the start-up check: connection refused"
        )
    );
}

#[test]
fn failed_multipart_upload_is_aborted_and_reported() {
    let Some(weed) = Weed::start() else { return };
    weed.create_bucket("objects");
    let client = weed.client("objects");
    // A part below S3's 5 MiB minimum that is not the last makes completion fail.
    block_on(async {
        let id = client
            .create_multipart("k", "application/octet-stream")
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
        let e1 = client
            .upload_part("k", &id, 1, Bytes::from_static(b"tiny"))
            .await
            .unwrap_or_else(|e| panic!("part 1: {e}"));
        let e2 = client
            .upload_part("k", &id, 2, Bytes::from_static(b"tail"))
            .await
            .unwrap_or_else(|e| panic!("part 2: {e}"));
        let err = client
            .complete_multipart("k", &id, &[(1, e1), (2, e2)])
            .await
            .expect_err("a 4-byte first part is too small");
        assert_eq!(err.code(), "EntityTooSmall", "{err}");
        assert!(!err.is_transient());
        client
            .abort_multipart("k", &id)
            .await
            .unwrap_or_else(|e| panic!("abort: {e}"));
        assert!(
            client
                .list_keys()
                .await
                .unwrap_or_else(|e| panic!("list: {e}"))
                .is_empty()
        );
    });
}

#[test]
fn https_verifies_the_certificate_against_the_system_roots() {
    let Some(weed) = Weed::start_tls() else {
        return;
    };
    weed.create_bucket("objects");
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = weed.store_config("tls-store", "objects", spool.path());
    cfg.endpoint = weed.tls_endpoint();
    cfg.insecure = false;
    let err = S3Store::start(&cfg).expect_err("a self-signed certificate is not trusted");
    assert_eq!(
        err.to_string(),
        format!(
            "store `tls-store`: bucket `objects` at `{}` failed the start-up check: TLS handshake failed",
            weed.tls_endpoint()
        )
    );
    let mut chain = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = cur {
        chain.push_str(&e.to_string());
        chain.push('\n');
        cur = e.source();
    }
    assert!(
        chain.contains("https://"),
        "the request used HTTPS: {chain}"
    );
    assert!(
        chain.to_lowercase().contains("certificate"),
        "the certificate was refused: {chain}"
    );
}

/// `ca_file` adds a private CA: the same self-signed server is trusted with it.
#[test]
fn https_with_ca_file_trusts_a_private_certificate() {
    let Some(weed) = Weed::start_tls() else {
        return;
    };
    weed.create_bucket("objects");
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = weed.store_config("tls-ca", "objects", spool.path());
    cfg.endpoint = weed.tls_endpoint();
    cfg.insecure = false;
    cfg.ca_file = Some(weed.dir().join("cert.pem").display().to_string());
    let store = S3Store::start(&cfg).unwrap_or_else(|e| panic!("start with ca_file: {e:#}"));
    store.put(Object::new("text/plain", Bytes::from_static(b"over https")));
    wait_until_settled(&store);
    assert_eq!(store.stats().stored, 1, "{:?}", store.stats());
    store.shutdown(Duration::from_secs(5));
}

#[test]
fn the_feeder_exits_non_zero_without_panicking_on_a_wrong_secret() {
    let Some(weed) = Weed::start() else { return };
    weed.create_bucket("objects");
    let work = tempfile::tempdir().expect("work dir");
    let yaml = weed
        .store_yaml("feeder-bad", "objects", &work.path().join("spool"), "fatal")
        .replace(common::SECRET_KEY, "wrong-secret");
    let config = work.path().join("store.yaml");
    std::fs::write(&config, yaml).expect("write store.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapwire-store-feeder"))
        .arg(&config)
        .output()
        .expect("run the feeder");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing started: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let error = format!(
        "error: store `feeder-bad`: bucket `objects` at `{}` failed the start-up check: SignatureDoesNotMatch",
        weed.endpoint()
    );
    assert!(
        stderr.lines().any(|line| line.starts_with(&error)),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("PLAIN HTTP (`insecure: true`)"),
        "plain HTTP is warned about: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// An object in the spool may be named by an event already sent, so a full spool
/// refuses new objects (counted) and never evicts old ones.
#[test]
fn past_the_spool_limit_new_objects_are_refused_and_counted() {
    let Some(mut weed) = Weed::start() else {
        return;
    };
    weed.create_bucket("objects");
    weed.stop();
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = weed.store_config("small-spool", "objects", spool.path());
    cfg.startup_check = StartupCheck::Warn;
    cfg.concurrency = 1;
    // Room for ten 1000-byte objects (each file adds a header of under 100
    // bytes), besides the share kept for announcements.
    let share = tapwire_store::spool::dir::ANNOUNCEMENT_SHARE;
    cfg.spool_max_bytes = (10 * 1100 * share).div_ceil(share - 1);
    let store = S3Store::start(&cfg).unwrap_or_else(|e| panic!("start: {e}"));
    let objects: Vec<Vec<u8>> = (0..30u32)
        .map(|i| {
            let mut b = format!("object {i}\n").into_bytes();
            b.resize(1000, b'.');
            b
        })
        .collect();
    let receipt = tapwire_store::Receipt::new();
    for (i, o) in objects.iter().enumerate() {
        store.put_with(
            Object::new("text/plain", Bytes::from(o.clone())),
            receipt.ticket(i),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for_receipt(&receipt, &store, Duration::from_secs(10));
    let kept: Vec<bool> = (0..30).map(|i| receipt.kept(i)).collect();
    assert_eq!(kept[..10], [true; 10], "the first ten are spooled");
    assert_eq!(kept[10..], [false; 20], "the rest are refused, and say so");
    let stats = store.stats();
    assert_eq!(
        (stats.dropped, stats.drops.spool_full),
        (20, 20),
        "{stats:?}"
    );
    // One sync per batch appended to a segment: objects that arrive while
    // the last batch is written share the next one.
    assert!(
        (1..=10).contains(&stats.synced_files),
        "the kept objects are fsynced, a batch at a time: {stats:?}"
    );
    assert!(stats.synced_dirs >= 1, "{stats:?}");

    weed.restart();
    wait_until_settled(&store);
    let stats = store.stats();
    assert_eq!((stats.stored, stats.dropped), (10, 20), "{stats:?}");
    store.shutdown(Duration::from_secs(5));
    let keys = block_on(weed.client("objects").list_keys()).unwrap_or_else(|e| panic!("list: {e}"));
    let mut want: Vec<String> = objects[..10]
        .iter()
        .map(|o| blake3::hash(o).to_hex().to_string())
        .collect();
    want.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, want, "exactly the kept objects are stored");
}

/// Announcements heard, each as `part digest dedup`, from memory; those
/// written ahead are made by its [`Ahead`].
#[derive(Default)]
struct Told(Mutex<Vec<String>>, Arc<Ahead>);

impl tapwire_store::Announce for Told {
    fn stored(&self, part: usize, stored: tapwire_store::Stored<'_>) {
        let line = format!("{part} {} {}", stored.digest.to_hex(), stored.deduplicated);
        self.0.lock().expect("told").push(line);
    }

    fn write_ahead(
        &self,
        part: usize,
        stored: tapwire_store::Stored<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Arc<dyn tapwire_store::WrittenAhead>> {
        let line = format!("{part} {} {}", stored.digest.to_hex(), stored.deduplicated);
        out.extend_from_slice(line.as_bytes());
        Some(Arc::clone(&self.1) as Arc<dyn tapwire_store::WrittenAhead>)
    }
}

/// Makes the announcements written ahead.
#[derive(Default)]
struct Ahead(Mutex<Vec<String>>);

impl tapwire_store::WrittenAhead for Ahead {
    fn announce(&self, store: &str, record: &[u8]) {
        assert_eq!(store, "backlog");
        let line = String::from_utf8(record.to_vec()).expect("utf-8");
        self.0.lock().expect("ahead").push(line);
    }
}

/// While the bucket is away, requests naming the objects waiting for it pile
/// up past what waits in memory: the rest wait on disk, and once the uploads
/// are done every request is announced, none dropped, and no file is left.
#[test]
fn announcements_past_the_memory_limit_wait_on_disk_and_none_is_lost() {
    let Some(mut weed) = Weed::start() else {
        return;
    };
    weed.create_bucket("objects");
    weed.stop();
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = weed.store_config("backlog", "objects", spool.path());
    cfg.startup_check = StartupCheck::Warn;
    // Memory for 2,048 waiting announcements, as a budget's share sets it.
    let in_memory = 2048;
    let memory = StoreMemory {
        notice_bytes: in_memory as u64 * tapwire_store::spool::dir::NOTICE_BYTES,
        ..StoreMemory::default()
    };
    let store = S3Store::start_with(&cfg, memory).unwrap_or_else(|e| panic!("start: {e}"));
    let told = Arc::new(Told::default());
    // Ten objects, each named by many requests: more than wait in memory.
    let per_object = in_memory / 10 + 500;
    let objects: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
    let receipt = tapwire_store::Receipt::new();
    let mut part = 0;
    for _ in 0..per_object {
        for o in &objects {
            let notice = tapwire_store::Notice::new(told.clone(), part);
            let object = Object::new("text/plain", Bytes::from(o.clone()));
            store.put_with(object, receipt.ticket(0).with_notice(notice));
            part += 1;
        }
    }
    wait_for_receipt(&receipt, &store, Duration::from_secs(30));
    assert!(receipt.kept(0), "{:?}", store.stats());
    let on_disk = spool_files(spool.path(), ".rec");
    assert!(on_disk > 0, "records wait on disk: {:?}", store.stats());
    assert!(
        told.0.lock().expect("told").is_empty(),
        "nothing is stored yet"
    );

    weed.restart();
    wait_until_settled(&store);
    let until = Instant::now() + Duration::from_secs(30);
    let heard = || told.0.lock().expect("told").len() + told.1.0.lock().expect("ahead").len();
    while heard() < part {
        assert!(
            Instant::now() < until,
            "{} of {part} announced: {:?}",
            heard(),
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = store.stats();
    assert_eq!(
        (
            stats.stored,
            stats.artifact_records,
            stats.artifact_records_dropped
        ),
        (10, part as u64, 0),
        "{stats:?}"
    );
    let from_memory = told.0.lock().expect("told").clone();
    let from_disk = told.1.0.lock().expect("ahead").clone();
    assert_eq!(from_memory.len(), in_memory);
    // Every request, once, with its own object and whether it was a
    // duplicate of the upload (all but the first request of each object).
    let mut all: Vec<(usize, String)> = from_memory
        .iter()
        .chain(&from_disk)
        .map(|line| {
            let (part, rest) = line.split_once(' ').expect("part");
            (part.parse().expect("number"), rest.to_owned())
        })
        .collect();
    all.sort();
    let want: Vec<(usize, String)> = (0..part)
        .map(|p| {
            let digest = blake3::hash(&objects[p % 10]).to_hex();
            (p, format!("{digest} {}", p >= 10))
        })
        .collect();
    assert!(all == want, "announcements differ from the requests made");
    assert_eq!(
        spool_files(spool.path(), ".rec"),
        0,
        "read records are deleted"
    );
    store.shutdown(Duration::from_secs(5));
}

/// Files in `dir` whose names end with `suffix`.
fn spool_files(dir: &std::path::Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("spool dir")
        .filter(|d| {
            d.as_ref()
                .is_ok_and(|d| d.file_name().to_string_lossy().ends_with(suffix))
        })
        .count()
}

#[test]
fn configuration_errors_fail_before_any_request() {
    let spool = tempfile::tempdir().expect("spool dir");
    let mut cfg = tapwire_store::config::S3Config {
        id: "conf".to_owned(),
        endpoint: "https://minio.example.com:9000".to_owned(),
        bucket: "b".to_owned(),
        region: "us-east-1".to_owned(),
        access_url: "{{SCHEME}}://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}".to_owned(),
        insecure: false,
        access_key: Secret {
            source: SecretSource::Text,
            value: "ak".to_owned(),
        },
        secret_key: Secret {
            source: SecretSource::Env,
            value: "TAPWIRE_TEST_S3_SECRET_NEVER_SET".to_owned(),
        },
        spool_dir: spool.path().display().to_string(),
        spool_max_bytes: 1 << 20,
        concurrency: 4,
        multipart_threshold_bytes: 8 << 20,
        multipart_part_bytes: 8 << 20,
        startup_check: StartupCheck::Fatal,
        session_token: None,
        server_side_encryption: None,
        kms_key_id: None,
        ca_file: None,
    };
    let err = S3Store::start(&cfg).expect_err("unset secret variable");
    assert_eq!(err.to_string(), "store `conf`: cannot read credentials");
    assert_eq!(
        std::error::Error::source(&err)
            .expect("a cause")
            .to_string(),
        "store `conf`: environment variable `TAPWIRE_TEST_S3_SECRET_NEVER_SET` for `secret_key` is not set"
    );
    cfg.secret_key = Secret {
        source: SecretSource::Text,
        value: "sk".to_owned(),
    };
    let err = S3Store::start(&cfg).expect_err("a scheme in the endpoint");
    assert_eq!(
        err.to_string(),
        "store `conf`: endpoint `https://minio.example.com:9000` must be a host and optional port, \
         without scheme or path (use `insecure` to choose HTTP)"
    );
}
