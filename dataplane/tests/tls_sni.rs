//! The TLS server name (SNI), read from the ClientHello on the socket, with
//! real clients and a real server on loopback: `curl` (OpenSSL) with
//! `--resolve` (HTTP/1.1, and HTTP/2 to a Go server), and python `ssl` with
//! `server_hostname` sending an HTTP/1.0 request without `Host`; the server
//! is python's `http.server` over `ssl` (OpenSSL, which reads the record
//! header alone first). The raw records show the same for NSS, GnuTLS and
//! Go clients.
//!
//! Shown: a `tap.endpoints` entry for the server name switches the stack for
//! that name only, also when `Host` says something else or is absent; the
//! event's `tls_sni` and `url`; the rule fields `tls.sni` and `dst.domain`;
//! the server's side (its process selected too) sees the same name; and, in
//! the raw records, that only the ClientHello is copied of the socket bytes.
//!
//! Capture is limited to this test's process tree (`--pid`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// What the python server answers to a GET (`testkit/py/servers.py`).
const BODY: &[u8] = b"hello from tls server\n";

/// Events only by default; the endpoint `sni.test` stores a summary object
/// per transaction; by default a rule on `tls.sni` and `dst.domain` stores one
/// for `rule.test`.
const CONFIG: &str = r#"version: 2
services:
  event_stores: [{id: out, type: stdout}]
  object_stores: [{id: out, type: stdout}]
stacks:
  usage:
    plugins:
      - type: report_usage
      - type: http_capture
        config:
          level: none
          rules:
            - name: by server name
              expr: tls.sni == "rule.test" and dst.domain == "rule.test"
              level: summary
  named:
    plugins:
      - type: report_usage
      - type: http_capture
        config: {level: summary, format: json}
tap:
  http: {stack: usage}
  endpoints:
    - domain: SNI.test
      http: {stack: named}
"#;

/// `curl -k` GET of `https://NAME:PORT/PATH` over HTTP/1.1, NAME resolved
/// to loopback (so it is the server name), with `Host: HOST` if given, from
/// the python server.
fn curl(name: &str, port: u16, path: &str, host: Option<&str>) {
    let out = curl_with("--http1.1", name, port, path, host);
    assert_eq!(out, BODY, "curl {name}{path}");
}

/// As [`curl`], with HTTP version flag `http` (`Host` becomes `:authority`
/// in HTTP/2); returns the body.
fn curl_with(http: &str, name: &str, port: u16, path: &str, host: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--noproxy", "*", "--max-time", "10", http])
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .arg(format!("https://{name}:{port}{path}"));
    if let Some(host) = host {
        cmd.args(["-H", &format!("Host: {host}")]);
    }
    run_ok(cmd, Duration::from_secs(15))
}

/// Lines of the agent saying a newly seen executable's TLS probes are live.
fn execs_probed(agent: &Agent) -> usize {
    let stderr = agent.stderr.lock().unwrap();
    stderr
        .iter()
        .filter(|l| l.contains("tls probes live in a newly seen file") && l.contains("exec"))
        .count()
}

/// Starts the Go server (`testkit/go/gotls`) and waits until the agent has
/// probed its file (seen at its exec): the Go clients, the same file, are
/// then covered from their first instruction.
fn go_server_probed(agent: &Agent, port: u16, certs: &Certs) -> Bg {
    let before = execs_probed(agent);
    let server = go_https_server(port, certs);
    let start = std::time::Instant::now();
    while execs_probed(agent) == before {
        assert!(start.elapsed() < Duration::from_secs(30), "Go probes live");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// python `ssl` with `server_hostname=NAME` sending `GET PATH HTTP/1.0` and
/// no header at all; returns the response.
fn python_no_host(name: &str, port: u16, path: &str) -> Vec<u8> {
    let script = r#"
import socket, ssl, sys
name, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=name) as s:
    s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    out = b""
    while chunk := s.recv(65536):
        out += chunk
sys.stdout.buffer.write(out)
"#;
    let mut cmd = Command::new(python());
    cmd.args(["-c", script, name, &port.to_string(), path]);
    run_ok(cmd, Duration::from_secs(15))
}

/// The event of `path` seen from the client (`egress-*`) or the server
/// (`ingress`).
fn event<'a>(lines: &'a [Value], path: &str, server: bool) -> &'a Value {
    lines
        .iter()
        .find(|v| {
            v["type"] == "http_transaction"
                && v["path"] == path
                && (v["direction"] == "ingress") == server
        })
        .unwrap_or_else(|| panic!("no event for {path} (server side: {server})"))
}

/// The ends whose events are checked: both (the Go server, which sends its
/// SETTINGS before it reads the client's preface, included).
const SIDES: [bool; 2] = [false, true];

/// The roles of the objects an event names.
fn object_roles(event: &Value) -> Vec<&str> {
    event["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["role"].as_str().expect("role"))
        .collect()
}

#[test]
fn server_name_picks_the_endpoint_stack_on_both_ends() {
    if !can_run("server_name_picks_the_endpoint_stack_on_both_ends") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("qpoint.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    // Built before the agent starts: the build's own programs are not
    // probed while it runs.
    go_peers();
    let agent = Agent::capturing_this_test(&config);
    // Started after the agent: its `accept`s are seen, so its connections
    // are known as the server side.
    let certs = certs();
    let [port, go_port] = free_ports();
    let server = https_server(port, &certs);
    let server_pid = server.pid();
    let go_server = go_server_probed(&agent, go_port, &certs);
    let go_pid = go_server.pid();

    // HTTP/2 to the Go server: `:authority` is not the server name.
    let h2 = curl_with("--http2", "sni.test", go_port, "/h2", Some("other.test"));
    assert_eq!(h2, GO_BODY);
    curl("sni.test", port, "/named", Some("other.test"));
    curl(
        "other.test",
        port,
        "/host-says-sni",
        Some(&format!("sni.test:{port}")),
    );
    curl("rule.test", port, "/rule", None);
    curl("127.0.0.1", port, "/by-address", None);
    let response = python_no_host("sni.test", port, "/no-host");
    assert!(
        response.starts_with(b"HTTP/1.") && response.ends_with(BODY),
        "{}",
        String::from_utf8_lossy(&response)
    );
    for path in [
        "/h2",
        "/named",
        "/host-says-sni",
        "/rule",
        "/by-address",
        "/no-host",
    ] {
        for server in SIDES {
            agent.wait_for(path, Duration::from_secs(10), |v| {
                v["type"] == "http_transaction"
                    && v["path"] == path
                    && (v["direction"] == "ingress") == server
            });
        }
    }
    // Both ends of the six connections closed.
    wait_count(&agent, "TLS connections closed", 12, |v| {
        v["type"] == "connection" && v["event"] == "close" && v["tls"] == true
    });
    let stderr = agent.stderr.clone();
    let lines = agent.stop_with(libc::SIGINT);
    let counters = Agent::stopped_counters(&stderr.lock().unwrap());
    drop((server, go_server));

    let summary = vec!["http_transaction"];
    let none: Vec<&str> = Vec::new();
    // (path, tls_sni, authority, url, objects): the same from both ends.
    let expected = [
        // The server name decides over `:authority`, and over `Host`.
        (
            "/h2",
            Value::from("sni.test"),
            Value::from("other.test"),
            "https://other.test/h2".to_owned(),
            &summary,
        ),
        (
            "/named",
            Value::from("sni.test"),
            Value::from("other.test"),
            "https://other.test/named".to_owned(),
            &summary,
        ),
        (
            "/host-says-sni",
            Value::from("other.test"),
            Value::from(format!("sni.test:{port}")),
            format!("https://sni.test:{port}/host-says-sni"),
            &none,
        ),
        (
            "/rule",
            Value::from("rule.test"),
            Value::from(format!("rule.test:{port}")),
            format!("https://rule.test:{port}/rule"),
            &summary,
        ),
        // curl sends no server name for an address.
        (
            "/by-address",
            Value::Null,
            Value::from(format!("127.0.0.1:{port}")),
            format!("https://127.0.0.1:{port}/by-address"),
            &none,
        ),
        // No `Host`: the URL takes the server name and the server's port.
        (
            "/no-host",
            Value::from("sni.test"),
            Value::Null,
            format!("https://sni.test:{port}/no-host"),
            &summary,
        ),
    ];
    for (path, sni, authority, url, roles) in &expected {
        for server in SIDES {
            let e = event(&lines, path, server);
            let side = if server { "server" } else { "client" };
            assert_eq!(e["tls"], true, "{side} {e}");
            assert_eq!(&e["tls_sni"], sni, "{side} {e}");
            assert_eq!(&e["authority"], authority, "{side} {e}");
            assert_eq!(e["url"], url.as_str(), "{side} {e}");
            assert_eq!(object_roles(e), **roles, "{side} {e}");
            if server {
                let pid = if *path == "/h2" { go_pid } else { server_pid };
                assert_eq!(e["pid"], pid, "{e}");
            }
            let protocol = if *path == "/h2" { "http2" } else { "http1" };
            assert_eq!(e["protocol"], protocol, "{side} {e}");
            // The connection's close event names it too.
            let close = lines
                .iter()
                .find(|v| {
                    v["type"] == "connection"
                        && v["event"] == "close"
                        && v["conn_id"] == e["conn_id"]
                })
                .unwrap_or_else(|| panic!("no close event for {e}"));
            assert_eq!(&close["tls_sni"], sni, "{close}");
        }
    }
    // The Go server's end of the HTTP/2 connection knows the name too.
    let go_close = lines
        .iter()
        .find(|v| {
            v["type"] == "connection"
                && v["event"] == "close"
                && v["pid"] == go_pid
                && v["tls"] == true
        })
        .expect("the Go server's close event");
    assert_eq!(go_close["tls_sni"], "sni.test", "{go_close}");
    // The `http_transaction` object names the endpoint by the server name.
    let stored = objects(&lines);
    let named = event(&lines, "/named", false);
    let object = object_of(&stored, named, "http_transaction");
    let object: Value = serde_json::from_slice(object).expect("json object");
    assert_eq!(object["metadata"]["endpoint_id"], "sni.test", "{object}");
    assert_eq!(
        object["request"]["url"], "https://other.test/named",
        "{object}"
    );

    // Twelve TLS connections (six clients, six server ends): ten named,
    // the two ends of the request by address not. One copy per connection,
    // two for the python server's (header, then message).
    let shards = &counters["shards"];
    assert_eq!(shards["tls_server_names"], 10, "{shards}");
    assert_eq!(shards["tls_hello_unnamed"], 2, "{shards}");
    assert_eq!(shards["tls_hello_records"], 12 + 5, "{shards}");
    let bytes = shards["tls_hello_bytes"].as_u64().expect("bytes");
    assert!((12 * 200..=12 * 2048).contains(&bytes), "{shards}");
}

/// Waits until `n` lines satisfy `pred`; panics after 10 s.
fn wait_count(agent: &Agent, what: &str, n: usize, pred: impl Fn(&Value) -> bool) {
    let start = std::time::Instant::now();
    while agent.lines().iter().filter(|v| pred(v)).count() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{n} of {what}: {:?}",
            agent.lines().iter().filter(|v| pred(v)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The open lines of the connections to `port` that carried data: the
/// clients' ends, and the server's (`server_pid`). The connection made to
/// see the server listen carried none.
fn exchanges(lines: &[Value], server_pid: u32, port: u16) -> (Vec<Value>, Vec<Value>) {
    let carried = |open: &&Value| {
        lines
            .iter()
            .any(|v| v["type"] == "data" && v["conn"] == open["conn"])
    };
    let opens = |server: bool| -> Vec<Value> {
        lines
            .iter()
            .filter(|v| {
                v["type"] == "open"
                    && (v["pid"] == server_pid) == server
                    && port_of(&v[if server { "local" } else { "remote" }]) == port
            })
            .filter(carried)
            .cloned()
            .collect()
    };
    (opens(false), opens(true))
}

/// The ClientHello copied of connection `open`: its `hello` lines' lengths
/// and bytes joined.
fn hello_of(lines: &[Value], open: &Value) -> (Vec<usize>, Vec<u8>) {
    let hello: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "hello" && v["conn"] == open["conn"])
        .collect();
    let pieces = hello
        .iter()
        .map(|v| v["len"].as_u64().expect("len") as usize)
        .collect();
    (pieces, hello.iter().flat_map(|v| payload(v)).collect())
}

/// `program args…` with `/etc/hosts` naming `sni.test` 127.0.0.1, in a
/// mount namespace of its own (for clients that resolve the name
/// themselves); stdin from `input`.
fn with_hosts(dir: &Path, input: &[u8], program: &str, args: &[&str]) -> Vec<u8> {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost sni.test\n").unwrap();
    let stdin = dir.join("stdin");
    std::fs::write(&stdin, input).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$@""#,
    ])
    .arg(&hosts)
    .arg(program)
    .args(args)
    .stdin(std::fs::File::open(&stdin).expect("open stdin"));
    run_ok(cmd, Duration::from_secs(30))
}

/// What the Go server answers (`testkit/go/gotls/main.go`).
const GO_BODY: &[u8] = b"hello from go server\n";

/// TLS record header length.
const RECORD_HEADER: usize = 5;

/// The raw records: every library's client — OpenSSL (`curl`, python),
/// NSS (`tstclnt -a`), GnuTLS (`wget`), Go `crypto/tls` — sends its server
/// name in a ClientHello the probes copy from the socket, and so do the
/// servers' ends, python (OpenSSL, reading the record header alone first)
/// and Go: the copy is the ClientHello record, whole and alone, and every
/// other record of those connections is TLS plaintext.
#[test]
fn only_the_client_hello_is_copied_for_every_library() {
    if !can_run("only_the_client_hello_is_copied_for_every_library") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let go = go_peers();
    let agent = Agent::start(&["--pid".into(), std::process::id().to_string()], &[]);
    let certs = certs();
    let [py_port, go_port] = free_ports();
    let py_server = https_server(py_port, &certs);
    let go_server = go_server_probed(&agent, go_port, &certs);
    let (py_pid, go_pid) = (py_server.pid(), go_server.pid());

    curl("sni.test", py_port, "/curl", None);
    let response = python_no_host("sni.test", py_port, "/python");
    assert!(response.ends_with(BODY));
    let request =
        format!("GET /nss HTTP/1.1\r\nHost: sni.test:{go_port}\r\nConnection: close\r\n\r\n");
    let port = go_port.to_string();
    let tstclnt = ["-h", "127.0.0.1", "-p", &port, "-a", "sni.test", "-D", "-o"];
    let out = with_hosts(dir.path(), request.as_bytes(), "tstclnt", &tstclnt);
    assert!(out.ends_with(GO_BODY), "{}", String::from_utf8_lossy(&out));
    let url = format!("https://sni.test:{go_port}/");
    let wget = [
        "-q",
        "-O",
        "-",
        "--no-config",
        "--no-hsts",
        "--no-check-certificate",
        &url,
    ];
    assert_eq!(with_hosts(dir.path(), b"", "wget", &wget), GO_BODY);
    let out = with_hosts(
        dir.path(),
        b"go\n",
        path_str(&go.full),
        &["client", &url, "h1"],
    );
    assert_eq!(out, [b"HTTP/1.1 ".as_slice(), GO_BODY].concat());
    // Two copies per python connection (header, message), one per Go one.
    wait_count(&agent, "the servers' hellos", 2 * 2 + 3, |v| {
        v["type"] == "hello" && (v["pid"] == py_pid || v["pid"] == go_pid)
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines = agent.stop_with(libc::SIGINT);
    drop((py_server, go_server));

    let (py_clients, py_servers) = exchanges(&lines, py_pid, py_port);
    let (go_clients, go_servers) = exchanges(&lines, go_pid, go_port);
    let comms = |opens: &[Value]| -> Vec<String> {
        opens
            .iter()
            .map(|o| o["comm"].as_str().unwrap().to_owned())
            .collect()
    };
    // The python client's comm is its interpreter's versioned name.
    let py = comms(&py_clients);
    assert!(
        py.len() == 2 && py[0] == "curl" && py[1].starts_with("python"),
        "{py:?}"
    );
    assert_eq!(comms(&go_clients), ["tstclnt", "wget", "gotls"]);
    assert_eq!((py_servers.len(), go_servers.len()), (2, 3));
    for (open, split) in py_clients
        .iter()
        .chain(&go_clients)
        .chain(&go_servers)
        .map(|o| (o, false))
        .chain(py_servers.iter().map(|o| (o, true)))
    {
        let (pieces, bytes) = hello_of(&lines, open);
        // The whole ClientHello record (up to the copy's limit), nothing
        // after it.
        assert!(bytes.len() > RECORD_HEADER + 4, "{open}: {pieces:?}");
        assert_eq!(&bytes[..2], &[22, 3], "{open}");
        assert_eq!(bytes[RECORD_HEADER], 1, "a ClientHello: {open}");
        let record_len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        let whole = (RECORD_HEADER + record_len).min(tapwire_common::MAX_HELLO);
        let expected = if split {
            vec![RECORD_HEADER, whole - RECORD_HEADER]
        } else {
            vec![whole]
        };
        assert_eq!(pieces, expected, "{open}");
        assert_eq!(
            tapwire_http::tls_hello::server_name(&bytes),
            Ok("sni.test"),
            "{open}"
        );
        let data = data_of(&lines, open["conn"].as_u64().expect("conn"));
        assert!(!data.is_empty(), "{open}");
        for d in data {
            assert_eq!(d["source"], "tls", "ciphertext copied: {d}");
        }
    }
}
