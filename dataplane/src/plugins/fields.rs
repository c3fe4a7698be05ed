//! The fields a rule expression can read from an HTTP transaction, in Qtap's
//! names, resolved once at load ([`HttpFields`]) and read per transaction
//! without allocation ([`TxnFields`]).

use tapwire_rulekit::{Env, FieldRef, Schema, Value};

use crate::pipeline::event_fields::host_of;
use crate::pipeline::txn::{Protocol, Transaction};

/// Fields with a fixed name, in id order.
pub const FIELDS: &[&str] = &[
    "http.req.method",
    "http.req.path",
    "http.req.url",
    "http.req.host",
    "http.req.scheme",
    "http.res.status",
    "src.ip",
    "src.port",
    "dst.ip",
    "dst.port",
    "dst.domain",
    "src.process.path",
    "src.process.binary",
    "direction",
    "protocol",
    "tls.sni",
];

/// Fields whose last part is a header name: `http.req.headers.NAME` and
/// `http.res.headers.NAME`.
pub const HEADER_FIELDS: &[&str] = &["http.req.headers.", "http.res.headers."];

const REQ_HEADERS: u16 = 100;
const RES_HEADERS: u16 = 101;

/// The schema of HTTP transaction fields.
pub struct HttpFields;

impl Schema for HttpFields {
    fn resolve(&self, name: &str) -> Option<FieldRef> {
        for (id, prefix) in [
            (REQ_HEADERS, HEADER_FIELDS[0]),
            (RES_HEADERS, HEADER_FIELDS[1]),
        ] {
            if let Some(header) = name.strip_prefix(prefix) {
                return Some(FieldRef {
                    id,
                    arg: header.to_ascii_lowercase().into(),
                });
            }
        }
        let id = FIELDS.iter().position(|f| *f == name)?;
        Some(FieldRef {
            id: u16::try_from(id).ok()?,
            arg: "".into(),
        })
    }
}

/// One transaction as rules see it.
pub struct TxnFields<'a> {
    /// The transaction.
    pub txn: &'a Transaction,
    /// The process's executable, if known.
    pub exe: Option<&'a str>,
    /// The full URL (credential-like query values masked, as in events).
    pub url: &'a str,
}

/// The protocol name Qtap uses.
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http1 => "http1",
        Protocol::Http2 => "http2",
        Protocol::Grpc => "grpc",
    }
}

impl Env for TxnFields<'_> {
    fn get<'a>(&'a self, field: &'a FieldRef) -> Value<'a> {
        let t = self.txn;
        // Qtap's `src` is the connection's client, `dst` its server.
        let (src, dst) = if t.egress {
            (t.conn.local, t.conn.remote)
        } else {
            (t.conn.remote, t.conn.local)
        };
        let text = |s: Option<&'a str>| s.map_or(Value::Missing, Value::Str);
        match field.id {
            0 => Value::Str(&t.method),
            1 => Value::Str(t.path.split(['?', '#']).next().unwrap_or("")),
            2 => Value::Str(self.url),
            3 => text(t.authority.as_deref().map(host_of)),
            10 => text(t.domain()),
            4 => Value::Str(if t.tls { "https" } else { "http" }),
            5 => t
                .status
                .map_or(Value::Missing, |s| Value::Int(i64::from(s))),
            6 => Value::Ip(src.ip()),
            7 => Value::Int(i64::from(src.port())),
            8 => Value::Ip(dst.ip()),
            9 => Value::Int(i64::from(dst.port())),
            11 => text(self.exe),
            12 => text(self.exe.map(|e| e.rsplit('/').next().unwrap_or(e))),
            13 => Value::Str(crate::plan::direction_word(t.egress, t.conn.remote.ip())),
            14 => Value::Str(protocol_name(t.protocol)),
            15 => text(t.tls_sni.as_deref()),
            REQ_HEADERS => text(t.request.header(&field.arg)),
            RES_HEADERS => text(t.response.header(&field.arg)),
            _ => Value::Missing,
        }
    }
}
