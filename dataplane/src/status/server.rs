//! The status server's listener: one thread, one request per connection
//! (`Connection: close`); `GET`/`HEAD` of the status paths, and `POST /reload`
//! from loopback (what `tapwire reload-config` sends). It wakes once a second to
//! sample the heartbeats, so `/healthz` judges stalls on its own clock.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Status, health, metrics};

/// Where the status server listens unless told otherwise (Qtap's port, on
/// loopback: the Helm chart and the manifest set `0.0.0.0:10001`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10001";
/// Longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How often the heartbeats are sampled (and the stop flag checked).
const TICK: Duration = Duration::from_secs(1);
/// Longest `POST /reload` waits for the reload's outcome (replaced stores may
/// each take `reload::RELOAD_GRACE` to deliver what they hold).
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// The running status server.
pub struct StatusServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// Binds `addr` and starts serving `status`.
    pub fn start(addr: SocketAddr, status: Arc<Status>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || serve(&listener, &status, &flag))?;
        tracing::info!(%addr, "status server listening (/healthz, /readyz, /metrics)");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        // Relaxed: the thread only needs to see it within a tick.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, status: &Arc<Status>, stop: &AtomicBool) {
    let mut stalled = Vec::new();
    // None until the first sample (not `now - TICK`: the monotonic clock
    // starts at boot, and an agent started in its first second would panic).
    let mut last_sample: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if last_sample.is_none_or(|t| t.elapsed() >= TICK) {
            stalled = health::stalled(health::STALL_LIMIT);
            last_sample = Some(std::time::Instant::now());
        }
        if !readable(listener, TICK) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if let Err(err) = respond(stream, status, &stalled) {
            tracing::debug!(%err, "status request failed");
        }
    }
}

/// Waits up to `timeout` for a connection to accept.
fn readable(listener: &TcpListener, timeout: Duration) -> bool {
    let mut fds = [libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as libc::c_int) };
    n > 0 && fds[0].revents & libc::POLLIN != 0
}

fn respond(
    mut stream: TcpStream,
    status: &Arc<Status>,
    stalled: &[(String, Duration)],
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (code, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => {
            if stalled.is_empty() {
                (200, TEXT, "ok\n".to_owned())
            } else {
                let list: Vec<String> = stalled
                    .iter()
                    .map(|(name, idle)| {
                        format!("{name} has made no progress for {}s", idle.as_secs())
                    })
                    .collect();
                (503, TEXT, list.join("\n") + "\n")
            }
        }
        ("GET" | "HEAD", "/readyz") => match status.ready.check() {
            Ok(()) => (200, TEXT, "ready\n".to_owned()),
            Err(reasons) => (503, TEXT, reasons + "\n"),
        },
        ("GET" | "HEAD", "/metrics") => (200, metrics::CONTENT_TYPE, metrics::render(status)),
        // `tapwire reload-config`; only from this host, whatever the address. It
        // waits for the reload on a thread of its own, so probes keep answers.
        ("POST", "/reload") if stream.peer_addr().is_ok_and(|a| a.ip().is_loopback()) => {
            let status = Arc::clone(status);
            std::thread::Builder::new()
                .name("status-reload".into())
                .spawn(move || {
                    let (code, body) = match status.request_reload(RELOAD_WAIT) {
                        Some(Ok(message)) => (200, message + "\n"),
                        Some(Err(message)) => (422, message + "\n"),
                        None => (503, "the reload did not finish in time\n".to_owned()),
                    };
                    let _ = write_response(&mut stream, "POST", code, TEXT, &body);
                })?;
            return Ok(());
        }
        ("POST", "/reload") => (
            403,
            TEXT,
            "reload is accepted from loopback only\n".to_owned(),
        ),
        ("GET" | "HEAD", _) => (404, TEXT, "not found\n".to_owned()),
        _ => (405, TEXT, "method not allowed\n".to_owned()),
    };
    write_response(&mut stream, method, code, content_type, &body)
}

const TEXT: &str = "text/plain; charset=utf-8";

fn write_response(
    stream: &mut TcpStream,
    method: &str,
    code: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Content",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response)
}
