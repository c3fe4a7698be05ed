//! The traced server: nginx with one worker, HTTPS and plain HTTP on loopback,
//! HTTP/1.1 keep-alive, serving fixed-size files. Everything it needs (config,
//! self-signed certificate, files, logs, temp paths) lives in the harness's
//! temporary directory.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::process::Guard;
use super::procfs;

/// Response sizes served, bytes, with the path serving each.
pub const FILES: [(&str, usize); 2] = [("1k.bin", 1024), ("64k.bin", 64 * 1024)];
/// Longest wait for nginx to listen and start its worker.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Grace nginx gets to shut down on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running nginx.
pub struct Nginx {
    guard: Guard,
    /// HTTPS port on 127.0.0.1.
    pub https_port: u16,
    /// Plain HTTP port on 127.0.0.1.
    pub http_port: u16,
    /// The single worker process.
    pub worker: u32,
    /// The `libssl.so*` the worker maps.
    pub libssl: PathBuf,
}

impl Nginx {
    /// Writes the config, certificate and files under `dir` and starts nginx.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_serving(dir, false)
    }

    /// [`Nginx::start`], HTTPS also offering HTTP/2 (ALPN `h2`).
    pub fn start_with_http2(dir: &Path) -> Result<Self> {
        Self::start_serving(dir, true)
    }

    fn start_serving(dir: &Path, http2: bool) -> Result<Self> {
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        for (name, size) in FILES {
            std::fs::write(www.join(name), body(size))?;
        }
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .context("run openssl to make a self-signed certificate")?;
        if !out.status.success() {
            bail!(
                "openssl req failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let https_port = free_port()?;
        let http_port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            config(dir, &www, &cert, &key, (https_port, http_port), http2),
        )?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = Guard::spawn("nginx", &mut cmd, libc::SIGTERM, STOP_GRACE)?;
        let until = Instant::now() + READY_TIMEOUT;
        let worker = loop {
            guard.check_running().with_context(|| {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                format!("nginx did not start: {log}")
            })?;
            let listening = [https_port, http_port]
                .iter()
                .all(|&p| TcpStream::connect(("127.0.0.1", p)).is_ok());
            let workers: Vec<u32> = procfs::with_children(guard.pid())
                .into_iter()
                .skip(1)
                .collect();
            if listening && let Some(&w) = workers.first() {
                break w;
            }
            if Instant::now() > until {
                bail!("nginx not listening after {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let libssl = procfs::libssl_of(worker).context("nginx's worker maps no libssl.so")?;
        Ok(Self {
            guard,
            https_port,
            http_port,
            worker,
            libssl,
        })
    }

    /// The master process (the worker's parent).
    pub fn master(&self) -> u32 {
        self.guard.pid()
    }

    /// Master and workers.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.guard.pid(), self.worker]
    }
}

/// `size` bytes of printable, non-repeating-per-line text.
fn body(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(
    dir: &Path,
    www: &Path,
    cert: &Path,
    key: &Path,
    ports: (u16, u16),
    http2: bool,
) -> String {
    let (https, http) = ports;
    let h2 = if http2 { " http2" } else { "" };
    let d = dir.display();
    let www = www.display();
    let cert = cert.display();
    let key = key.display();
    // `user root`: the temp dir is private to the harness (root). `sendfile off`:
    // plain bodies go through write(2)/writev(2), the path the syscall probes see.
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile off;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{https} ssl{h2};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {www};
    }}
    server {{
        listen 127.0.0.1:{http};
        root {www};
    }}
}}
"#
    )
}
