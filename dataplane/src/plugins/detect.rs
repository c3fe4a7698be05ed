//! `detect_errors`: Qtap's error detection. Each rule names trigger
//! conditions — the response's MIME category, status codes, the URL, a
//! duration, an empty response body, a substring of the response body — all
//! of which must hold for it to fire (as
//! in Qtap's `MatcherGroup`). A rule that fires writes an `issue` event
//! (`report_as_issue`) and has the transaction's header blocks and bodies it
//! names stored as objects (`record_*`), whatever `http_capture`'s level.
//!
//! Rules are compiled once at load ([`compile`]); per transaction, a rule that
//! does not fire costs comparisons only: the reasons of a firing are written
//! only when every condition holds, and a response body is decoded only for a
//! `trigger_contains` whose other conditions hold.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::capture::decoded;
use super::stack::{PathStep, Refusal, path, settings};
use crate::attribution::Origin;
use crate::pipeline::event_fields::{self, WallTime};
use crate::pipeline::txn::{
    EVENT_SCHEMA, ObjectParts, ObjectRef, ObjectRole, ObjectRoles, Transaction, TxnIdentity,
    event_bytes,
};

/// `detect_errors` settings, compiled.
#[derive(Debug, Clone)]
pub struct DetectErrors {
    /// Rules in file order; every rule that matches fires.
    pub rules: Vec<DetectRule>,
}

/// One `detect_errors.rules[]` entry, compiled.
#[derive(Debug, Clone)]
pub struct DetectRule {
    /// Its name: the issue's `error`.
    pub name: String,
    /// `only_categories`: the response's MIME category is one of them.
    categories: Vec<MimeCategory>,
    /// `trigger_status_codes`: any of them (`x` a wildcard digit).
    statuses: Vec<StatusPattern>,
    /// `trigger_empty_body`.
    empty_body: bool,
    /// `trigger_duration` in nanoseconds; 0: none.
    duration_ns: u64,
    /// `trigger_contains`, as written and as a literal search.
    contains: Option<(String, regex::bytes::Regex)>,
    /// `only_urls`: the URL must be one of them.
    only_urls: Vec<String>,
    /// `exclude_urls`: the URL must be none of them.
    exclude_urls: Vec<String>,
    /// `report_as_issue`: write an `issue` event when it fires.
    pub report: bool,
    /// `record_*`: the parts stored when it fires.
    pub record: Record,
}

/// Which parts of a transaction a rule stores when it fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// `record_req_headers`.
    pub req_headers: bool,
    /// `record_req_body`.
    pub req_body: bool,
    /// `record_res_headers`.
    pub res_headers: bool,
    /// `record_res_body`.
    pub res_body: bool,
}

impl Record {
    /// Whether it stores anything.
    pub fn any(self) -> bool {
        self.req_headers || self.req_body || self.res_headers || self.res_body
    }

    /// The parts either stores.
    pub fn union(self, other: Record) -> Record {
        Record {
            req_headers: self.req_headers || other.req_headers,
            req_body: self.req_body || other.req_body,
            res_headers: self.res_headers || other.res_headers,
            res_body: self.res_body || other.res_body,
        }
    }

    /// Whether it stores the part of `role`.
    pub fn has(self, role: ObjectRole) -> bool {
        match role {
            ObjectRole::RequestHeaders => self.req_headers,
            ObjectRole::RequestBody => self.req_body,
            ObjectRole::ResponseHeaders => self.res_headers,
            ObjectRole::ResponseBody => self.res_body,
            ObjectRole::HttpTransaction => false,
        }
    }

    fn names(self) -> String {
        let names: Vec<&str> = [
            (self.req_headers, "req_headers"),
            (self.req_body, "req_body"),
            (self.res_headers, "res_headers"),
            (self.res_body, "res_body"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(",")
        }
    }
}

/// A status code pattern: three characters, each a digit or `x` (any digit)
/// after the first, as Qtap compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusPattern([u8; 3]);

impl StatusPattern {
    fn parse(text: &str) -> Option<Self> {
        let b: [u8; 3] = text.as_bytes().try_into().ok()?;
        let digit_or_x = |c: u8| c.is_ascii_digit() || c == b'x' || c == b'X';
        (matches!(b[0], b'1'..=b'5') && digit_or_x(b[1]) && digit_or_x(b[2]))
            .then(|| StatusPattern(b.map(|c| c.to_ascii_lowercase())))
    }

    fn matches(self, status: u16) -> bool {
        let s = [
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ];
        (100..1000).contains(&status) && self.0.iter().zip(s).all(|(&p, c)| p == b'x' || p == c)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

/// Qtap's MIME categories of a response `Content-Type` (its `MimeCategory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MimeCategory {
    /// Documents and API payloads: HTML, JSON, gRPC, XML, plain text.
    App,
    /// `text/css`.
    Css,
    /// `text/javascript`.
    Js,
    /// `font/*`.
    Font,
    /// `image/*`.
    Image,
    /// `audio/*`, `video/*`.
    Media,
    /// Anything else.
    Other,
}

/// Category names as written, in Qtap's order.
const CATEGORIES: [(&str, MimeCategory); 7] = [
    ("app", MimeCategory::App),
    ("css", MimeCategory::Css),
    ("js", MimeCategory::Js),
    ("font", MimeCategory::Font),
    ("image", MimeCategory::Image),
    ("media", MimeCategory::Media),
    ("other", MimeCategory::Other),
];

impl MimeCategory {
    /// The category of `content_type`: its type and subtype, parameters left
    /// out, compared ASCII case-insensitively (Qtap compares them as sent).
    fn of(content_type: &str) -> Self {
        let base = content_type.split(';').next().unwrap_or("").trim();
        let is = |t: &str| base.eq_ignore_ascii_case(t);
        let starts = |p: &str| {
            base.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        };
        if [
            "text/html",
            "application/json",
            "application/grpc",
            "text/xml",
            "application/xml",
            "text/plain",
        ]
        .iter()
        .any(|t| is(t))
        {
            MimeCategory::App
        } else if is("text/css") {
            MimeCategory::Css
        } else if is("text/javascript") {
            MimeCategory::Js
        } else if starts("font") {
            MimeCategory::Font
        } else if starts("image") {
            MimeCategory::Image
        } else if starts("audio") || starts("video") {
            MimeCategory::Media
        } else {
            MimeCategory::Other
        }
    }

    fn name(self) -> &'static str {
        CATEGORIES
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("other", |(n, _)| n)
    }
}

/// What made a rule fire, in Qtap's words (`detect_errors:<condition>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The response's MIME category.
    Mime,
    /// The response status.
    Status,
    /// The URL lists.
    Url,
    /// The response body.
    Body,
    /// The duration.
    Duration,
}

impl Condition {
    /// As the issue's `trigger_conditions` name it.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Mime => "detect_errors:mime",
            Condition::Status => "detect_errors:status",
            Condition::Url => "detect_errors:url",
            Condition::Body => "detect_errors:body",
            Condition::Duration => "detect_errors:duration",
        }
    }
}

/// One condition that held, and why, in Qtap's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Which condition.
    pub condition: Condition,
    /// Why it held.
    pub reason: String,
}

/// A rule that fired for a transaction.
#[derive(Debug, Clone)]
pub struct Firing {
    /// The rule's name.
    pub rule: String,
    /// Write an `issue` event.
    pub report: bool,
    /// The parts the rule stores.
    pub record: Record,
    /// The conditions that held, in Qtap's order.
    pub triggers: Vec<Trigger>,
}

impl DetectErrors {
    /// The rules that fire for `txn`, whose URL (as in events) is `url`. No
    /// allocation when none fires.
    pub fn check(&self, txn: &Transaction, url: &str) -> Vec<Firing> {
        let mut body: Option<Cow<'_, [u8]>> = None;
        let mut fired = Vec::new();
        for rule in &self.rules {
            if let Some(triggers) = rule.check(txn, url, &mut body) {
                fired.push(Firing {
                    rule: rule.name.clone(),
                    report: rule.report,
                    record: rule.record,
                    triggers,
                });
            }
        }
        fired
    }

    /// The parts any of `fired` stores.
    pub fn recorded(fired: &[Firing]) -> Record {
        fired
            .iter()
            .fold(Record::default(), |all, f| all.union(f.record))
    }
}

/// A transaction's duration as Qtap's rules see it: at least 1 ms.
fn duration_ns(txn: &Transaction) -> u64 {
    txn.end_ns.saturating_sub(txn.start_ns).max(1_000_000)
}

impl DetectRule {
    /// The triggers, if every condition holds. `body`: the decoded response
    /// body, once a rule needed it.
    fn check<'t>(
        &self,
        txn: &'t Transaction,
        url: &str,
        body: &mut Option<Cow<'t, [u8]>>,
    ) -> Option<Vec<Trigger>> {
        // As Qtap: a response without a `Content-Type` is in no category.
        let content_type = txn.response.header("content-type");
        if !self.categories.is_empty() {
            let category = MimeCategory::of(content_type?);
            if !self.categories.contains(&category) {
                return None;
            }
        }
        let status = if self.statuses.is_empty() {
            None
        } else {
            let code = txn.status?;
            Some(*self.statuses.iter().find(|p| p.matches(code))?)
        };
        if self.exclude_urls.iter().any(|u| u == url)
            || (!self.only_urls.is_empty() && !self.only_urls.iter().any(|u| u == url))
        {
            return None;
        }
        let took = duration_ns(txn);
        if self.duration_ns > 0 && took < self.duration_ns {
            return None;
        }
        if self.empty_body && txn.response.body_bytes > 0 {
            return None;
        }
        if let Some((_, needle)) = &self.contains {
            let body = body.get_or_insert_with(|| decoded(&txn.response));
            if !needle.is_match(body) {
                return None;
            }
        }
        // Every condition holds: the reasons, in Qtap's order and words.
        let mut triggers = Vec::new();
        let mut push = |condition, reason: String| triggers.push(Trigger { condition, reason });
        if let (false, Some(ct)) = (self.categories.is_empty(), content_type) {
            push(
                Condition::Mime,
                format!(
                    "response content-type [{ct}] matched category [{}]",
                    MimeCategory::of(ct).name()
                ),
            );
        }
        if let (Some(p), Some(code)) = (status, txn.status) {
            push(
                Condition::Status,
                format!("response status code [{code}] matched [{}]", p.as_str()),
            );
        }
        if !self.exclude_urls.is_empty() {
            push(Condition::Url, "url not in exclude list".to_owned());
        }
        if !self.only_urls.is_empty() {
            push(Condition::Url, "url in include list".to_owned());
        }
        if self.duration_ns > 0 {
            push(
                Condition::Duration,
                format!(
                    "duration [{}] exceeded threshold [{}]",
                    GoDuration(took - took % 1_000_000),
                    GoDuration(self.duration_ns)
                ),
            );
        }
        if self.empty_body {
            push(Condition::Body, "response body is empty".to_owned());
        }
        if self.contains.is_some() {
            push(
                Condition::Body,
                "response body contains the specified content".to_owned(),
            );
        }
        Some(triggers)
    }

    fn describe(&self) -> String {
        let mut when = Vec::new();
        if !self.categories.is_empty() {
            let names: Vec<&str> = self.categories.iter().map(|c| c.name()).collect();
            when.push(format!("category in [{}]", names.join(",")));
        }
        if !self.statuses.is_empty() {
            let codes: Vec<&str> = self.statuses.iter().map(StatusPattern::as_str).collect();
            when.push(format!("status in [{}]", codes.join(",")));
        }
        if !self.only_urls.is_empty() {
            when.push(format!("url in {:?}", self.only_urls));
        }
        if !self.exclude_urls.is_empty() {
            when.push(format!("url not in {:?}", self.exclude_urls));
        }
        if self.duration_ns > 0 {
            when.push(format!("duration >= {}", GoDuration(self.duration_ns)));
        }
        if self.empty_body {
            when.push("empty response body".to_owned());
        }
        if let Some((text, _)) = &self.contains {
            when.push(format!("response body contains {text:?}"));
        }
        format!(
            "detect_errors rule `{}`: {} -> issue={} record={}",
            self.name,
            when.join(" and "),
            self.report,
            self.record.names()
        )
    }
}

impl DetectErrors {
    /// Lines for `check-config`, one per rule.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for r in &self.rules {
            let _ = write!(out, "\n    {}", r.describe());
        }
        out
    }
}

/// A duration written as Go's `time.Duration.String` writes it (`250ms`,
/// `1.5s`, `1m30s`, `1h0m0s`), as Qtap's reasons quote durations.
struct GoDuration(u64);

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        /// `whole.frac` with the fraction's trailing zeros left out.
        fn decimal(
            f: &mut std::fmt::Formatter<'_>,
            value: u64,
            unit: u64,
            digits: usize,
        ) -> std::fmt::Result {
            write!(f, "{}", value / unit)?;
            let frac = value % unit;
            if frac > 0 {
                let text = format!("{frac:0digits$}");
                write!(f, ".{}", text.trim_end_matches('0'))?;
            }
            Ok(())
        }
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        if ns < 1_000_000 {
            decimal(f, ns, 1_000, 3)?;
            return f.write_str("µs");
        }
        if ns < 1_000_000_000 {
            decimal(f, ns, 1_000_000, 6)?;
            return f.write_str("ms");
        }
        let secs = ns / 1_000_000_000;
        let (h, m) = (secs / 3600, secs / 60 % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        decimal(f, ns % 60_000_000_000, 1_000_000_000, 9)?;
        f.write_str("s")
    }
}

/// `detect_errors` settings as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectErrorsConfig {
    /// The rules.
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// One rule as written (Qtap's keys).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// The issue's `error`.
    name: String,
    /// Codes (`"404"`) and classes (`"5xx"`); a YAML number is read as its digits.
    #[serde(default)]
    trigger_status_codes: Vec<serde_yaml::Value>,
    /// Fire on an empty response body.
    #[serde(default)]
    trigger_empty_body: bool,
    /// `"10s"`, `"250ms"`, or milliseconds (`1500`, `"1500"`).
    #[serde(default)]
    trigger_duration: Option<serde_yaml::Value>,
    /// A substring of the (decoded) response body.
    #[serde(default)]
    trigger_contains: Option<String>,
    /// URLs the rule applies to (exact).
    #[serde(default)]
    only_urls: Vec<String>,
    /// URLs the rule never applies to (exact).
    #[serde(default)]
    exclude_urls: Vec<String>,
    /// Write an `issue` event (Qtap's default: `false`).
    #[serde(default)]
    report_as_issue: bool,
    /// Store the request header block.
    #[serde(default)]
    record_req_headers: bool,
    /// Store the request body.
    #[serde(default)]
    record_req_body: bool,
    /// Store the response header block.
    #[serde(default)]
    record_res_headers: bool,
    /// Store the response body.
    #[serde(default)]
    record_res_body: bool,
    /// Qtap's MIME categories of the response (`app`, `css`, `js`, `font`,
    /// `image`, `media`, `other`).
    #[serde(default)]
    only_categories: Vec<String>,
    /// Tags: refused (tapwire has no tags).
    #[serde(default)]
    with_tags: Option<serde_yaml::Value>,
    /// Refused (Qtap does not implement it either).
    #[serde(default, rename = "continue")]
    continue_: Option<serde_yaml::Value>,
}

/// Compiles one `detect_errors` plugin's `config` (at `here`: the plugin's
/// path).
pub fn compile(
    here: &[PathStep],
    config: Option<&serde_yaml::Value>,
) -> Result<DetectErrors, Refusal> {
    let cfg: Option<DetectErrorsConfig> = settings(here, config)?;
    let Some(cfg) = cfg.filter(|c| !c.rules.is_empty()) else {
        // Point at `config` when written, else at the plugin's type.
        let (at, at_key) = if config.is_some() {
            ("config", true)
        } else {
            ("type", false)
        };
        return Err(Refusal {
            path: path(here, &[at]),
            at_key,
            message: "`detect_errors` needs `rules`: without them it detects nothing".to_owned(),
        });
    };
    let mut rules = Vec::with_capacity(cfg.rules.len());
    for (i, r) in cfg.rules.into_iter().enumerate() {
        let mut here = path(here, &["config", "rules"]);
        here.push(PathStep::Index(i));
        rules.push(compile_rule(&here, r)?);
    }
    Ok(DetectErrors { rules })
}

fn compile_rule(here: &[PathStep], r: RuleConfig) -> Result<DetectRule, Refusal> {
    let refuse = |key: &str, at_key: bool, message: String| Refusal {
        path: path(here, &[key]),
        at_key,
        message,
    };
    for (key, set, why) in [
        ("with_tags", r.with_tags.is_some(), "tapwire has no tags"),
        (
            "continue",
            r.continue_.is_some(),
            "Qtap does not implement it either: every rule that matches fires",
        ),
    ] {
        if set {
            return Err(refuse(
                key,
                true,
                format!("`{key}` is not applied by this version of tapwire ({why})"),
            ));
        }
    }
    let mut categories = Vec::with_capacity(r.only_categories.len());
    for (i, name) in r.only_categories.iter().enumerate() {
        let mut at = path(here, &["only_categories"]);
        at.push(PathStep::Index(i));
        let category = CATEGORIES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| Refusal {
                path: at,
                at_key: false,
                message: format!(
                    "unknown MIME category `{name}`, expected one of `app`, `css`, `js`, \
                     `font`, `image`, `media`, `other`"
                ),
            })?;
        categories.push(category);
    }
    let mut statuses = Vec::with_capacity(r.trigger_status_codes.len());
    for (i, v) in r.trigger_status_codes.iter().enumerate() {
        let text = match v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let mut at = path(here, &["trigger_status_codes"]);
        at.push(PathStep::Index(i));
        statuses.push(StatusPattern::parse(&text).ok_or_else(|| Refusal {
            path: at,
            at_key: false,
            message: format!(
                "`{}` is not a status code: three characters, a digit 1-5 then digits or `x` \
                 (`404`, `5xx`)",
                text.trim()
            ),
        })?);
    }
    let duration_ns = match &r.trigger_duration {
        None => 0,
        Some(v) => parse_duration(v).map_err(|m| refuse("trigger_duration", false, m))?,
    };
    let contains = match r.trigger_contains {
        None => None,
        Some(s) if s.is_empty() => {
            return Err(refuse(
                "trigger_contains",
                false,
                "an empty `trigger_contains` matches nothing (leave the key out)".to_owned(),
            ));
        }
        Some(s) => {
            let re = regex::bytes::Regex::new(&regex::escape(&s))
                .map_err(|e| refuse("trigger_contains", false, e.to_string()))?;
            Some((s, re))
        }
    };
    for (key, urls) in [
        ("only_urls", &r.only_urls),
        ("exclude_urls", &r.exclude_urls),
    ] {
        if let Some(i) = urls.iter().position(|u| !u.contains("://")) {
            let mut at = path(here, &[key]);
            at.push(PathStep::Index(i));
            return Err(Refusal {
                path: at,
                at_key: false,
                message: format!(
                    "`{}` is not a URL: entries are whole URLs as in events \
                     (`https://api.example.com/v1/login`), compared exactly",
                    urls[i]
                ),
            });
        }
    }
    let rule = DetectRule {
        name: r.name,
        categories,
        statuses,
        empty_body: r.trigger_empty_body,
        duration_ns,
        contains,
        only_urls: r.only_urls,
        exclude_urls: r.exclude_urls,
        report: r.report_as_issue,
        record: Record {
            req_headers: r.record_req_headers,
            req_body: r.record_req_body,
            res_headers: r.record_res_headers,
            res_body: r.record_res_body,
        },
    };
    if rule.statuses.is_empty()
        && rule.categories.is_empty()
        && !rule.empty_body
        && rule.duration_ns == 0
        && rule.contains.is_none()
        && rule.only_urls.is_empty()
        && rule.exclude_urls.is_empty()
    {
        return Err(refuse(
            "name",
            true,
            "the rule has no trigger (`trigger_status_codes`, `trigger_empty_body`, \
             `trigger_duration`, `trigger_contains`, `only_categories`, `only_urls`, \
             `exclude_urls`): it would never fire"
                .to_owned(),
        ));
    }
    Ok(rule)
}

/// `trigger_duration` in nanoseconds: a number of milliseconds (YAML number
/// or a string of digits), or Go's duration syntax (`10s`, `1m30s`, `250ms`);
/// `0` means no duration trigger, as in Qtap.
fn parse_duration(v: &serde_yaml::Value) -> Result<u64, String> {
    let bad = |what: &str| {
        format!(
            "`{what}` is not a duration: milliseconds (`1500`) or a number with a unit \
             (`10s`, `250ms`, `1m30s`; units `ns`, `us`, `ms`, `s`, `m`, `h`)"
        )
    };
    match v {
        serde_yaml::Value::Number(n) => {
            let ms = n.as_f64().unwrap_or(-1.0);
            if !(0.0..=1e12).contains(&ms) {
                return Err(format!("`{n}` is not a duration of 0 or more milliseconds"));
            }
            Ok((ms * 1e6) as u64)
        }
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                let ms: u64 = s.parse().map_err(|_| bad(s))?;
                return ms.checked_mul(1_000_000).ok_or_else(|| bad(s));
            }
            go_duration(s).ok_or_else(|| bad(s))
        }
        _ => Err(bad(serde_yaml::to_string(v).unwrap_or_default().trim())),
    }
}

/// Go's `time.ParseDuration` for durations of 0 or more, in nanoseconds.
fn go_duration(s: &str) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * scale;
        rest = next;
    }
    (total <= u64::MAX as f64).then_some(total as u64)
}

/// Takes out of `txn` the parts `want` names that `objects` (what
/// `http_capture` stores) does not hold yet, and adds them.
pub fn record(txn: &mut Transaction, want: Record, objects: &mut ObjectParts) {
    if !want.any() {
        return;
    }
    let held: ObjectRoles = objects.iter().map(|(role, _, _)| *role).collect();
    objects.extend(txn.take_objects(|role| want.has(role) && !held.contains(&role)));
}

/// The `issue` event JSON of `firing` for `txn`; `refs`: the transaction's
/// stored objects (the issue names those its rule recorded).
pub fn issue_json(
    txn: &Transaction,
    firing: &Firing,
    refs: &[ObjectRef],
    exe: Option<&str>,
    origin: &Origin<'_>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        schema: u32,
        #[serde(serialize_with = "event_fields::display")]
        timestamp: WallTime,
        #[serde(flatten)]
        identity: TxnIdentity<'a>,
        start_ns: u64,
        duration_ms: f64,
        error: &'a str,
        trigger_conditions: Vec<&'static str>,
        trigger_reasons: Vec<&'a str>,
        objects: Vec<&'a ObjectRef>,
    }
    let event = Event {
        kind: "issue",
        schema: EVENT_SCHEMA,
        timestamp: WallTime::of_monotonic(txn.end_ns),
        identity: txn.identity(exe, origin),
        start_ns: txn.start_ns,
        duration_ms: txn.end_ns.saturating_sub(txn.start_ns) as f64 / 1e6,
        error: &firing.rule,
        trigger_conditions: firing.triggers.iter().map(|t| t.condition.name()).collect(),
        trigger_reasons: firing.triggers.iter().map(|t| t.reason.as_str()).collect(),
        objects: refs.iter().filter(|r| firing.record.has(r.role)).collect(),
    };
    event_bytes(&event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::txn::Message;

    /// A GET of `/x` answered by `status` with `content_type` and `body`,
    /// taking `ms` milliseconds.
    fn txn(status: u16, content_type: &str, body: &[u8], ms: u64) -> Transaction {
        let mut response = Message::default();
        response.headers = [("Content-Type", content_type)].into_iter().collect();
        response.body = body.to_vec();
        response.body_bytes = body.len() as u64;
        let base = Transaction::for_test();
        Transaction {
            status: Some(status),
            response,
            end_ns: base.start_ns + ms * 1_000_000,
            ..base
        }
    }

    /// The rules of `yaml` (a `detect_errors` config) compiled.
    fn rules(yaml: &str) -> DetectErrors {
        let config: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        compile(&[], Some(&config)).unwrap()
    }

    /// The triggers of each rule that fires for `t`, by rule name.
    fn fired(d: &DetectErrors, t: &Transaction) -> Vec<(String, Vec<(&'static str, String)>)> {
        d.check(t, "http://a.test/x")
            .into_iter()
            .map(|f| {
                let triggers = f
                    .triggers
                    .into_iter()
                    .map(|t| (t.condition.name(), t.reason))
                    .collect();
                (f.rule, triggers)
            })
            .collect()
    }

    #[test]
    fn every_condition_of_a_rule_must_hold_and_each_rule_fires_on_its_own() {
        let d = rules(
            r#"rules:
  - {name: errors, trigger_status_codes: ["5xx", "404"]}
  - {name: slow json errors, trigger_status_codes: ["5xx"], trigger_duration: 1s, only_categories: [app]}
  - {name: empty, trigger_empty_body: true}
  - {name: says oops, trigger_contains: oops, exclude_urls: ["http://a.test/y"]}
  - {name: not here, trigger_status_codes: ["5xx"], exclude_urls: ["http://a.test/x"]}
  - {name: only there, trigger_status_codes: ["5xx"], only_urls: ["http://a.test/y"]}
"#,
        );
        let status = |code: &str, p: &str| {
            (
                "detect_errors:status",
                format!("response status code [{code}] matched [{p}]"),
            )
        };
        // A fast 503 with a body: only the status rule.
        let t = txn(503, "application/json; charset=utf-8", b"{}", 5);
        assert_eq!(
            fired(&d, &t),
            [("errors".to_owned(), vec![status("503", "5xx")])]
        );
        // Slow: the second rule too, its reasons in Qtap's order and words.
        let t = txn(503, "application/json; charset=utf-8", b"{}", 1500);
        let got = fired(&d, &t);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[1],
            (
                "slow json errors".to_owned(),
                vec![
                    (
                        "detect_errors:mime",
                        "response content-type [application/json; charset=utf-8] matched \
                         category [app]"
                            .to_owned()
                    ),
                    status("503", "5xx"),
                    (
                        "detect_errors:duration",
                        "duration [1.5s] exceeded threshold [1s]".to_owned()
                    ),
                ]
            )
        );
        // Slow but an image: the category does not hold.
        let t = txn(503, "image/png", b"x", 1500);
        assert_eq!(fired(&d, &t).len(), 1);
        // A 404 with an empty body; a 200 that says oops.
        let t = txn(404, "text/plain", b"", 5);
        let names: Vec<String> = fired(&d, &t).into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["errors", "empty"]);
        let t = txn(200, "text/plain", b"an oops happened", 5);
        assert_eq!(
            fired(&d, &t),
            [(
                "says oops".to_owned(),
                vec![
                    ("detect_errors:url", "url not in exclude list".to_owned()),
                    (
                        "detect_errors:body",
                        "response body contains the specified content".to_owned()
                    ),
                ]
            )]
        );
        // A 200 with a body: nothing fires, nothing allocated for it.
        assert!(
            d.check(&txn(200, "text/plain", b"fine", 5), "http://a.test/x")
                .is_empty()
        );
    }

    #[test]
    fn mime_categories_are_qtaps() {
        for (ct, want) in [
            ("text/html; charset=utf-8", "app"),
            ("Application/JSON", "app"),
            ("application/grpc", "app"),
            ("text/css", "css"),
            ("text/javascript", "js"),
            ("font/woff2", "font"),
            ("image/svg+xml", "image"),
            ("video/mp4", "media"),
            ("audio/ogg", "media"),
            ("application/octet-stream", "other"),
            ("", "other"),
        ] {
            assert_eq!(MimeCategory::of(ct).name(), want, "{ct}");
        }
    }

    #[test]
    fn status_patterns_match_codes_and_classes() {
        let p = |t| StatusPattern::parse(t).unwrap();
        assert!(p("5xx").matches(503));
        assert!(p("5XX").matches(500));
        assert!(!p("5xx").matches(200));
        assert!(p("404").matches(404));
        assert!(!p("404").matches(403));
        assert!(p("4x4").matches(414));
        for bad in ["", "50", "5000", "x00", "600", "0xx", "5a0", " 50"] {
            assert_eq!(StatusPattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations_read_as_qtap_reads_them_and_print_as_go_prints_them() {
        let v = |y: &str| serde_yaml::from_str::<serde_yaml::Value>(y).unwrap();
        assert_eq!(parse_duration(&v("1500")), Ok(1_500_000_000));
        assert_eq!(parse_duration(&v("'250'")), Ok(250_000_000));
        assert_eq!(parse_duration(&v("10s")), Ok(10_000_000_000));
        assert_eq!(parse_duration(&v("250ms")), Ok(250_000_000));
        assert_eq!(parse_duration(&v("1m30s")), Ok(90_000_000_000));
        assert_eq!(parse_duration(&v("1.5h")), Ok(5_400_000_000_000));
        assert_eq!(parse_duration(&v("300us")), Ok(300_000));
        assert_eq!(parse_duration(&v("0")), Ok(0));
        for bad in ["10", "-1s", "10 s", "1d", "s", "1..5s", "[1]"] {
            let value = if bad == "10" { v("ten") } else { v(bad) };
            assert!(parse_duration(&value).is_err(), "{bad}");
        }
        assert!(parse_duration(&v("-5")).is_err());
        let go = |ns| GoDuration(ns).to_string();
        assert_eq!(go(250_000_000), "250ms");
        assert_eq!(go(1_500_000_000), "1.5s");
        assert_eq!(go(90_000_000_000), "1m30s");
        assert_eq!(go(3_600_000_000_000), "1h0m0s");
        assert_eq!(go(1_000_000), "1ms");
        assert_eq!(go(1_234_000), "1.234ms");
        assert_eq!(go(0), "0s");
    }
}
