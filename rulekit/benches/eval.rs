//! Rule evaluation, nanoseconds per evaluation: the rules `http_capture` runs
//! once per transaction, from a one-comparison rule to one with a regex, a
//! CIDR, a list and a macro.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapwire_rulekit::{Env, FieldRef, Macros, Schema, Value, compile};

const FIELDS: &[&str] = &[
    "http.req.method",
    "http.req.path",
    "http.res.status",
    "src.ip",
    "dst.domain",
];
const REQ_HEADERS: u16 = 100;

struct Fields;

impl Schema for Fields {
    fn resolve(&self, name: &str) -> Option<FieldRef> {
        if let Some(h) = name.strip_prefix("http.req.headers.") {
            return Some(FieldRef {
                id: REQ_HEADERS,
                arg: h.into(),
            });
        }
        let id = FIELDS.iter().position(|f| *f == name)?;
        Some(FieldRef {
            id: u16::try_from(id).ok()?,
            arg: "".into(),
        })
    }
}

/// A failing request, with a few headers to look through.
struct Txn {
    headers: Vec<(&'static str, &'static str)>,
}

impl Env for Txn {
    fn get<'a>(&'a self, f: &'a FieldRef) -> Value<'a> {
        match f.id {
            0 => Value::Str("POST"),
            1 => Value::Str("/v1/orders/42"),
            2 => Value::Int(503),
            3 => Value::Ip([10, 1, 2, 3].into()),
            4 => Value::Str("api.example.com"),
            REQ_HEADERS => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&f.arg))
                .map_or(Value::Missing, |(_, v)| Value::Str(v)),
            _ => Value::Missing,
        }
    }
}

fn eval(c: &mut Criterion) {
    let mut macros = Macros::default();
    macros
        .define("is_error", "http.res.status >= 400", &Fields)
        .expect("macro");
    let txn = Txn {
        headers: vec![
            ("host", "api.example.com"),
            ("user-agent", "curl/8.5.0"),
            ("accept", "*/*"),
            ("content-type", "application/json"),
            ("content-length", "1500"),
        ],
    };
    let rules = [
        ("status", "http.res.status >= 400", true),
        (
            "method_and_path",
            "http.req.method == \"POST\" and starts_with(http.req.path, \"/v1/\")",
            true,
        ),
        (
            "header",
            "http.req.headers.user-agent contains \"curl\"",
            true,
        ),
        (
            "regex_cidr_list_macro",
            "is_error() and src.ip in 10.0.0.0/8 \
             and http.req.path matches /^\\/v1\\/orders\\/[0-9]+$/ \
             and http.req.method in [\"PUT\", \"POST\", \"PATCH\"] \
             and in_zone(dst.domain, \"example.com\")",
            true,
        ),
    ];
    let mut group = c.benchmark_group("rule_eval");
    group.throughput(Throughput::Elements(1));
    for (name, expr, expected) in rules {
        let rule = compile(expr, &Fields, &macros).expect("rule compiles");
        group.bench_function(name, |b| {
            b.iter(|| {
                let matched = rule.matches(black_box(&txn));
                assert_eq!(matched, expected);
                matched
            });
        });
    }
    group.finish();
}

criterion_group!(benches, eval);
criterion_main!(benches);
