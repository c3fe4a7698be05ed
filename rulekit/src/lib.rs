//! Qtap's rule language ("rulekit"), as `qpoint.yaml` writes it in
//! `http_capture.rules[].expr` and `rulekit.macros[].expr`:
//!
//! ```text
//! http.res.status >= 400 and not (http.req.path starts_with "/health")
//! src.ip in 10.0.0.0/8 || http.req.headers.user-agent matches /curl/
//! ```
//!
//! - Boolean: `or`/`||`, `and`/`&&`, `not`/`!`, parentheses.
//! - Comparison: `==`/`eq`, `!=`/`ne`, `>`/`gt`, `>=`/`ge`, `<`/`lt`, `<=`/`le`,
//!   `contains`, `in` (a list `[..]`, or a CIDR for addresses), `matches`/`=~`
//!   (`/regex/`).
//! - Values: `true`/`false`, numbers, `"strings"` (or `'strings'`), addresses
//!   (`10.0.0.1`, `::1`), CIDRs (`10.0.0.0/8`), `/regex/`, lists `[..]`.
//! - Functions: `starts_with(v, "prefix")`, `ends_with(v, "suffix")`,
//!   `in_zone(domain, "example.com")`, `zone(domain)`; a macro `name` defined
//!   with [`Macros::define`] is used as `name()`.
//! - A bare field is true when it is present and not zero, empty or `false`.
//!
//! Fields are names a [`Schema`] resolves at compile time, so a misspelt field
//! is an error with its column rather than a rule that silently never matches.
//! A comparison with a field the transaction does not have is neither true nor
//! false: `and`/`or` decide around it when they can, and a rule whose result
//! stays undecided does not match.
//!
//! [`Rule::eval`] walks the compiled tree over borrowed values: no allocation.

mod eval;
mod lex;
mod parse;

pub use eval::{Env, Value};
pub use parse::{Error, ErrorKind, FieldRef, Macros, Rule, Schema};

/// Compiles `source` with the fields of `schema` and the macros of `macros`.
pub fn compile(source: &str, schema: &dyn Schema, macros: &Macros) -> Result<Rule, Error> {
    parse::compile(source, schema, macros)
}
