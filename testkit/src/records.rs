//! Queries over the agent's JSON lines (records and events).

use base64::Engine as _;
use serde_json::Value;

/// Data lines of one connection and direction, in sequence order, payloads
/// concatenated.
pub fn stream(lines: &[Value], conn: u64, direction: &str) -> Vec<u8> {
    let mut recs: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "data" && v["conn"] == conn && v["direction"] == direction)
        .collect();
    recs.sort_by_key(|v| v["seq"].as_u64().unwrap());
    let mut out = Vec::new();
    for r in recs {
        out.extend(payload(r));
    }
    out
}

pub fn payload(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v["payload"].as_str().expect("payload"))
        .expect("base64")
}

/// Open lines of processes `pids`.
pub fn opens_of(lines: &[Value], pids: &[u32]) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "open" && pids.iter().any(|p| v["pid"] == *p))
        .cloned()
        .collect()
}

/// The last drops line.
pub fn last_drops(lines: &[Value]) -> Value {
    lines
        .iter()
        .rev()
        .find(|v| v["type"] == "drops")
        .cloned()
        .expect("a drops line")
}

/// The connection (open line) of `pid` whose remote port is `port`.
pub fn conn_of(lines: &[Value], pid: u32, remote_port: u16) -> Option<Value> {
    lines
        .iter()
        .find(|v| {
            v["type"] == "open"
                && v["pid"] == pid
                && v["remote"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&format!(":{remote_port}")))
        })
        .cloned()
}

/// The connection (open line) of `pid` whose local port is `port`.
pub fn conn_at(lines: &[Value], pid: u32, local_port: u16) -> Option<Value> {
    lines
        .iter()
        .find(|v| {
            v["type"] == "open"
                && v["pid"] == pid
                && v["local"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&format!(":{local_port}")))
        })
        .cloned()
}

/// All data lines of a connection.
pub fn data_of(lines: &[Value], conn: u64) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "data" && v["conn"] == conn)
        .cloned()
        .collect()
}

/// Port of an `ip:port` / `[ip]:port` string.
pub fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .and_then(|s| s.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// The data plane's object lines by digest, bytes decoded (each checked
/// against its size and digest).
pub fn objects(lines: &[Value]) -> std::collections::HashMap<String, Vec<u8>> {
    lines
        .iter()
        .filter(|v| v["type"] == "object")
        .map(|v| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v["bytes"].as_str().unwrap())
                .unwrap();
            assert_eq!(v["size"].as_u64().unwrap() as usize, bytes.len());
            assert_eq!(
                v["digest"].as_str().unwrap(),
                blake3::hash(&bytes).to_hex().as_str()
            );
            (v["digest"].as_str().unwrap().to_owned(), bytes)
        })
        .collect()
}

/// The bytes of `txn`'s object with `role`, which must have been printed.
pub fn object_of<'a>(
    objects: &'a std::collections::HashMap<String, Vec<u8>>,
    txn: &Value,
    role: &str,
) -> &'a [u8] {
    let entry = txn["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == role)
        .unwrap_or_else(|| panic!("no {role} object in {txn}"));
    let digest = entry["digest"].as_str().unwrap();
    objects
        .get(digest)
        .unwrap_or_else(|| panic!("object {digest} not printed"))
}

/// The data plane's transaction events of `pid`.
pub fn transactions_of(lines: &[Value], pid: u32) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "http_transaction" && v["pid"] == pid)
        .cloned()
        .collect()
}

/// The value of header `name` (ASCII case-insensitive; repeats joined with
/// `, `) in `txn`'s header object `role` (`request_headers` or
/// `response_headers`): an HTTP/1 head after its start line, or HTTP/2
/// `name: value` lines.
pub fn header_of(
    objects: &std::collections::HashMap<String, Vec<u8>>,
    txn: &Value,
    role: &str,
    name: &str,
) -> Option<String> {
    let head = String::from_utf8_lossy(object_of(objects, txn, role)).into_owned();
    let values: Vec<&str> = head
        .split("\r\n")
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}
