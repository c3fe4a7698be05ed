//! Credentials in store entries: `{type: env | text, value}`.

use serde::{Deserialize, Serialize};

/// A credential: read from the environment (`type: env`) or given inline (`type: text`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Where the value comes from.
    #[serde(rename = "type")]
    pub source: SecretSource,
    /// The environment variable's name (`env`) or the secret itself (`text`).
    pub value: String,
}

/// Where a [`Secret`]'s value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// `value` names an environment variable, read at start-up.
    Env,
    /// `value` is the secret itself (accepted with a warning: it sits in the file).
    Text,
}

/// A secret resolution failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The named variable is unset or empty.
    #[error("store `{store}`: environment variable `{var}` for `{key}` is not set")]
    Unset {
        /// The store id.
        store: String,
        /// The config key holding the secret (`access_key`, `token`, …).
        key: &'static str,
        /// The environment variable.
        var: String,
    },
    /// The named variable is set to the empty string.
    #[error("store `{store}`: environment variable `{var}` for `{key}` is empty")]
    Empty {
        /// The store id.
        store: String,
        /// The config key holding the secret.
        key: &'static str,
        /// The environment variable.
        var: String,
    },
}

impl Secret {
    /// Resolves the secret's value now, reading the environment for `type: env`.
    pub fn resolve(&self, store: &str, key: &'static str) -> Result<String, SecretError> {
        match self.source {
            SecretSource::Text => Ok(self.value.clone()),
            SecretSource::Env => match std::env::var_os(&self.value) {
                None => Err(SecretError::Unset {
                    store: store.to_owned(),
                    key,
                    var: self.value.clone(),
                }),
                Some(v) if v.is_empty() => Err(SecretError::Empty {
                    store: store.to_owned(),
                    key,
                    var: self.value.clone(),
                }),
                Some(v) => Ok(v.to_string_lossy().into_owned()),
            },
        }
    }

    /// How the secret is shown in `check-config` output: never its value.
    pub fn describe(&self) -> String {
        match self.source {
            SecretSource::Env => format!("env:{}", self.value),
            SecretSource::Text => "text:********".to_owned(),
        }
    }
}
