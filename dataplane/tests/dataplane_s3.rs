//! The agent with an S3 object store (a real SeaweedFS on loopback): captured
//! payloads land in the bucket under their BLAKE3 digest, and events carry the
//! rendered access URL; bad credentials stop the agent at start-up.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, Bg, certs, path_str, python, wait_listening};

const BUCKET: &str = "captures";

#[test]
fn captured_payloads_are_stored_in_s3_under_their_digest() {
    if !common::can_run("captured_payloads_are_stored_in_s3_under_their_digest") {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket(BUCKET);
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("qpoint.yaml");
    std::fs::write(
        &config_path,
        weed.config_yaml(BUCKET, &dir.path().join("spool")),
    )
    .unwrap();

    let certs = certs();
    let port = common::free_port();
    let _server = Bg::spawn(
        Command::new(python())
            .arg(common::http_server_py())
            .args([
                &port.to_string(),
                path_str(&certs.cert),
                path_str(&certs.key),
            ])
            .stdout(Stdio::null()),
    );
    wait_listening(port, Duration::from_secs(20));

    let url = format!("https://127.0.0.1:{port}/small");
    let cgroup = common::Cgroup::new("s3");
    let agent = Agent::start_dataplane(
        &[
            "--config".into(),
            path_str(&config_path).into(),
            "--cgroup".into(),
            path_str(&cgroup.path).into(),
        ],
        &[],
    );
    let curl = cgroup.spawn("curl", &["-sk", "--http1.1", &url]);
    assert_eq!(
        common::finish(curl, Duration::from_secs(60)),
        b"hello from tapwire\n"
    );
    std::thread::sleep(Duration::from_secs(1));
    let lines = agent.stop_with(libc::SIGINT);

    let txn = lines
        .iter()
        .find(|v| v["type"] == "http_transaction" && v["path"] == "/small")
        .unwrap_or_else(|| panic!("no transaction event in {lines:?}"));
    assert!(
        lines.iter().all(|v| v["type"] != "object"),
        "objects go to S3, not stdout"
    );
    let body = txn["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == "response_body")
        .expect("response body object");
    let digest = blake3::hash(b"hello from tapwire\n").to_hex().to_string();
    assert_eq!(body["digest"], digest.as_str());
    assert_eq!(
        body["url"],
        format!("http://{}/{BUCKET}/{digest}", weed.endpoint())
    );

    let client = weed.client(BUCKET);
    let keys = common::block_on(client.list_keys()).unwrap();
    for object in txn["objects"].as_array().unwrap() {
        let key = object["digest"].as_str().unwrap();
        assert!(
            keys.iter().any(|k| k == key),
            "{key} not in bucket: {keys:?}"
        );
        let bytes = common::block_on(client.get_object(key)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), key);
        assert_eq!(bytes.len() as u64, object["size"].as_u64().unwrap());
    }
    assert_eq!(
        &common::block_on(client.get_object(&digest)).unwrap()[..],
        b"hello from tapwire\n"
    );
}

#[test]
fn wrong_secret_stops_the_agent_at_start_up() {
    if !common::can_run("wrong_secret_stops_the_agent_at_start_up") {
        return;
    }
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("qpoint.yaml");
    let yaml = weed
        .config_yaml(BUCKET, &dir.path().join("spool"))
        .replace(common::SECRET_KEY, "not-the-secret");
    std::fs::write(&config_path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tapwire"))
        .args(["--config", path_str(&config_path), "--httpd-listen", "off"])
        .env_remove("TAPWIRE_DEBUG_CAPTURE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tapwire: store `s3_store`: bucket `captures`"),
        "{stderr}"
    );
    assert!(last.contains("SignatureDoesNotMatch"), "{stderr}");
}
