//! Compiling `stacks`, `tap.http`, `tap.endpoints` and `rulekit.macros` into
//! an [`HttpPlan`]: every plugin setting checked and every rule compiled once,
//! at load.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tapwire_rulekit::{Macros, Rule};

use super::access_log::{LogFormat, mode_name};
use super::capture::{Format, Level};
use super::detect::DetectErrors;
use super::fields::{HttpFields, TxnFields};
use super::route::StoreRoute;
use crate::config::{Endpoint, Rulekit, Stack, Tap};

/// What each HTTP transaction becomes: the stack for its domain.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    /// The stack `tap.http` names (or the built-in default).
    pub default: StackPlan,
    /// Per-domain stacks (`tap.endpoints`), domains in lowercase.
    pub endpoints: Vec<(String, StackPlan)>,
}

/// One compiled stack.
#[derive(Debug, Clone)]
pub struct StackPlan {
    /// The stack's name (`None`: the built-in default, or no stack).
    pub name: Option<String>,
    /// What `http_capture` stores.
    pub capture: Capture,
    /// Emit the `http_transaction` event (`report_usage`).
    pub events: bool,
    /// Count the transaction in the `http_metrics` series (`http_metrics`).
    pub metrics: bool,
    /// Write an access log entry (`access_logs`).
    pub access: Option<AccessLogs>,
    /// Issue events and recorded parts (`detect_errors`).
    pub detect: Option<DetectErrors>,
}

/// `access_logs` settings, compiled.
#[derive(Debug, Clone)]
pub struct AccessLogs {
    /// Mode when no rule matches (`Headers` is written `details`).
    pub mode: Level,
    /// Format when no rule matches.
    pub format: LogFormat,
    /// Rules, first match wins.
    pub rules: Vec<AccessRule>,
}

/// One `access_logs.rules[]` entry.
#[derive(Debug, Clone)]
pub struct AccessRule {
    /// Its name.
    pub name: String,
    /// The expression as written.
    pub expr: String,
    /// The compiled expression.
    pub rule: Rule,
    /// Mode when it matches.
    pub mode: Level,
    /// Format when it matches (the plugin's format unless given).
    pub format: LogFormat,
}

impl AccessLogs {
    /// The mode and format for one transaction: the first matching rule's,
    /// else the plugin's.
    pub fn for_txn(&self, txn: &TxnFields<'_>) -> (Level, LogFormat) {
        self.rules
            .iter()
            .find(|r| r.rule.matches(txn))
            .map_or((self.mode, self.format), |r| (r.mode, r.format))
    }
}

/// `http_capture` settings, compiled.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Level when no rule matches.
    pub level: Level,
    /// Format when no rule matches.
    pub format: Format,
    /// Rules, first match wins.
    pub rules: Vec<CaptureRule>,
    /// The one object store the objects go to (`object_store.id`); `None`:
    /// every object store.
    pub store: Option<StoreRoute>,
}

/// One `http_capture.rules[]` entry.
#[derive(Debug, Clone)]
pub struct CaptureRule {
    /// Its name.
    pub name: String,
    /// The expression as written.
    pub expr: String,
    /// The compiled expression.
    pub rule: Rule,
    /// Level when it matches.
    pub level: Level,
    /// Format when it matches (the plugin's format unless given).
    pub format: Format,
}

impl Capture {
    const NONE: Capture = Capture {
        level: Level::None,
        format: Format::Parts,
        rules: Vec::new(),
        store: None,
    };
}

impl StackPlan {
    /// No stack: nothing recorded.
    pub const NONE: StackPlan = StackPlan {
        name: None,
        capture: Capture::NONE,
        events: false,
        metrics: false,
        access: None,
        detect: None,
    };

    /// Whether a transaction handled by this stack is counted or recorded.
    pub fn records(&self) -> bool {
        self.metrics || self.access.is_some() || self.stores()
    }

    /// Whether this stack may read body bytes: an access log at `full`, or
    /// (with an object store) `http_capture` at `full` or `detect_errors`,
    /// whose records hold bodies.
    pub fn reads_bodies(&self, object_stores: bool) -> bool {
        let logs = self.access.as_ref().is_some_and(|a| {
            a.mode == Level::Full || a.rules.iter().any(|r| r.mode == Level::Full)
        });
        let stores = object_stores
            && (self.detect.is_some()
                || self.capture.level == Level::Full
                || self.capture.rules.iter().any(|r| r.level == Level::Full));
        logs || stores
    }

    /// Whether this stack may read header blocks as objects: with an object
    /// store, `http_capture` at `headers` or `full`, or `detect_errors`, whose
    /// records hold them.
    pub fn reads_heads(&self, object_stores: bool) -> bool {
        object_stores
            && (self.detect.is_some()
                || self.capture.level >= Level::Headers
                || self.capture.rules.iter().any(|r| r.level >= Level::Headers))
    }

    /// Whether a transaction handled by this stack may become an event or an
    /// object.
    pub fn stores(&self) -> bool {
        self.events
            || self.detect.is_some()
            || self.capture.level != Level::None
            || self.capture.rules.iter().any(|r| r.level != Level::None)
    }

    /// The level and format for one transaction: the first matching rule's,
    /// else the plugin's.
    pub fn capture_for(&self, txn: &TxnFields<'_>) -> (Level, Format) {
        self.capture
            .rules
            .iter()
            .find(|r| r.rule.matches(txn))
            .map_or((self.capture.level, self.capture.format), |r| {
                (r.level, r.format)
            })
    }

    fn describe(&self) -> String {
        let name = match &self.name {
            Some(name) => format!("stack `{name}`"),
            None if self.records() => "built-in default (no `stacks` in the file)".to_owned(),
            None => "no stack: HTTP transactions are not recorded".to_owned(),
        };
        let mut out = format!(
            "{name}; objects={} format={} request_events={} http_metrics={}",
            self.capture.level.name(),
            self.capture.format.name(),
            self.events,
            self.metrics
        );
        if let Some(store) = &self.capture.store {
            let _ = write!(out, " object_store={}", store.id);
        }
        if let Some(a) = &self.access {
            let _ = write!(
                out,
                "\n    access_logs: mode={} format={}",
                mode_name(a.mode),
                a.format.name()
            );
            for r in &a.rules {
                let _ = write!(
                    out,
                    "\n    access_logs rule `{}`: {} -> mode={} format={}",
                    r.name,
                    r.expr,
                    mode_name(r.mode),
                    r.format.name()
                );
            }
        }
        for r in &self.capture.rules {
            let _ = write!(
                out,
                "\n    rule `{}`: {} -> objects={} format={}",
                r.name,
                r.expr,
                r.level.name(),
                r.format.name()
            );
        }
        if let Some(d) = &self.detect {
            out.push_str(&d.describe());
        }
        out
    }
}

impl HttpPlan {
    /// The plan of a file without `stacks`: every transaction stored in full
    /// as content-addressed parts, with its event.
    pub fn default_full() -> Self {
        HttpPlan {
            default: StackPlan {
                name: None,
                capture: Capture {
                    level: Level::Full,
                    format: Format::Parts,
                    rules: Vec::new(),
                    store: None,
                },
                events: true,
                metrics: true,
                access: None,
                detect: None,
            },
            endpoints: Vec::new(),
        }
    }

    /// The stack for a transaction to `domain` (the TLS server name, else
    /// the host of `Host` or `:authority`: [`Transaction::domain`]).
    ///
    /// [`Transaction::domain`]: crate::pipeline::txn::Transaction::domain
    pub fn stack_for(&self, domain: Option<&str>) -> &StackPlan {
        if let Some(domain) = domain
            && !self.endpoints.is_empty()
        {
            let domain = domain.trim_end_matches('.');
            if let Some((_, stack)) = self
                .endpoints
                .iter()
                .find(|(d, _)| d.eq_ignore_ascii_case(domain))
            {
                return stack;
            }
        }
        &self.default
    }

    /// Whether any transaction is recorded at all.
    pub fn records(&self) -> bool {
        self.any_stack(StackPlan::records)
    }

    /// Whether `f` holds for any stack, the default or an endpoint's.
    pub fn any_stack(&self, f: impl Fn(&StackPlan) -> bool) -> bool {
        f(&self.default) || self.endpoints.iter().any(|(_, s)| f(s))
    }

    /// Whether a stack of the file has `http_metrics` (the built-in default
    /// aside).
    pub fn names_metrics(&self) -> bool {
        std::iter::once(&self.default)
            .chain(self.endpoints.iter().map(|(_, s)| s))
            .any(|s| s.metrics && s.name.is_some())
    }

    /// Lines for `check-config`.
    pub fn describe(&self) -> String {
        let mut out = self.default.describe();
        for (domain, stack) in &self.endpoints {
            let _ = write!(out, "\n  endpoint `{domain}`: {}", stack.describe());
        }
        out
    }
}

/// A refused setting: where (key path from the document root) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Key path: map keys and list indices.
    pub path: Vec<PathStep>,
    /// Point at the key (true) or its value (false).
    pub at_key: bool,
    /// What is wrong.
    pub message: String,
}

/// One step of a [`Refusal`] path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// A map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Why the HTTP handling of a config could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackError {
    /// A setting is refused.
    Refused(Refusal),
    /// A rule expression does not compile.
    Expression {
        /// Path of the `expr` value.
        path: Vec<PathStep>,
        /// 1-based column inside the expression.
        col: usize,
        /// What is wrong.
        message: String,
    },
}

impl From<Refusal> for StackError {
    fn from(r: Refusal) -> Self {
        StackError::Refused(r)
    }
}

fn key(k: &str) -> PathStep {
    PathStep::Key(k.to_owned())
}

pub(super) fn path(steps: &[PathStep], more: &[&str]) -> Vec<PathStep> {
    let mut p = steps.to_vec();
    p.extend(more.iter().map(|k| key(k)));
    p
}

/// Plugin types Qtap defines that tapwire does not apply yet.
const NOT_YET: &[&str] = &["logger", "data_loss_protection", "qscan", "llm"];

/// `http_capture` settings as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpCaptureConfig {
    /// `none` (default) | `summary` | `headers` (`details`) | `full`.
    #[serde(default)]
    level: Option<String>,
    /// `json` (default) | `text` | `parts`.
    #[serde(default)]
    format: Option<String>,
    /// The one object store to use; every object store unless given.
    #[serde(default)]
    object_store: Option<StoreRef>,
    /// Rules, first match wins.
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// `http_capture.object_store` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreRef {
    /// The `id` of a `services.object_stores[]` entry.
    id: String,
}

/// One `http_capture.rules[]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// A name for `check-config` and logs.
    name: String,
    /// The expression.
    expr: String,
    /// Level when it matches.
    level: String,
    /// Format when it matches; the plugin's unless given.
    #[serde(default)]
    format: Option<String>,
}

/// `access_logs` settings as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLogsConfig {
    /// `none` | `summary` (default; also when empty) | `details` (`headers`) | `full`.
    #[serde(default)]
    mode: Option<String>,
    /// `json` (default, as in Qtap) | `console`.
    #[serde(default)]
    format: Option<String>,
    /// Rules, first match wins.
    #[serde(default)]
    rules: Vec<AccessRuleConfig>,
}

/// One `access_logs.rules[]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessRuleConfig {
    /// A name for `check-config`.
    name: String,
    /// The expression.
    expr: String,
    /// Mode when it matches.
    mode: String,
    /// Format when it matches; the plugin's unless given.
    #[serde(default)]
    format: Option<String>,
}

/// Compiles the HTTP handling of a config: the stack `tap.http` names (or the
/// built-in default when the file has no `stacks`) and the per-domain stacks;
/// `object_stores`: the ids of `services.object_stores`, in order.
pub fn compile(
    stacks: &BTreeMap<String, Stack>,
    tap: &Tap,
    rulekit: &Rulekit,
    object_stores: &[&str],
) -> Result<HttpPlan, StackError> {
    let macros = compile_macros(rulekit)?;
    if stacks.is_empty() && tap.http.is_none() && tap.endpoints.is_empty() {
        return Ok(HttpPlan::default_full());
    }
    // Every stack is checked, used or not: nothing written is left unchecked.
    let mut compiled = BTreeMap::new();
    for (name, stack) in stacks {
        compiled.insert(
            name.as_str(),
            compile_stack(name, stack, &macros, object_stores)?,
        );
    }
    let pick = |http: Option<&crate::config::HttpTap>, at: Vec<PathStep>| {
        let Some(name) = http
            .map(|h| h.stack.as_str())
            .filter(|n| !n.is_empty() && *n != "none")
        else {
            return Ok(StackPlan::NONE);
        };
        compiled.get(name).cloned().ok_or_else(|| Refusal {
            path: at,
            at_key: false,
            message: format!("unknown stack `{name}`"),
        })
    };
    let default = pick(tap.http.as_ref(), path(&[], &["tap", "http", "stack"]))?;
    let mut endpoints: Vec<(String, StackPlan)> = Vec::new();
    for (i, Endpoint { domain, http }) in tap.endpoints.iter().enumerate() {
        let here = vec![key("tap"), key("endpoints"), PathStep::Index(i)];
        let domain_error = |message: String| Refusal {
            path: path(&here, &["domain"]),
            at_key: false,
            message,
        };
        if !is_hostname(domain) {
            return Err(domain_error(format!(
                "`{domain}` is not a host name (letters, digits and `-` in dot-separated \
                 labels; no wildcards)"
            ))
            .into());
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(first) = endpoints.iter().position(|(d, _)| *d == domain) {
            return Err(domain_error(format!(
                "domain `{domain}` is already listed (tap.endpoints[{first}])"
            ))
            .into());
        }
        let stack = pick(http.as_ref(), path(&here, &["http", "stack"]))?;
        endpoints.push((domain, stack));
    }
    Ok(HttpPlan { default, endpoints })
}

/// A host name as Qtap's validator accepts it (RFC 1123).
fn is_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn compile_macros(rulekit: &Rulekit) -> Result<Macros, StackError> {
    let mut macros = Macros::default();
    for (i, m) in rulekit.macros.iter().enumerate() {
        let here = vec![key("rulekit"), key("macros"), PathStep::Index(i)];
        macros
            .define(&m.name, &m.expr, &HttpFields)
            .map_err(|e| match e.kind {
                tapwire_rulekit::ErrorKind::DuplicateMacro(_)
                | tapwire_rulekit::ErrorKind::MacroNamedLikeFunction(_) => {
                    StackError::Refused(Refusal {
                        path: path(&here, &["name"]),
                        at_key: false,
                        message: e.kind.to_string(),
                    })
                }
                _ => expression_error(path(&here, &["expr"]), &e),
            })?;
    }
    Ok(macros)
}

fn expression_error(path: Vec<PathStep>, e: &tapwire_rulekit::Error) -> StackError {
    StackError::Expression {
        path,
        col: e.col,
        message: format!("invalid expression at column {}: {}", e.col, e.kind),
    }
}

/// Compiles one named stack.
fn compile_stack(
    name: &str,
    stack: &Stack,
    macros: &Macros,
    object_stores: &[&str],
) -> Result<StackPlan, StackError> {
    let mut plan = StackPlan {
        name: Some(name.to_owned()),
        ..StackPlan::NONE
    };
    let mut captured = false;
    for (i, plugin) in stack.plugins.iter().enumerate() {
        let here = vec![key("stacks"), key(name), key("plugins"), PathStep::Index(i)];
        let at = |step: &str, at_key: bool, message: String| Refusal {
            path: path(&here, &[step]),
            at_key,
            message,
        };
        match plugin.kind.as_str() {
            "http_capture" => {
                if captured {
                    return Err(at(
                        "type",
                        false,
                        "a stack takes one `http_capture` plugin".to_owned(),
                    )
                    .into());
                }
                captured = true;
                plan.capture =
                    compile_capture(&here, plugin.config.as_ref(), macros, object_stores)?;
            }
            // `debug`: Qtap's older name, its format `console` unless given.
            kind @ ("access_logs" | "debug") => {
                if plan.access.is_some() {
                    return Err(at(
                        "type",
                        false,
                        "a stack takes one `access_logs` (or `debug`) plugin".to_owned(),
                    )
                    .into());
                }
                let format = if kind == "debug" {
                    LogFormat::Console
                } else {
                    LogFormat::Json
                };
                plan.access = Some(compile_access(
                    &here,
                    plugin.config.as_ref(),
                    format,
                    macros,
                )?);
            }
            kind @ ("report_usage" | "http_metrics") => {
                if plugin.config.is_some() {
                    return Err(at(
                        "config",
                        true,
                        format!("`{kind}` takes no settings in tapwire"),
                    )
                    .into());
                }
                if kind == "report_usage" {
                    plan.events = true;
                } else {
                    plan.metrics = true;
                }
            }
            "detect_errors" => {
                if plan.detect.is_some() {
                    return Err(at(
                        "type",
                        false,
                        "a stack takes one `detect_errors` plugin".to_owned(),
                    )
                    .into());
                }
                plan.detect = Some(super::detect::compile(&here, plugin.config.as_ref())?);
            }
            kind if NOT_YET.contains(&kind) => {
                return Err(at(
                    "type",
                    false,
                    format!("plugin `{kind}` is not applied by this version of tapwire"),
                )
                .into());
            }
            kind => {
                return Err(at(
                    "type",
                    false,
                    format!(
                        "unknown plugin type `{kind}`, expected one of `http_capture`, \
                         `report_usage`, `http_metrics`, `access_logs`, `detect_errors`"
                    ),
                )
                .into());
            }
        }
    }
    Ok(plan)
}

/// A plugin's `config` (at `here`) as `T`, refusals located.
pub(super) fn settings<T: DeserializeOwned>(
    here: &[PathStep],
    config: Option<&serde_yaml::Value>,
) -> Result<Option<T>, Refusal> {
    let Some(v) = config else {
        return Ok(None);
    };
    serde_path_to_error::deserialize(v.clone())
        .map(Some)
        .map_err(|e| {
            let mut p = path(here, &["config"]);
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Map { key: k } => p.push(key(k)),
                    serde_path_to_error::Segment::Seq { index } => p.push(PathStep::Index(*index)),
                    _ => {}
                }
            }
            let message = e.inner().to_string();
            let mut at_key = false;
            if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                if p.last() != Some(&key(field)) {
                    p.push(key(field));
                }
                at_key = true;
            }
            Refusal {
                path: p,
                at_key,
                message,
            }
        })
}

/// `http_capture` levels, as refusals list them.
const LEVELS: &str = "`none`, `summary`, `headers`, `details`, `full`";
/// `http_capture` formats.
const FORMATS: &str = "`json`, `text`, `parts`";
/// `access_logs` modes.
const MODES: &str = "`none`, `summary`, `details`, `full`";
/// `access_logs` formats.
const LOG_FORMATS: &str = "`console`, `json`";

/// `name` read by `parse`, else a refusal at `p`: an unknown `what`, and the
/// `expected` names.
fn parse_at<T>(
    p: Vec<PathStep>,
    name: &str,
    parse: fn(&str) -> Option<T>,
    what: &str,
    expected: &str,
) -> Result<T, Refusal> {
    parse(name).ok_or_else(|| Refusal {
        path: p,
        at_key: false,
        message: format!("unknown {what} `{name}`, expected one of {expected}"),
    })
}

/// The path of `config.rules[i]` of the plugin at `here`.
fn rule_path(here: &[PathStep], i: usize) -> Vec<PathStep> {
    let mut p = path(here, &["config", "rules"]);
    p.push(PathStep::Index(i));
    p
}

/// A rule's expression compiled (`rule_path`: the rule's path).
fn compile_rule(rule_path: &[PathStep], expr: &str, macros: &Macros) -> Result<Rule, StackError> {
    tapwire_rulekit::compile(expr, &HttpFields, macros)
        .map_err(|e| expression_error(path(rule_path, &["expr"]), &e))
}

/// Compiles one `access_logs` plugin's `config` (at `here`); `default_format`
/// applies when it names none.
fn compile_access(
    here: &[PathStep],
    config: Option<&serde_yaml::Value>,
    default_format: LogFormat,
    macros: &Macros,
) -> Result<AccessLogs, StackError> {
    let cfg = settings(here, config)?.unwrap_or(AccessLogsConfig {
        mode: None,
        format: None,
        rules: Vec::new(),
    });
    let mode_at = |p: Vec<PathStep>, name: Option<&str>| {
        // Empty means `summary`, as in Qtap.
        let name = name.filter(|n| !n.is_empty()).unwrap_or("summary");
        parse_at(p, name, Level::parse, "mode", MODES)
    };
    let format_at = |p, name: &str| parse_at(p, name, LogFormat::parse, "format", LOG_FORMATS);
    let mode = mode_at(path(here, &["config", "mode"]), cfg.mode.as_deref())?;
    let format = match &cfg.format {
        Some(f) => format_at(path(here, &["config", "format"]), f)?,
        None => default_format,
    };
    let mut rules = Vec::with_capacity(cfg.rules.len());
    for (i, r) in cfg.rules.into_iter().enumerate() {
        let rule_path = rule_path(here, i);
        rules.push(AccessRule {
            rule: compile_rule(&rule_path, &r.expr, macros)?,
            mode: mode_at(path(&rule_path, &["mode"]), Some(&r.mode))?,
            format: match &r.format {
                Some(f) => format_at(path(&rule_path, &["format"]), f)?,
                None => format,
            },
            name: r.name,
            expr: r.expr,
        });
    }
    Ok(AccessLogs {
        mode,
        format,
        rules,
    })
}

/// Compiles one `http_capture` plugin's `config` (at `here`).
fn compile_capture(
    here: &[PathStep],
    config: Option<&serde_yaml::Value>,
    macros: &Macros,
    object_stores: &[&str],
) -> Result<Capture, StackError> {
    let cfg: HttpCaptureConfig = match settings(here, config)? {
        Some(cfg) => cfg,
        None => HttpCaptureConfig {
            level: None,
            format: None,
            object_store: None,
            rules: Vec::new(),
        },
    };
    let store = match &cfg.object_store {
        Some(StoreRef { id }) => Some(StoreRoute::resolve(id, object_stores).map_err(
            |message| Refusal {
                path: path(here, &["config", "object_store", "id"]),
                at_key: false,
                message,
            },
        )?),
        None => None,
    };
    let level_at =
        |p, name: Option<&str>| parse_at(p, name.unwrap_or("none"), Level::parse, "level", LEVELS);
    let format_at = |p, name: &str| parse_at(p, name, Format::parse, "format", FORMATS);
    let level = level_at(path(here, &["config", "level"]), cfg.level.as_deref())?;
    let format = match &cfg.format {
        Some(f) => format_at(path(here, &["config", "format"]), f)?,
        None => Format::Json,
    };
    let mut rules = Vec::with_capacity(cfg.rules.len());
    for (i, r) in cfg.rules.into_iter().enumerate() {
        let rule_path = rule_path(here, i);
        let rule = compile_rule(&rule_path, &r.expr, macros)?;
        rules.push(CaptureRule {
            level: level_at(path(&rule_path, &["level"]), Some(&r.level))?,
            format: match &r.format {
                Some(f) => format_at(path(&rule_path, &["format"]), f)?,
                None => format,
            },
            name: r.name,
            expr: r.expr,
            rule,
        });
    }
    Ok(Capture {
        level,
        format,
        rules,
        store,
    })
}
