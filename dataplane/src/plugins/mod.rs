//! Plugin stacks: what each HTTP transaction becomes.
//!
//! A stack is compiled once at load into an [`HttpPlan`]; the output stage
//! asks it per finished transaction whether to store objects and emit the
//! request event. Only what tapwire applies is accepted: any other plugin,
//! level, format or key is refused with its location, never ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{Stack, Tap};

/// What each HTTP transaction becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPlan {
    /// The stack applied (`None`: the built-in default, or no HTTP handling).
    pub stack: Option<String>,
    /// Store the transaction's header blocks and bodies as objects
    /// (`http_capture` level `full`).
    pub objects: bool,
    /// Emit the `http_transaction` event (`report_usage`).
    pub events: bool,
}

impl HttpPlan {
    /// The plan of a file without `stacks`: every transaction stored in full,
    /// with its event.
    pub const fn default_full() -> Self {
        Self {
            stack: None,
            objects: true,
            events: true,
        }
    }

    /// One line for `check-config`.
    pub fn describe(&self) -> String {
        let stack = match &self.stack {
            Some(name) => format!("stack `{name}`"),
            None if self.objects || self.events => {
                "built-in default (no `stacks` in the file)".to_owned()
            }
            None => {
                "no stack (`tap.http` names none): HTTP transactions are not recorded".to_owned()
            }
        };
        format!(
            "{stack}; objects={} request_events={}",
            if self.objects { "full" } else { "none" },
            self.events
        )
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

fn key(k: &str) -> PathStep {
    PathStep::Key(k.to_owned())
}

/// Plugin types Qtap defines that tapwire does not apply yet.
const NOT_YET: &[&str] = &[
    "access_logs",
    "debug",
    "http_metrics",
    "detect_errors",
    "logger",
    "data_loss_protection",
    "qscan",
    "llm",
];

/// `http_capture` settings as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpCaptureConfig {
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    format: Option<serde_yaml::Value>,
    #[serde(default)]
    object_store: Option<serde_yaml::Value>,
    #[serde(default)]
    rules: Option<serde_yaml::Value>,
}

/// Compiles the HTTP handling of a config: the stack `tap.http` names, or the
/// built-in default when the file has no `stacks`.
pub fn compile(stacks: &BTreeMap<String, Stack>, tap: &Tap) -> Result<HttpPlan, Refusal> {
    let named = tap
        .http
        .as_ref()
        .map(|http| http.stack.as_str())
        .filter(|name| !name.is_empty() && *name != "none");
    if stacks.is_empty() && tap.http.is_none() {
        return Ok(HttpPlan::default_full());
    }
    // Every stack is checked, used or not: nothing written is left unchecked.
    let mut compiled = BTreeMap::new();
    for (name, stack) in stacks {
        compiled.insert(name.as_str(), compile_stack(name, stack)?);
    }
    let Some(name) = named else {
        return Ok(HttpPlan {
            stack: None,
            objects: false,
            events: false,
        });
    };
    compiled.remove(name).ok_or_else(|| Refusal {
        path: vec![key("tap"), key("http"), key("stack")],
        at_key: false,
        message: format!("unknown stack `{name}`"),
    })
}

/// Compiles one named stack.
fn compile_stack(name: &str, stack: &Stack) -> Result<HttpPlan, Refusal> {
    let name = name.to_owned();
    let mut plan = HttpPlan {
        stack: Some(name.clone()),
        objects: false,
        events: false,
    };
    for (i, plugin) in stack.plugins.iter().enumerate() {
        let here = vec![
            key("stacks"),
            key(&name),
            key("plugins"),
            PathStep::Index(i),
        ];
        let at = |step: &str, at_key: bool, message: String| {
            let mut path = here.clone();
            path.push(key(step));
            Refusal {
                path,
                at_key,
                message,
            }
        };
        match plugin.kind.as_str() {
            "http_capture" => {
                let cfg: HttpCaptureConfig = match &plugin.config {
                    Some(v) => serde_yaml::from_value(v.clone())
                        .map_err(|e| at("config", true, e.to_string()))?,
                    None => HttpCaptureConfig {
                        level: None,
                        format: None,
                        object_store: None,
                        rules: None,
                    },
                };
                let not_yet = |k: &str| {
                    let mut path = here.clone();
                    path.extend([key("config"), key(k)]);
                    Refusal {
                        path,
                        at_key: true,
                        message: format!(
                            "`http_capture.{k}` is not applied by this version of tapwire"
                        ),
                    }
                };
                for (k, present) in [
                    ("format", cfg.format.is_some()),
                    ("object_store", cfg.object_store.is_some()),
                    ("rules", cfg.rules.is_some()),
                ] {
                    if present {
                        return Err(not_yet(k));
                    }
                }
                let level_error = |message: String| {
                    let mut path = here.clone();
                    path.extend([key("config"), key("level")]);
                    Refusal {
                        path,
                        at_key: false,
                        message,
                    }
                };
                match cfg.level.as_deref().unwrap_or("none") {
                    "none" => {}
                    "full" => plan.objects = true,
                    level @ ("summary" | "headers" | "details") => {
                        return Err(level_error(format!(
                            "level `{level}` is not applied by this version of tapwire \
                             (`full` or `none`)"
                        )));
                    }
                    other => {
                        return Err(level_error(format!(
                            "unknown level `{other}`, expected one of `none`, `summary`, \
                             `headers`, `details`, `full`"
                        )));
                    }
                }
            }
            "report_usage" => {
                if plugin.config.is_some() {
                    return Err(at(
                        "config",
                        true,
                        "`report_usage` takes no settings in tapwire".to_owned(),
                    ));
                }
                plan.events = true;
            }
            kind if NOT_YET.contains(&kind) => {
                return Err(at(
                    "type",
                    false,
                    format!("plugin `{kind}` is not applied by this version of tapwire"),
                ));
            }
            kind => {
                return Err(at(
                    "type",
                    false,
                    format!(
                        "unknown plugin type `{kind}`, expected one of `http_capture`, \
                         `report_usage`"
                    ),
                ));
            }
        }
    }
    Ok(plan)
}
