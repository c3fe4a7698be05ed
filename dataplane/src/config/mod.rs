//! `qpoint.yaml` (version 2): the model, the strict loader with `file:line:col`
//! errors, and the embedded default.

mod load;
mod locate;
mod model;

pub(crate) use load::unknown_id;
pub use load::{ConfigError, load_file, parse};
pub use model::{
    ByteSize, Config, CustomFilter, Direction, Endpoint, Filters, GroupFilter, HttpTap, Layer,
    Macro, MatchStrategy, Plugin, RecordsTo, Rulekit, Seconds, Services, Stack, Tap, Tapwire,
};

/// The config used when none is given: events and objects to stdout.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// The name shown for [`DEFAULT_YAML`] in messages.
pub const DEFAULT_NAME: &str = "<embedded default>";
