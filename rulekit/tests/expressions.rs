//! The rule language as a table: expressions with their results over one
//! transaction, and broken expressions with their columns and messages.

use std::net::IpAddr;

use tapwire_rulekit::{Env, Error, FieldRef, Macros, Schema, Value, compile};

/// Field ids of the test schema.
const FIELDS: &[&str] = &[
    "http.req.method",
    "http.req.path",
    "http.req.host",
    "http.req.url",
    "http.res.status",
    "src.ip",
    "dst.ip",
    "dst.port",
    "dst.domain",
    "tls",
    "duration",
];
const REQ_HEADERS: u16 = 100;
const RES_HEADERS: u16 = 101;

struct TestSchema;

impl Schema for TestSchema {
    fn resolve(&self, name: &str) -> Option<FieldRef> {
        if let Some(h) = name.strip_prefix("http.req.headers.") {
            return Some(FieldRef {
                id: REQ_HEADERS,
                arg: h.to_ascii_lowercase().into(),
            });
        }
        if let Some(h) = name.strip_prefix("http.res.headers.") {
            return Some(FieldRef {
                id: RES_HEADERS,
                arg: h.to_ascii_lowercase().into(),
            });
        }
        let id = FIELDS.iter().position(|f| *f == name)?;
        Some(FieldRef {
            id: id as u16,
            arg: "".into(),
        })
    }
}

/// A failing POST from a client on 10.1.2.3 to api.example.com.
struct Txn {
    status: Option<i64>,
}

impl Env for Txn {
    fn get<'a>(&'a self, f: &'a FieldRef) -> Value<'a> {
        let ip = |s: &str| Value::Ip(s.parse::<IpAddr>().unwrap());
        match (f.id, &*f.arg) {
            (0, _) => Value::Str("POST"),
            (1, _) => Value::Str("/v1/orders/42"),
            (2, _) => Value::Str("api.example.com"),
            (3, _) => Value::Str("https://api.example.com/v1/orders/42?x=1"),
            (4, _) => self.status.map_or(Value::Missing, Value::Int),
            (5, _) => ip("10.1.2.3"),
            (6, _) => ip("::ffff:203.0.113.7"),
            (7, _) => Value::Int(443),
            (8, _) => Value::Str("api.example.com"),
            (9, _) => Value::Bool(true),
            (10, _) => Value::Float(12.5),
            (REQ_HEADERS, "user-agent") => Value::Str("curl/8.5.0"),
            (REQ_HEADERS, "content-length") => Value::Str("1500"),
            (RES_HEADERS, "content-type") => Value::Str("application/json"),
            _ => Value::Missing,
        }
    }
}

fn macros() -> Macros {
    let mut m = Macros::default();
    m.define(
        "is_4xx",
        "http.res.status >= 400 && http.res.status < 500",
        &TestSchema,
    )
    .unwrap();
    m.define(
        "is_error",
        "is_4xx() or http.res.status >= 500",
        &TestSchema,
    )
    .unwrap();
    m.define("internal_client", "src.ip in 10.0.0.0/8", &TestSchema)
        .unwrap();
    m
}

#[test]
fn expressions_evaluate_as_qtap_defines_them() {
    let macros = macros();
    let failing = Txn { status: Some(503) };
    let pending = Txn { status: None };
    // (expression, result for `failing`, three-valued result for `pending`)
    let table: &[(&str, bool, Option<bool>)] = &[
        ("http.res.status >= 400", true, None),
        (
            "http.res.status ge 500 and http.res.status lt 600",
            true,
            None,
        ),
        ("http.res.status == 503", true, None),
        ("http.res.status eq 200", false, None),
        ("http.res.status != 200", true, None),
        (
            "http.res.status > 503 || http.res.status < 503",
            false,
            None,
        ),
        (
            "http.res.status <= 503 && http.res.status gt 502",
            true,
            None,
        ),
        ("http.req.method == \"POST\"", true, Some(true)),
        ("http.req.method == 'GET'", false, Some(false)),
        ("http.req.method ne \"GET\"", true, Some(true)),
        ("http.req.method in [\"GET\", \"POST\"]", true, Some(true)),
        ("http.req.method in []", false, Some(false)),
        ("http.res.status in [500, 502, 503]", true, None),
        ("http.req.path contains \"/orders/\"", true, Some(true)),
        (
            "http.req.path matches /^\\/v1\\/orders\\/[0-9]+$/",
            true,
            Some(true),
        ),
        ("http.req.url =~ /x=1$/", true, Some(true)),
        ("http.res.status matches /^5/", true, None),
        ("starts_with(http.req.path, \"/v1\")", true, Some(true)),
        ("ends_with(http.req.path, \"/42\")", true, Some(true)),
        (
            "not starts_with(http.req.path, \"/health\")",
            true,
            Some(true),
        ),
        ("!(http.req.method == \"POST\")", false, Some(false)),
        ("src.ip in 10.0.0.0/8", true, Some(true)),
        ("src.ip in 192.168.0.0/16", false, Some(false)),
        ("src.ip == 10.1.2.3", true, Some(true)),
        ("src.ip == \"10.1.2.3\"", true, Some(true)),
        ("dst.ip == 203.0.113.7", true, Some(true)),
        ("dst.ip in 203.0.113.0/24", true, Some(true)),
        ("dst.ip in ::ffff:0:0/96", true, Some(true)),
        ("dst.port == 443 and tls", true, Some(true)),
        ("tls == true", true, Some(true)),
        ("duration > 12", true, Some(true)),
        ("duration < 12.5", false, Some(false)),
        ("in_zone(dst.domain, \"example.com\")", true, Some(true)),
        ("in_zone(dst.domain, \"ample.com\")", false, Some(false)),
        ("zone(dst.domain) == \"example.com\"", true, Some(true)),
        (
            "http.req.headers.user-agent contains \"curl\"",
            true,
            Some(true),
        ),
        (
            "http.req.headers.User-Agent matches /^curl\\//",
            true,
            Some(true),
        ),
        ("http.req.headers.content-length > 1000", true, Some(true)),
        (
            "http.res.headers.content-type == \"application/json\"",
            true,
            Some(true),
        ),
        // A bare field is a presence test; a missing one is false, not undecided.
        ("http.req.headers.x-api-key", false, Some(false)),
        ("not http.req.headers.x-api-key", true, Some(true)),
        ("http.req.headers.user-agent", true, Some(true)),
        // Missing fields leave a comparison undecided; and/or decide around it.
        (
            "http.res.status >= 400 or http.req.method == \"POST\"",
            true,
            Some(true),
        ),
        (
            "http.res.status >= 400 and http.req.method == \"GET\"",
            false,
            Some(false),
        ),
        ("not (http.res.status >= 400)", false, None),
        // Values of different kinds are never equal.
        ("http.req.method == 5", false, Some(false)),
        ("http.req.method != 5", true, Some(true)),
        // Precedence: not > and > or.
        (
            "http.req.method == \"GET\" or http.req.method == \"POST\" and tls",
            true,
            Some(true),
        ),
        (
            "(http.req.method == \"GET\" or http.req.method == \"POST\") and not tls",
            false,
            Some(false),
        ),
        ("is_4xx()", false, None),
        ("is_error()", true, None),
        ("internal_client() && is_error()", true, None),
        ("true", true, Some(true)),
        ("false or 1", true, Some(true)),
    ];
    for (expr, when_failing, when_pending) in table {
        let rule = compile(expr, &TestSchema, &macros).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(rule.matches(&failing), *when_failing, "{expr} (status 503)");
        assert_eq!(rule.eval(&pending), *when_pending, "{expr} (no response)");
    }
}

#[test]
fn broken_expressions_name_their_column() {
    let macros = macros();
    let table: &[(&str, &str)] = &[
        (
            "http.res.status >=",
            "column 19: expected a field, a value or `(`, found the end of the expression",
        ),
        (
            "http.res.statuss >= 400",
            "column 1: unknown field `http.res.statuss`",
        ),
        ("res.status >= 400", "column 1: unknown field `res.status`"),
        (
            "http.res.status >= 400 &&& true",
            "column 26: unexpected character `&`",
        ),
        (
            "http.req.method == \"GET",
            "column 20: string is not closed",
        ),
        (
            "http.req.path matches /(/",
            "column 23: invalid regex: unclosed group",
        ),
        (
            "http.req.path matches \"x\"",
            "column 23: expected a `/regex/` after `matches`, found string \"x\"",
        ),
        (
            "http.req.path matches /abc",
            "column 23: regex is not closed with `/`",
        ),
        (
            "src.ip in 10.0.0.0/33",
            "column 11: `10.0.0.0/33` is not a CIDR",
        ),
        (
            "src.ip in 10.0.0.1",
            "column 11: expected a list `[..]` or a CIDR after `in`, found `10.0.0.1`",
        ),
        (
            "http.req.method in [\"GET\" \"POST\"]",
            "column 27: expected `,` or `]`, found string \"POST\"",
        ),
        (
            "(http.req.method == \"GET\"",
            "column 26: expected `)`, found the end of the expression",
        ),
        (
            "http.req.method == \"GET\")",
            "column 25: expected `and`, `or` or the end of the expression, found `)`",
        ),
        (
            "is_5xx()",
            "column 1: unknown function or macro `is_5xx` (functions: `starts_with`, `ends_with`, `in_zone`, `zone`)",
        ),
        (
            "starts_with(http.req.path)",
            "column 1: `starts_with` takes two arguments",
        ),
        (
            "is_4xx(1)",
            "column 1: `is_4xx` takes no arguments (it is a macro)",
        ),
        (
            "http.req.method == is_4xx()",
            "column 20: expected a value, found a condition",
        ),
        (
            "http.req.method == \"a\\q\"",
            "column 22: unknown escape `\\q` in string",
        ),
        (
            "http.req.method == 1..2",
            "column 20: `1..2` is not a field, number or address",
        ),
        (
            "",
            "column 1: expected a field, a value or `(`, found the end of the expression",
        ),
        (
            "   ",
            "column 4: expected a field, a value or `(`, found the end of the expression",
        ),
        // Columns count characters, not bytes.
        (
            "\"é\" == http.req.methd",
            "column 8: unknown field `http.req.methd`",
        ),
    ];
    for (expr, expected) in table {
        let err: Error = compile(expr, &TestSchema, &macros)
            .map(|_| ())
            .expect_err(expr);
        assert_eq!(err.to_string(), *expected, "{expr}");
    }
}

#[test]
fn macros_are_checked_when_defined() {
    let mut m = macros();
    let err = m.define("is_4xx", "true", &TestSchema).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column 1: macro `is_4xx` is already defined"
    );
    let err = m.define("zone", "true", &TestSchema).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column 1: macro `zone` has the name of a function"
    );
    let err = m
        .define("bad", "http.res.status >", &TestSchema)
        .unwrap_err();
    assert_eq!(err.col, 18);
    // A macro may use only macros defined before it.
    let err = m.define("early", "later()", &TestSchema).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column 1: unknown function or macro `later` (functions: `starts_with`, `ends_with`, `in_zone`, `zone`)"
    );
    assert!(!m.contains("early"));
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
    let err = compile(&deep, &TestSchema, &Macros::default()).unwrap_err();
    assert_eq!(err.col, 66);
    let ok = format!("{}true{}", "(".repeat(60), ")".repeat(60));
    assert!(
        compile(&ok, &TestSchema, &Macros::default())
            .unwrap()
            .matches(&Txn { status: None })
    );
}
