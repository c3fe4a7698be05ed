//! The S3 server for the object-store configuration: SeaweedFS (`weed mini`) on
//! loopback with fixed credentials, and the two S3 calls the harness makes itself
//! (create a bucket, count its keys) through curl's SigV4 signing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::process::Guard;

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "tapwirebench";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "tapwire-bench-secret-key-0123456789";
/// Region in the signatures.
pub const REGION: &str = "us-east-1";
/// Longest wait for the S3 API to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Keys per ListObjectsV2 page.
const LIST_PAGE: u32 = 1000;

/// A running SeaweedFS.
pub struct Seaweed {
    _guard: Guard,
    /// `127.0.0.1:PORT` of the S3 API.
    pub endpoint: String,
}

impl Seaweed {
    /// Starts `weed mini` with its data under `dir`.
    pub fn start(weed: &Path, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(
            dir.join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"bench","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )?;
        let mut ports = Vec::new();
        // Bind all at once so the kernel hands out ten different ports.
        let listeners: Vec<_> = (0..10)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        for l in &listeners {
            ports.push(l.local_addr()?.port());
        }
        drop(listeners);
        let names = [
            "s3.port",
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        let log = std::fs::File::create(dir.join("weed.log"))?;
        let mut cmd = Command::new(weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args(names.iter().zip(&ports).map(|(n, p)| format!("-{n}={p}")))
            .arg(format!("-s3.config={}", dir.join("s3.json").display()))
            .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()))
            .arg(format!(
                "-filer.localSocket={}",
                dir.join("filer.sock").display()
            ))
            .args([
                "-s3.autoCreateBucket=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut guard = Guard::spawn("weed", &mut cmd, libc::SIGTERM, STOP_GRACE)?;
        let endpoint = format!("127.0.0.1:{}", ports[0]);
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            guard.check_running()?;
            if unsigned_status(&endpoint).as_deref() == Some("403") {
                break;
            }
            if Instant::now() > until {
                bail!("weed's S3 API did not answer within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Self {
            _guard: guard,
            endpoint,
        })
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let code = signed(
            &["-X", "PUT"],
            &format!("http://{}/{bucket}", self.endpoint),
        )?
        .0;
        if code != "200" {
            bail!("creating bucket `{bucket}` answered {code}");
        }
        Ok(())
    }

    /// Number of keys in `bucket`.
    pub fn count_keys(&self, bucket: &str) -> Result<u64> {
        let mut total = 0;
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "http://{}/{bucket}?list-type=2&max-keys={LIST_PAGE}",
                self.endpoint
            );
            if let Some(t) = &token {
                url.push_str("&continuation-token=");
                url.push_str(&percent_encode(t));
            }
            let (code, body) = signed(&[], &url)?;
            if code != "200" {
                bail!("listing bucket `{bucket}` answered {code}: {body}");
            }
            total += body.matches("<Key>").count() as u64;
            token = xml_text(&body, "NextContinuationToken");
            if token.is_none() {
                return Ok(total);
            }
        }
    }
}

/// Where `weed` is: `$TAPWIRE_WEED`, else `<workspace>/.venv/bin/weed`.
pub fn weed_binary(workspace: &Path) -> PathBuf {
    std::env::var_os("TAPWIRE_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".venv/bin/weed"))
}

fn unsigned_status(endpoint: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
        ])
        .arg(format!("http://{endpoint}/"))
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A SigV4-signed curl request: (status code, body).
fn signed(extra: &[&str], url: &str) -> Result<(String, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
        .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
        .args(extra)
        .arg(url)
        .output()
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().to_owned(), body.to_owned()))
}

fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find('<')? + start;
    Some(body[start..end].to_owned())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
