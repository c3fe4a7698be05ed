//! Config reload (SIGHUP, `tapwire reload-config`): the config file is read and
//! validated again; stores whose config changed (or that were removed) are
//! stopped after delivering what they hold, and new ones started, while every
//! shard waits between two deliveries (each delivers through its own store
//! slot, which the reload holds). Unchanged stores keep running untouched, and
//! capture (probes, readers, parsing) is never stopped.
//!
//! An invalid file, a missing credential or a new store that cannot start
//! leaves the old config running; the error (`FILE:LINE:COL: …` for the file)
//! is logged and counted (`tapwire_reloads_total{result="failed"}`).
//!
//! An S3 store's spool is drained into its old bucket during the grace period;
//! what is left (its endpoint unreachable) stays in the spool directory and is
//! uploaded by the store that opens that directory next.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tapwire_store::config::SecretError;

use crate::agent::{StartError, Stores};
use crate::cli::Cli;
use crate::config::{Config, ConfigError};
use crate::pipeline::output::Fanout;

/// How long a replaced store may take to deliver what it holds.
pub const RELOAD_GRACE: Duration = Duration::from_secs(10);

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A credential the new config names is missing.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A new store could not start; the old stores were started again.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Ids of stores stopped (changed or removed).
    pub stopped: Vec<String>,
    /// Ids of stores started (changed or added).
    pub started: Vec<String>,
}

/// Reads the config again and replaces the stores that changed. On error the
/// running config and stores are left as they were.
pub fn reload(
    cli: &Cli,
    current: &mut Config,
    stores: &mut Stores,
    slots: &[Arc<Mutex<Fanout>>],
) -> Result<Outcome, ReloadError> {
    let next = crate::agent::load_config(cli)?;
    for (store, key, secret) in next.secrets() {
        secret.resolve(store, key)?;
    }
    if format!("{:?}{:?}", next.tap, next.stacks)
        != format!("{:?}{:?}", current.tap, current.stacks)
    {
        tracing::warn!("`tap` or `stacks` changed: capture settings apply at the next start");
    }
    let old = &current.services;
    let new = &next.services;
    let mut outcome = Outcome::default();
    for (cfg, store) in old.event_stores.iter().zip(&stores.events) {
        if !new.event_stores.contains(cfg) {
            outcome.stopped.push(store.id().to_owned());
        }
    }
    for (cfg, store) in old.object_stores.iter().zip(&stores.objects) {
        if !new.object_stores.contains(cfg) {
            outcome.stopped.push(store.id().to_owned());
        }
    }
    outcome.started.extend(
        new.event_stores
            .iter()
            .filter(|c| !old.event_stores.contains(c))
            .map(|c| c.id().to_owned()),
    );
    outcome.started.extend(
        new.object_stores
            .iter()
            .filter(|c| !old.object_stores.contains(c))
            .map(|c| c.id().to_owned()),
    );
    if outcome.stopped.is_empty() && outcome.started.is_empty() {
        *current = next;
        return Ok(outcome);
    }

    // Every shard finishes the delivery it is in and waits; the stores it held
    // are let go, so a new S3 store can open a replaced one's spool directory.
    let mut held: Vec<_> = slots
        .iter()
        .map(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()))
        .collect();
    for fanout in &mut held {
        **fanout = Fanout {
            events: Vec::new(),
            objects: Vec::new(),
        };
    }
    let running = stores.keep_unchanged(&current.services, &next.services, RELOAD_GRACE);
    drop(std::mem::take(stores));
    let result = match Stores::start_keeping(&next, &running) {
        Ok(started) => {
            *stores = started;
            *current = next;
            Ok(outcome)
        }
        Err(err) => {
            // Bring back what was stopped, from the old config.
            match Stores::start_keeping(current, &running) {
                Ok(restored) => *stores = restored,
                Err(again) => {
                    tracing::error!(error = %again, "cannot restart the previous stores either");
                    *stores = Stores::from_running(running);
                }
            }
            Err(err.into())
        }
    };
    let fanout = stores.fanout();
    for slot in &mut held {
        **slot = fanout.clone();
    }
    result
}

impl Stores {
    /// The stores as each shard delivers to them.
    pub fn fanout(&self) -> Fanout {
        Fanout {
            events: self.events.clone(),
            objects: self.objects.clone(),
        }
    }
}
