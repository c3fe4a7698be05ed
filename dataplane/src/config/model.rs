//! The typed configuration, as `qpoint.yaml` version 2 spells it.
//!
//! Every struct denies unknown keys; every field says what it means and its default.

use std::collections::BTreeMap;

use serde::Deserialize;
use tapwire_store::config::{EventStoreConfig, ObjectStoreConfig, RawStore, Secret, SecretSource};

/// A loaded, validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where events and objects go.
    pub services: Services,
    /// Named plugin stacks, referenced from `tap.http.stack` and endpoints.
    pub stacks: BTreeMap<String, Stack>,
    /// What to capture.
    pub tap: Tap,
    /// tapwire's own settings (not in Qtap's format).
    pub tapwire: Tapwire,
}

/// Validated stores.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Event stores, in file order; every one receives every event.
    pub event_stores: Vec<EventStoreConfig>,
    /// Object stores, in file order; every one receives every object.
    pub object_stores: Vec<ObjectStoreConfig>,
}

impl Config {
    /// Every secret in the config with its store id and key, for resolution at start.
    pub fn secrets(&self) -> Vec<(&str, &'static str, &Secret)> {
        let events = self.services.event_stores.iter().flat_map(|s| {
            s.secrets()
                .into_iter()
                .map(|(key, secret)| (s.id(), key, secret))
        });
        let objects = self.services.object_stores.iter().flat_map(|s| {
            s.secrets()
                .into_iter()
                .map(|(key, secret)| (s.id(), key, secret))
        });
        events.chain(objects).collect()
    }

    /// Secrets written inline (`type: text`), which deserve a warning.
    pub fn inline_secrets(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.secrets()
            .into_iter()
            .filter(|(_, _, s)| s.source == SecretSource::Text)
            .map(|(store, key, _)| (store, key))
    }
}

/// The file as written (before cross-field validation).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Format version; must be 2.
    pub version: u32,
    /// Stores.
    #[serde(default)]
    pub services: RawServices,
    /// Named plugin stacks.
    #[serde(default)]
    pub stacks: BTreeMap<String, Stack>,
    /// Capture settings.
    #[serde(default)]
    pub tap: Tap,
    /// tapwire's own settings.
    #[serde(default)]
    pub tapwire: Tapwire,
}

/// `tapwire`: settings of this agent that Qtap's format has no place for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tapwire {
    /// Bytes the data plane may buffer (queues, reorder windows, bodies), e.g.
    /// `128MiB`; default 128 MiB. `--memory-budget` overrides it.
    #[serde(default)]
    pub memory_budget: Option<ByteSize>,
    /// How long a connection may stay silent before its buffered transactions
    /// are emitted (marked `truncated`) and their memory released, e.g. `10m`;
    /// default 10 minutes. The connection itself (and its HTTP/2 header table)
    /// is kept.
    #[serde(default)]
    pub idle_timeout: Option<Seconds>,
}

/// A size in bytes: an integer, or a number with `B`, `KiB`, `MiB` or `GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        const UNITS: &[(&str, u64)] = &[
            ("", 1),
            ("B", 1),
            ("KiB", 1 << 10),
            ("MiB", 1 << 20),
            ("GiB", 1 << 30),
        ];
        scaled(text, UNITS, "B, KiB, MiB or GiB", "a size (e.g. `128MiB`)").map(ByteSize)
    }
}

/// A duration in whole seconds: an integer (seconds), or a number with `s`, `m`
/// or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl std::str::FromStr for Seconds {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        const UNITS: &[(&str, u64)] = &[("", 1), ("s", 1), ("m", 60), ("h", 3600)];
        scaled(text, UNITS, "s, m or h", "a duration (e.g. `10m`)").map(Seconds)
    }
}

/// `text` as a number followed by one of `units` (name, scale).
fn scaled(text: &str, units: &[(&str, u64)], names: &str, what: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let Some(&(_, scale)) = units.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "unknown unit `{unit}` in `{text}`, expected {names}"
        ));
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not {what}"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// An integer as is, or a string parsed with `T::from_str`.
fn integer_or_text<'de, D, T>(d: D, from_int: fn(u64) -> T) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(from_int(n)),
        Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        integer_or_text(d, ByteSize)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        integer_or_text(d, Seconds)
    }
}

/// `services` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServices {
    /// `event_stores[]`.
    #[serde(default)]
    pub event_stores: Vec<RawStore>,
    /// `object_stores[]`.
    #[serde(default)]
    pub object_stores: Vec<RawStore>,
}

/// A named list of plugins applied to captured traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// Plugins, in order.
    #[serde(default)]
    pub plugins: Vec<Plugin>,
}

/// One plugin in a stack: `{type, config}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// Plugin name (`http_capture`, `access_logs`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Plugin-specific settings, kept as written.
    #[serde(default)]
    pub config: Option<serde_yaml::Value>,
}

/// `tap`: what to capture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    /// Which connections: `egress` (outbound), `ingress` (inbound), `all` (default),
    /// `egress-external`, `egress-internal`.
    #[serde(default)]
    pub direction: Direction,
    /// Skip connections to and from loopback addresses (default `false`).
    #[serde(default)]
    pub ignore_loopback: bool,
    /// Include DNS lookups in audit events (default `false`).
    #[serde(default)]
    pub audit_include_dns: bool,
    /// HTTP processing: which stack handles HTTP traffic.
    #[serde(default)]
    pub http: Option<HttpTap>,
    /// Processes to leave out (or, with `only`, to keep).
    #[serde(default)]
    pub filters: Filters,
    /// Per-domain overrides.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            direction: Direction::All,
            ignore_loopback: false,
            audit_include_dns: false,
            http: None,
            filters: Filters::default(),
            endpoints: Vec::new(),
        }
    }
}

/// Connection directions to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Connections this host opens.
    Egress,
    /// Outbound connections to non-private addresses.
    EgressExternal,
    /// Outbound connections to private addresses.
    EgressInternal,
    /// Connections this host accepts.
    Ingress,
    /// Both.
    #[default]
    All,
}

/// `tap.http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTap {
    /// Name of a stack under `stacks`.
    pub stack: String,
}

/// `tap.filters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Built-in process groups to leave out.
    #[serde(default)]
    pub groups: Vec<GroupFilter>,
    /// Executables to leave out, or with `only: true` to keep exclusively.
    #[serde(default)]
    pub custom: Vec<CustomFilter>,
}

/// Built-in process groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupFilter {
    /// The agent itself (always left out).
    Qpoint,
    /// Kubernetes system processes (kubelet, containerd, …).
    Kubernetes,
    /// Container runtimes.
    Container,
}

/// One `tap.filters.custom[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomFilter {
    /// Executable path (or prefix/pattern, per `strategy`).
    pub exe: String,
    /// How `exe` is matched (default `exact`).
    #[serde(default)]
    pub strategy: MatchStrategy,
    /// `true`: capture only matching processes; `false` (default): leave them out.
    #[serde(default)]
    pub only: bool,
}

/// How a filter's `exe` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchStrategy {
    /// The whole path.
    #[default]
    Exact,
    /// The path starts with `exe`.
    Prefix,
    /// `exe` is a regular expression.
    Regex,
}

/// One `tap.endpoints[]` entry: settings for one domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The domain (`api.example.com`).
    pub domain: String,
    /// HTTP processing for this domain.
    #[serde(default)]
    pub http: Option<HttpTap>,
}
