//! Start-up and shutdown: privileges, config, secrets, stores, capture — in that
//! order, so that a bad config or a missing credential stops the agent before
//! anything is loaded into the kernel.

use std::sync::Arc;
use std::time::Duration;

use tapwire_store::config::{EventStoreConfig, ObjectStoreConfig, SecretError};
use tapwire_store::stdout::{
    STDOUT_QUEUE_LINES, StdoutEventStore, StdoutObjectStore, StdoutWriter,
};
use tapwire_store::{EventStore, ObjectStore, PulseError, PulseStore, S3Error, S3Store};

use crate::cli::Cli;
use crate::config::{self, Config, ConfigError};
use crate::privileges::{self, PrivilegeError};

/// How long shutdown waits for stores to deliver what they hold.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not root, or missing capabilities.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A credential named in the config is not available.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// An S3 store could not be started (the error names the store).
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A pulse store could not be started (the error names the store).
    #[error(transparent)]
    Pulse(#[from] PulseError),
    /// Standard output could not be set up.
    #[error("cannot start the stdout writer")]
    Stdout(#[source] std::io::Error),
    /// Signal handling could not be set up.
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
}

impl StartError {
    /// Process exit code: 2 for a config the user must fix, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Secret(_) => 2,
            _ => 1,
        }
    }
}

/// Every configured store, started.
pub struct Stores {
    /// Event stores; each event goes to every one.
    pub events: Vec<Arc<dyn EventStore>>,
    /// Object stores; each object goes to every one.
    pub objects: Vec<Arc<dyn ObjectStore>>,
}

impl Stores {
    /// Starts every store in `config`. Secrets must already resolve.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let mut stdout: Option<Arc<StdoutWriter>> = None;
        let mut stdout_writer = || -> Result<Arc<StdoutWriter>, StartError> {
            if let Some(w) = &stdout {
                return Ok(w.clone());
            }
            let w = StdoutWriter::start(STDOUT_QUEUE_LINES).map_err(StartError::Stdout)?;
            stdout = Some(w.clone());
            Ok(w)
        };
        let mut events: Vec<Arc<dyn EventStore>> = Vec::new();
        for store in &config.services.event_stores {
            match store {
                EventStoreConfig::Stdout { id } => {
                    events.push(Arc::new(StdoutEventStore::new(id, stdout_writer()?)));
                }
                EventStoreConfig::Pulse(p) => events.push(Arc::new(PulseStore::start(p)?)),
            }
        }
        let mut objects: Vec<Arc<dyn ObjectStore>> = Vec::new();
        for store in &config.services.object_stores {
            match store {
                ObjectStoreConfig::Stdout { id } => {
                    objects.push(Arc::new(StdoutObjectStore::new(id, stdout_writer()?)));
                }
                ObjectStoreConfig::S3(s) => objects.push(Arc::new(S3Store::start(s)?)),
            }
        }
        Ok(Self { events, objects })
    }

    /// Delivers what every store holds, waiting at most `deadline` for each.
    pub fn shutdown(&self, deadline: Duration) {
        for store in &self.events {
            store.shutdown(deadline);
            tracing::info!(store = store.id(), stats = ?store.stats(), "event store stopped");
        }
        for store in &self.objects {
            store.shutdown(deadline);
            tracing::info!(store = store.id(), stats = ?store.stats(), "object store stopped");
        }
    }
}

/// Loads the config named on the command line, or the embedded default.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    match &cli.config {
        Some(path) => config::load_file(path),
        None => config::parse(config::DEFAULT_NAME, config::DEFAULT_YAML),
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(cli: &Cli) -> Result<(), StartError> {
    privileges::check()?;
    let config = load_config(cli)?;
    for (store, key) in config.inline_secrets() {
        tracing::warn!(
            store,
            key,
            "secret written in the config file (`type: text`); prefer `type: env`"
        );
    }
    for (store, key, secret) in config.secrets() {
        secret.resolve(store, key)?;
    }
    let signals = crate::signals::Signals::block().map_err(StartError::Signals)?;
    let stores = Stores::start(&config)?;
    tracing::info!(
        event_stores = stores.events.len(),
        object_stores = stores.objects.len(),
        "tapwire started"
    );
    let signal = signals.wait();
    tracing::info!(signal, "stopping");
    stores.shutdown(SHUTDOWN_GRACE);
    Ok(())
}
