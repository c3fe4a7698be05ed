//! A fault-injecting HTTP/1.1 proxy in front of a test server: it forwards each
//! request as it is (so signatures made for the proxy's address still verify
//! upstream), or, on demand, answers `403 AccessDenied` itself, or swallows
//! requests and never answers (a blackholed endpoint).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward to the upstream server.
    None = 0,
    /// Answer `403 Forbidden` with S3's `AccessDenied` error body.
    Forbidden = 1,
    /// Read the request and never answer.
    Blackhole = 2,
}

/// The running proxy; stops accepting when dropped.
pub struct FaultProxy {
    addr: String,
    fault: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// Requests answered with a fault (403 or silence).
    pub faulted: Arc<AtomicU64>,
    /// Every request head seen, in order (method line and headers).
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let faulted = Arc::new(AtomicU64::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_owned();
        let (f, s, n, h) = (
            Arc::clone(&fault),
            Arc::clone(&stop),
            Arc::clone(&faulted),
            Arc::clone(&heads),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let seen = Seen {
                            fault: Arc::clone(&f),
                            stop: Arc::clone(&s),
                            faulted: Arc::clone(&n),
                            heads: Arc::clone(&h),
                        };
                        let up = upstream.clone();
                        std::thread::spawn(move || serve(client, &up, &seen));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr,
            fault,
            stop,
            faulted,
            heads,
        }
    }

    /// `127.0.0.1:PORT`, to use as the store's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.addr
    }

    /// Sets what happens to the next requests.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::Relaxed);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A message head (with the final blank line) and its `Content-Length`.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, Option<usize>)> {
    let mut head = Vec::new();
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse().ok()?);
        }
        head.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            return Some((head, length));
        }
    }
}

/// One request: its head and body.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, Vec<u8>)> {
    let (head, length) = read_head(reader)?;
    let mut body = vec![0u8; length.unwrap_or(0)];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// Reads one response (head and a `Content-Length` body, or up to close).
fn read_response(upstream: TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(upstream);
    let (mut out, length) = read_head(&mut reader)?;
    match length {
        Some(n) => {
            let mut body = vec![0u8; n];
            reader.read_exact(&mut body).ok()?;
            out.extend_from_slice(&body);
        }
        None => {
            reader.read_to_end(&mut out).ok()?;
        }
    }
    Some(out)
}

/// What a connection's thread shares with the proxy.
struct Seen {
    fault: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    faulted: Arc<AtomicU64>,
    heads: Arc<Mutex<Vec<String>>>,
}

fn serve(client: TcpStream, upstream: &str, seen: &Seen) {
    let (fault, stop, faulted) = (&*seen.fault, &*seen.stop, &*seen.faulted);
    let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = client.try_clone().expect("clone client stream");
    let mut reader = BufReader::new(client);
    while !stop.load(Ordering::Relaxed) {
        let Some((head, body)) = read_request(&mut reader) else {
            if reader.get_ref().peek(&mut [0u8; 1]).ok() == Some(0) {
                return;
            }
            continue;
        };
        if let Ok(mut heads) = seen.heads.lock() {
            heads.push(String::from_utf8_lossy(&head).into_owned());
        }
        match fault.load(Ordering::Relaxed) {
            1 => {
                faulted.fetch_add(1, Ordering::Relaxed);
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
                let answer = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
            2 => {
                faulted.fetch_add(1, Ordering::Relaxed);
                // Never answer; keep the connection open until the client gives
                // up or the fault ends (then close it, as a recovering network
                // would reset it).
                while !stop.load(Ordering::Relaxed) && fault.load(Ordering::Relaxed) == 2 {
                    let mut sink = [0u8; 4096];
                    match reader.read(&mut sink) {
                        Ok(0) => return,
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
                return;
            }
            _ => {
                let Ok(mut up) = TcpStream::connect(upstream) else {
                    return;
                };
                // One upstream connection per request (`Connection` is not a
                // signed header).
                let mut head = head;
                head.truncate(head.len() - 2);
                head.extend_from_slice(b"Connection: close\r\n\r\n");
                if up
                    .write_all(&head)
                    .and_then(|()| up.write_all(&body))
                    .is_err()
                {
                    return;
                }
                let Some(answer) = read_response(up) else {
                    return;
                };
                if writer.write_all(&answer).is_err() {
                    return;
                }
            }
        }
    }
}
