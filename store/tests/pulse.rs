//! The pulse store against a small loopback HTTP receiver.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapwire_store::config::{PulseConfig, Secret, SecretSource};
use tapwire_store::{EventStore as _, PulseStore};

const TOKEN: &str = "pulse-t0ken";

/// One request as received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A loopback HTTP/1.1 receiver that answers `fail_first` requests with 503, then
/// 200, recording every request.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").expect("bind"), fail_first)
    }

    fn start_on(listener: TcpListener, fail_first: usize) -> Self {
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (reqs, stop2) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (reqs, served) = (Arc::clone(&reqs), Arc::clone(&served));
                        std::thread::spawn(move || serve(conn, &reqs, &served, fail_first));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            port,
            requests,
            stop,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests").clone()
    }

    /// Events received in successful requests (those after the first `fail_first`).
    fn wait_for_events(&self, n: usize, fail_first: usize, timeout: Duration) -> Vec<String> {
        let until = Instant::now() + timeout;
        loop {
            let events: Vec<String> = self
                .requests()
                .iter()
                .skip(fail_first)
                .flat_map(|r| {
                    String::from_utf8(r.body.clone())
                        .expect("UTF-8 body")
                        .lines()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < until,
                "received {} of {n} events after {timeout:?}",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn serve(conn: TcpStream, reqs: &Mutex<Vec<Request>>, served: &AtomicUsize, fail_first: usize) {
    let mut writer = conn.try_clone().expect("clone");
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        reqs.lock().expect("requests").push(Request {
            method,
            path,
            headers,
            body,
        });
        let n = served.fetch_add(1, Ordering::AcqRel);
        let status = if n < fail_first {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        if write!(writer, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

fn config(endpoint: String, max_events: usize, max_delay_ms: u64) -> PulseConfig {
    PulseConfig {
        id: "pulse-test".to_owned(),
        endpoint,
        token: Some(Secret {
            source: SecretSource::Text,
            value: TOKEN.to_owned(),
        }),
        batch_max_events: max_events,
        batch_max_delay_ms: max_delay_ms,
        queue_capacity: 10_000,
        ca_file: None,
    }
}

fn event(i: usize) -> String {
    format!(r#"{{"kind":"request","seq":{i},"path":"/items/{i}"}}"#)
}

#[test]
fn batches_by_count_carry_the_bearer_token_and_ndjson() {
    let rx = Receiver::start(0);
    // A long delay: only the count closes a batch before shutdown.
    let store = PulseStore::start(&config(rx.endpoint(), 10, 60_000)).expect("start");
    for i in 0..35 {
        store.emit(Bytes::from(event(i)));
    }
    rx.wait_for_events(30, 0, Duration::from_secs(10));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3, "three full batches before shutdown");
    for (b, r) in reqs.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/events");
        assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert_eq!(r.headers["x-tapwire-events"], "10");
        let want: String = (b * 10..b * 10 + 10).map(|i| event(i) + "\n").collect();
        assert_eq!(String::from_utf8(r.body.clone()).expect("utf-8"), want);
    }
    // Shutdown delivers the partial batch.
    store.shutdown(Duration::from_secs(5));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 4);
    let want: String = (30..35).map(|i| event(i) + "\n").collect();
    assert_eq!(
        String::from_utf8(reqs[3].body.clone()).expect("utf-8"),
        want
    );
    let stats = store.stats();
    assert_eq!(
        (stats.accepted, stats.stored, stats.dropped),
        (35, 35, 0),
        "{stats:?}"
    );
}

#[test]
fn batches_by_time_go_out_without_filling() {
    let rx = Receiver::start(0);
    let store = PulseStore::start(&config(rx.endpoint(), 1000, 200)).expect("start");
    let t0 = Instant::now();
    for i in 0..3 {
        store.emit(Bytes::from(event(i)));
    }
    let events = rx.wait_for_events(3, 0, Duration::from_secs(5));
    let waited = t0.elapsed();
    assert_eq!(events, (0..3).map(event).collect::<Vec<_>>());
    assert!(
        waited >= Duration::from_millis(150),
        "sent before the delay: {waited:?}"
    );
    assert_eq!(rx.requests().len(), 1);
    store.shutdown(Duration::from_secs(1));
}

#[test]
fn a_batch_answered_503_is_sent_again() {
    let rx = Receiver::start(2);
    let store = PulseStore::start(&config(rx.endpoint(), 100, 50)).expect("start");
    for i in 0..5 {
        store.emit(Bytes::from(event(i)));
    }
    let events = rx.wait_for_events(5, 2, Duration::from_secs(10));
    assert_eq!(events, (0..5).map(event).collect::<Vec<_>>());
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3, "two refused tries and one delivery");
    assert!(
        reqs.iter().all(|r| r.body == reqs[2].body),
        "the same batch each time"
    );
    store.shutdown(Duration::from_secs(1));
    let stats = store.stats();
    assert_eq!(
        (stats.stored, stats.errors, stats.dropped),
        (5, 2, 0),
        "{stats:?}"
    );
}

#[test]
fn receiver_down_then_up_gets_every_event() {
    // Reserve a port, then free it: nothing listens while the events are emitted.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let store =
        PulseStore::start(&config(format!("http://127.0.0.1:{port}/"), 50, 100)).expect("start");
    for i in 0..200 {
        store.emit(Bytes::from(event(i)));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(store.stats().stored, 0);
    assert!(
        store.stats().errors > 0,
        "the sends failed while the receiver was down"
    );
    let rx = Receiver::start_on(TcpListener::bind(("127.0.0.1", port)).expect("rebind"), 0);
    let events = rx.wait_for_events(200, 0, Duration::from_secs(20));
    let mut seqs: Vec<String> = events;
    seqs.sort();
    seqs.dedup();
    let mut want: Vec<String> = (0..200).map(event).collect();
    want.sort();
    assert_eq!(seqs, want, "every event arrived (at least once)");
    store.shutdown(Duration::from_secs(1));
    let stats = store.stats();
    assert_eq!((stats.stored, stats.dropped), (200, 0), "{stats:?}");
}

#[test]
fn start_up_errors_name_the_store_and_the_problem() {
    let mut cfg = config("pulse-service:8000".to_owned(), 10, 100);
    let err = PulseStore::start(&cfg).expect_err("no scheme");
    assert_eq!(
        err.to_string(),
        "store `pulse-test`: endpoint `pulse-service:8000` is not an http:// or https:// URL"
    );

    cfg.endpoint = "http://127.0.0.1:9".to_owned();
    cfg.token = Some(Secret {
        source: SecretSource::Env,
        value: "TAPWIRE_TEST_PULSE_TOKEN_NEVER_SET".to_owned(),
    });
    let err = PulseStore::start(&cfg).expect_err("unset token variable");
    assert_eq!(err.to_string(), "store `pulse-test`: cannot read the token");
    let source = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert_eq!(
        source,
        "store `pulse-test`: environment variable `TAPWIRE_TEST_PULSE_TOKEN_NEVER_SET` for `token` is not set"
    );
}

/// A redirect is not followed: following it would turn the POST into a GET whose
/// `2xx` would count the batch as delivered.
#[test]
fn a_redirect_is_an_answer_not_a_delivery() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    log.lock().unwrap().push(line.trim_end().to_owned());
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/elsewhere\r\nContent-Length: 0\r\n\r\n"
                    );
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let store =
        PulseStore::start(&config(format!("http://127.0.0.1:{port}"), 100, 50)).expect("start");
    for i in 0..3 {
        store.emit(Bytes::from(event(i)));
    }
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().dropped < 3 {
        assert!(std::time::Instant::now() < until, "{:?}", store.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    store.shutdown(Duration::from_secs(1));
    let stats = store.stats();
    assert_eq!(
        (stats.stored, stats.dropped, stats.drops.refused),
        (0, 3, 3),
        "{stats:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["POST /events HTTP/1.1"],
        "the redirect was not followed"
    );
}
