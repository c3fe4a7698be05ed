//! Rule expressions (`http_capture.rules[].expr`, `rulekit.macros`).
//!
//! Besides "never panics" in the parser or the evaluator, checks that every
//! error's column lies inside the expression (or just past its end) and that
//! evaluation is deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_rulekit::{Env, FieldRef, Macros, Schema, Value, compile};

/// Every dotted name is a field; its id picks the kind of value it has.
struct AnyField;

impl Schema for AnyField {
    fn resolve(&self, name: &str) -> Option<FieldRef> {
        if name.starts_with("unknown") {
            return None;
        }
        let id = name
            .bytes()
            .fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)));
        Some(FieldRef {
            id: id % 7,
            arg: name.into(),
        })
    }
}

struct Txn;

impl Env for Txn {
    fn get<'a>(&'a self, f: &'a FieldRef) -> Value<'a> {
        match f.id {
            0 => Value::Missing,
            1 => Value::Bool(true),
            2 => Value::Int(-404),
            3 => Value::Float(0.5),
            4 => Value::Str(&f.arg),
            5 => Value::Ip("::ffff:10.0.0.1".parse().expect("address")),
            _ => Value::Str("api.example.com"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line, if any, is a macro `m` the rest may use as `m()`.
    let (macro_src, expr) = text.split_once('\n').unwrap_or(("true", text));
    let mut macros = Macros::default();
    if let Err(e) = macros.define("m", macro_src, &AnyField) {
        assert!(e.col >= 1 && e.col <= macro_src.chars().count() + 1, "{e}");
    }
    match compile(expr, &AnyField, &macros) {
        Ok(rule) => assert_eq!(rule.eval(&Txn), rule.eval(&Txn)),
        Err(e) => assert!(e.col >= 1 && e.col <= expr.chars().count() + 1, "{e}"),
    }
});
