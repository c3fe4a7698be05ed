//! The event writer: a transaction and a connection with arbitrary field values
//! (any strings, including control characters and non-ASCII; any numbers; any
//! addresses; any objects) are written as `http_transaction` and `connection`
//! events, which must be valid JSON that parses back to the same values, with
//! credential query parameters masked and auth tokens shown by at most their
//! last 4 characters.

#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tapwire_fuzz::access_url::AccessUrl;
use tapwire_fuzz::attribution::{Attribution, Origin};
use tapwire_fuzz::pipeline::event_fields::{
    CREDENTIAL_PARAMS, MASK, MaskedTarget, Url, direction_word,
};
use tapwire_fuzz::pipeline::input::{ConnInfo, Role};
use tapwire_fuzz::pipeline::txn::{
    ConnSummary, Message, ObjectRef, ObjectRole, Protocol, Transaction, open_event_json,
};

/// Header names the writer looks for, and anything else.
const NAMES: [&str; 8] = [
    "content-type",
    "user-agent",
    "authorization",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "Content-Type",
];

fn addr(u: &mut Unstructured<'_>) -> Result<SocketAddr> {
    let ip = if u.arbitrary()? {
        IpAddr::from(u.arbitrary::<[u8; 4]>()?)
    } else {
        IpAddr::from(u.arbitrary::<[u8; 16]>()?)
    };
    Ok(SocketAddr::new(ip, u.arbitrary()?))
}

fn message(u: &mut Unstructured<'_>) -> Result<Message> {
    let mut m = Message::default();
    for _ in 0..u.int_in_range(0..=6)? {
        let name: String = match u.int_in_range(0..=NAMES.len())? {
            i if i < NAMES.len() => NAMES[i].to_owned(),
            _ => u.arbitrary()?,
        };
        let value: String = u.arbitrary()?;
        m.headers.push(name.as_bytes(), value.as_bytes());
    }
    m.head_bytes = u.arbitrary()?;
    m.body_bytes = u.arbitrary()?;
    m.complete = u.arbitrary()?;
    Ok(m)
}

fn conn(u: &mut Unstructured<'_>) -> Result<ConnInfo> {
    Ok(ConnInfo {
        conn_id: u.arbitrary()?,
        pid: u.arbitrary()?,
        tid: u.arbitrary()?,
        comm: u.arbitrary::<String>()?.into(),
        cgroup_id: u.arbitrary()?,
        local: addr(u)?,
        remote: addr(u)?,
        role: *u.choose(&[Role::Client, Role::Server, Role::Unknown])?,
        ts_ns: u.arbitrary()?,
    })
}

fn transaction(u: &mut Unstructured<'_>) -> Result<Transaction> {
    Ok(Transaction {
        conn: conn(u)?,
        request_id: u.arbitrary()?,
        tid: u.arbitrary()?,
        stream_id: u.arbitrary()?,
        egress: u.arbitrary()?,
        protocol: *u.choose(&[Protocol::Http1, Protocol::Http2, Protocol::Grpc])?,
        tls: u.arbitrary()?,
        tls_sni: u.arbitrary::<Option<String>>()?.map(Into::into),
        method: u.arbitrary::<String>()?.into(),
        authority: u.arbitrary::<Option<String>>()?.map(Into::into),
        path: u.arbitrary::<String>()?.into(),
        status: u.arbitrary()?,
        grpc_status: u.arbitrary()?,
        request: message(u)?,
        response: message(u)?,
        start_ns: u.arbitrary()?,
        end_ns: u.arbitrary()?,
        truncated: u.arbitrary()?,
        gap: u.arbitrary()?,
        incomplete_headers: u.arbitrary()?,
    })
}

fn object(u: &mut Unstructured<'_>) -> Result<ObjectRef> {
    Ok(ObjectRef {
        role: *u.choose(&[
            ObjectRole::RequestHeaders,
            ObjectRole::RequestBody,
            ObjectRole::ResponseHeaders,
            ObjectRole::ResponseBody,
        ])?,
        digest: blake3::Hash::from_bytes(u.arbitrary()?),
        size: u.arbitrary()?,
        content_type: u.arbitrary::<String>()?.into(),
        // Any template text, `{{DIGEST}}`s or none: filled as the event is
        // written.
        url: u
            .arbitrary::<Option<String>>()?
            .map(|template| Arc::new(AccessUrl::new(&template, "https", "s3.test", "b"))),
        kept: u.arbitrary()?,
    })
}

fn attribution(u: &mut Unstructured<'_>) -> Result<Attribution> {
    Ok(Attribution {
        cgroup: u.arbitrary()?,
        container_id: u.arbitrary()?,
        container_runtime: u
            .choose(&[None, Some("docker"), Some("containerd")])
            .copied()?,
        pod_uid: u.arbitrary()?,
        pod_qos: u.choose(&[None, Some("burstable")]).copied()?,
    })
}

/// Parses `json` as one JSON object, with no key written twice (`serde_json`'s
/// map would keep only the last of duplicates).
fn parse(json: &[u8]) -> serde_json::Map<String, Value> {
    let text = std::str::from_utf8(json).expect("events are UTF-8");
    let Value::Object(map) = serde_json::from_str(text).expect("events are valid JSON") else {
        panic!("an event is a JSON object: {text}");
    };
    let keys: TopLevelKeys = serde_json::from_str(text).expect("events are valid JSON");
    assert_eq!(keys.0.len(), map.len(), "a key written twice: {text}");
    map
}

/// The top-level keys of a JSON object, in order, duplicates kept.
struct TopLevelKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = TopLevelKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<TopLevelKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(TopLevelKeys(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

fn opt_str(v: &Value, s: Option<&str>) {
    match s {
        Some(s) => assert_eq!(v.as_str(), Some(s)),
        None => assert!(v.is_null(), "{v}"),
    }
}

/// The connection and origin fields every event carries.
fn check_common(e: &serde_json::Map<String, Value>, c: &ConnInfo, origin: &Origin<'_>) {
    assert_eq!(e["conn_id"], c.conn_id);
    assert_eq!(e["pid"], c.pid);
    assert_eq!(e["comm"], &*c.comm);
    assert_eq!(e["cgroup_id"], c.cgroup_id);
    assert_eq!(e["local"], c.local.to_string());
    assert_eq!(e["remote"], c.remote.to_string());
    assert_eq!(e["host"], origin.host);
    for (key, value) in origin.place.fields() {
        assert_eq!(e.get(key).and_then(Value::as_str), value, "{key}");
    }
}

fn check_masked(path: &str) {
    let Some((_, rest)) = path.split_once('?') else {
        return;
    };
    let query = rest.split_once('#').map_or(rest, |(q, _)| q);
    for pair in query.split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && CREDENTIAL_PARAMS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(name))
        {
            assert_eq!(value, MASK, "credential `{name}` shown in {path}");
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let host: String = u.arbitrary()?;
    let place = attribution(u)?;
    let origin = Origin {
        host: &host,
        place: &place,
    };
    let txn = transaction(u)?;
    let exe: Option<String> = u.arbitrary()?;
    let objects: Vec<ObjectRef> = (0..u.int_in_range(0..=4)?)
        .map(|_| object(u))
        .collect::<Result<_>>()?;

    let e = parse(&txn.event_json(&objects, exe.as_deref(), &origin));
    check_common(&e, &txn.conn, &origin);
    assert_eq!(e["type"], "http_transaction");
    assert_eq!(e["tid"], txn.tid);
    assert_eq!(e["stream_id"], serde_json::json!(txn.stream_id));
    opt_str(&e["exe"], exe.as_deref());
    assert_eq!(
        e["direction"],
        direction_word(txn.egress, txn.conn.remote.ip())
    );
    assert_eq!(e["tls"], txn.tls);
    assert_eq!(e["method"], txn.method.as_str());
    opt_str(&e["authority"], txn.authority.as_deref());
    let path = MaskedTarget(&txn.path).to_string();
    assert_eq!(e["path"], path.as_str());
    check_masked(e["path"].as_str().expect("path is a string"));
    opt_str(&e["tls_sni"], txn.tls_sni.as_deref());
    let server = if txn.egress {
        txn.conn.remote
    } else {
        txn.conn.local
    };
    let url = Url {
        tls: txn.tls,
        authority: txn.authority.as_deref(),
        sni: txn.tls_sni.as_deref().map(|name| (name, server.port())),
        remote: txn.conn.remote,
        target: &txn.path,
    };
    assert_eq!(e["url"], url.to_string());
    assert_eq!(e["status"], serde_json::json!(txn.status));
    assert_eq!(e["grpc_status"], serde_json::json!(txn.grpc_status));
    opt_str(
        &e["request_content_type"],
        txn.request.header("content-type"),
    );
    opt_str(
        &e["response_content_type"],
        txn.response.header("content-type"),
    );
    opt_str(&e["user_agent"], txn.request.header("user-agent"));
    if let Some(mask) = e.get("auth_token_mask").and_then(Value::as_str) {
        let last = mask.strip_prefix("...").expect("a mask starts with `...`");
        assert!(last.chars().count() <= 4, "mask shows more than 4: {mask}");
    }
    assert_eq!(e["request_header_bytes"], txn.request.head_bytes);
    assert_eq!(e["response_header_bytes"], txn.response.head_bytes);
    assert_eq!(e["request_body_bytes"], txn.request.body_bytes);
    assert_eq!(e["response_body_bytes"], txn.response.body_bytes);
    assert_eq!(e["start_ns"], txn.start_ns);
    assert_eq!(e["end_ns"], txn.end_ns);
    assert_eq!(
        e["duration_ms"].as_f64(),
        Some(txn.end_ns.saturating_sub(txn.start_ns) as f64 / 1e6)
    );
    assert_eq!(e["truncated"], txn.truncated);
    assert_eq!(e["gap"], txn.gap);
    assert_eq!(e["incomplete_headers"], txn.incomplete_headers);
    let timestamp = e["timestamp"].as_str().expect("timestamp is a string");
    assert!(
        timestamp.len() >= 27 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{timestamp}"
    );
    let written = e["objects"].as_array().expect("objects is an array");
    assert_eq!(written.len(), objects.len());
    for (w, o) in written.iter().zip(&objects) {
        assert_eq!(w["digest"], o.digest.to_hex().as_str());
        assert_eq!(w["size"], o.size);
        assert_eq!(w["content_type"], &*o.content_type);
        opt_str(&w["url"], o.url_text().as_deref());
        assert_eq!(w["kept"], o.kept);
    }

    let c = conn(u)?;
    let open = parse(&open_event_json(&c, &origin));
    check_common(&open, &c, &origin);
    assert_eq!(
        (&open["type"], &open["event"]),
        (&"connection".into(), &"open".into())
    );
    let summary = ConnSummary {
        conn: c,
        tls: u.arbitrary()?,
        tls_sni: u.arbitrary::<Option<String>>()?.map(Into::into),
        bytes_sent: u.arbitrary()?,
        bytes_received: u.arbitrary()?,
        close_ns: u.arbitrary()?,
    };
    let close = parse(&summary.event_json(&origin));
    check_common(&close, &summary.conn, &origin);
    assert_eq!(close["event"], "close");
    assert_eq!(close["tls"], summary.tls);
    opt_str(&close["tls_sni"], summary.tls_sni.as_deref());
    assert_eq!(close["bytes_sent"], summary.bytes_sent);
    assert_eq!(close["bytes_received"], summary.bytes_received);
    assert_eq!(
        close["duration_ms"].as_f64(),
        Some(summary.close_ns.saturating_sub(summary.conn.ts_ns) as f64 / 1e6)
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
