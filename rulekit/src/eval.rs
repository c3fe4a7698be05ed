//! Evaluation over borrowed values: no allocation.

use std::cmp::Ordering;
use std::net::IpAddr;

use crate::lex::CmpOp;
use crate::parse::{Expr, FieldRef, Lit, Operand, Rule};

/// A field's value in one evaluation, borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// The field is not known for this transaction (a header not sent, a
    /// status not received).
    Missing,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Text.
    Str(&'a str),
    /// An address.
    Ip(IpAddr),
}

/// Where an evaluation reads its fields.
pub trait Env {
    /// The value of `field` (as the schema resolved it); it may borrow from
    /// the environment or from the field's argument.
    fn get<'a>(&'a self, field: &'a FieldRef) -> Value<'a>;
}

impl Rule {
    /// Whether the rule matches: its expression is true (an expression left
    /// undecided by a missing field does not match).
    pub fn matches<E: Env + ?Sized>(&self, env: &E) -> bool {
        eval(&self.expr, env) == Some(true)
    }

    /// The three-valued result: `None` when a missing field leaves it undecided.
    pub fn eval<E: Env + ?Sized>(&self, env: &E) -> Option<bool> {
        eval(&self.expr, env)
    }
}

fn eval<E: Env + ?Sized>(expr: &Expr, env: &E) -> Option<bool> {
    match expr {
        Expr::Or(a, b) => match eval(a, env) {
            Some(true) => Some(true),
            left => match (left, eval(b, env)) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
        },
        Expr::And(a, b) => match eval(a, env) {
            Some(false) => Some(false),
            left => match (left, eval(b, env)) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
        },
        Expr::Not(a) => eval(a, env).map(|b| !b),
        Expr::Macro(body) => eval(body, env),
        Expr::Cmp(a, op, b) => compare(value(a, env), *op, value(b, env)),
        Expr::Contains(a, b) => strings(value(a, env), value(b, env), |a, b| a.contains(b)),
        Expr::StartsWith(a, b) => strings(value(a, env), value(b, env), |a, b| a.starts_with(b)),
        Expr::EndsWith(a, b) => strings(value(a, env), value(b, env), |a, b| a.ends_with(b)),
        Expr::InZone(a, b) => strings(value(a, env), value(b, env), in_zone),
        Expr::InList(a, items) => {
            let v = value(a, env);
            if v == Value::Missing {
                return None;
            }
            Some(
                items
                    .iter()
                    .any(|lit| compare(v, CmpOp::Eq, lit_value(lit)) == Some(true)),
            )
        }
        Expr::InCidr(a, net, len) => match value(a, env) {
            Value::Missing => None,
            Value::Ip(ip) => Some(in_cidr(ip, *net, *len)),
            Value::Str(s) => Some(s.parse().is_ok_and(|ip| in_cidr(ip, *net, *len))),
            _ => Some(false),
        },
        Expr::Matches(a, re) => match value(a, env) {
            Value::Missing => None,
            Value::Str(s) => Some(re.is_match(s)),
            Value::Int(n) => {
                let mut buf = [0u8; 20];
                Some(re.is_match(decimal(n, &mut buf)))
            }
            Value::Bool(b) => Some(re.is_match(if b { "true" } else { "false" })),
            _ => Some(false),
        },
        Expr::Truthy(a) => Some(match value(a, env) {
            Value::Missing => false,
            Value::Bool(b) => b,
            Value::Int(n) => n != 0,
            Value::Float(n) => n != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Ip(ip) => !ip.is_unspecified(),
        }),
    }
}

fn value<'v, E: Env + ?Sized>(op: &'v Operand, env: &'v E) -> Value<'v> {
    match op {
        Operand::Field(f) => env.get(f),
        Operand::Lit(lit) => lit_value(lit),
        Operand::Zone(inner) => match value(inner, env) {
            Value::Str(s) => Value::Str(zone(s)),
            other => other,
        },
    }
}

fn lit_value(lit: &Lit) -> Value<'_> {
    match lit {
        Lit::Bool(b) => Value::Bool(*b),
        Lit::Int(n) => Value::Int(*n),
        Lit::Float(n) => Value::Float(*n),
        Lit::Str(s) => Value::Str(s),
        Lit::Ip(ip) => Value::Ip(*ip),
    }
}

/// Applies a string test; `None` if either side is missing, false if either
/// is not text.
fn strings(a: Value<'_>, b: Value<'_>, test: impl Fn(&str, &str) -> bool) -> Option<bool> {
    match (a, b) {
        (Value::Missing, _) | (_, Value::Missing) => None,
        (Value::Str(a), Value::Str(b)) => Some(test(a, b)),
        _ => Some(false),
    }
}

fn compare(a: Value<'_>, op: CmpOp, b: Value<'_>) -> Option<bool> {
    let order = match (a, b) {
        (Value::Missing, _) | (_, Value::Missing) => return None,
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(&y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(&y)),
        (Value::Ip(x), Value::Ip(y)) => Some(canonical(x).cmp(&canonical(y))),
        (Value::Ip(x), Value::Str(s)) => s.parse().ok().map(|y| canonical(x).cmp(&canonical(y))),
        (Value::Str(s), Value::Ip(y)) => s.parse().ok().map(|x| canonical(x).cmp(&canonical(y))),
        (x, y) => match (number(x), number(y)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    };
    Some(match order {
        // Values of different kinds are never equal and never ordered.
        None => op == CmpOp::Ne,
        Some(o) => match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
        },
    })
}

/// A number, or text that reads as one (a header such as `content-length`).
fn number(v: Value<'_>) -> Option<f64> {
    match v {
        Value::Int(n) => Some(n as f64),
        Value::Float(n) => Some(n),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so `::ffff:10.0.0.1 == 10.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    // Both as IPv6 (IPv4 as IPv4-mapped), so a mapped address is in an IPv4
    // network and an IPv4 address is in `::ffff:0:0/96`.
    let wide = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let len = u32::from(len) + if net.is_ipv4() { 96 } else { 0 };
    let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
    wide(ip) & mask == wide(net) & mask
}

/// `domain` is `zone` or below it (ASCII case-insensitive, trailing dots ignored).
fn in_zone(domain: &str, zone: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    let zone = zone.trim_end_matches('.');
    if domain.len() == zone.len() {
        return domain.eq_ignore_ascii_case(zone);
    }
    domain.len() > zone.len()
        && domain.as_bytes()[domain.len() - zone.len() - 1] == b'.'
        && domain.as_bytes()[domain.len() - zone.len()..].eq_ignore_ascii_case(zone.as_bytes())
}

/// The last two labels of a domain (`api.example.com` → `example.com`).
fn zone(domain: &str) -> &str {
    let domain = domain.trim_end_matches('.');
    let mut dots = domain.rmatch_indices('.');
    dots.next();
    match dots.next() {
        Some((i, _)) => &domain[i + 1..],
        None => domain,
    }
}

/// `n` in decimal, written into `buf`.
fn decimal(n: i64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        // 19 digits at most for |i64|, so there is room for the sign.
        i -= 1;
        buf[i] = b'-';
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}
