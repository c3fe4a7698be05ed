//! `tapwire check-config FILE`: validate a config and show the stores it would
//! start, with secrets masked. Reads no secrets and needs no privileges.

use std::fmt::Write;

use crate::config::Config;

/// A human-readable summary of `config`'s stores and capture settings.
pub fn summary(file: &str, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: ok");
    for store in &config.services.event_stores {
        let _ = writeln!(out, "event store `{}`: {}", store.id(), store.summary());
    }
    for store in &config.services.object_stores {
        let _ = writeln!(out, "object store `{}`: {}", store.id(), store.summary());
    }
    let _ = writeln!(
        out,
        "tap: direction={:?} ignore_loopback={} http_stack={}",
        config.tap.direction,
        config.tap.ignore_loopback,
        config
            .tap
            .http
            .as_ref()
            .map_or("none", |h| h.stack.as_str()),
    );
    out
}
