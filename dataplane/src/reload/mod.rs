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
//! uploaded by the store that opens that directory next. Replaced object stores
//! stop before replaced event stores, so the `artifact_record` events of their
//! last uploads still have somewhere to go.
//!
//! Stacks apply at the next start, so the running stacks keep the object store
//! their `http_capture.object_store` names: a reload that would remove it is
//! refused; one that moves it in the list keeps it (stacks route by the index,
//! which the reload updates).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tapwire_store::config::{EventStoreConfig, ObjectStoreConfig, SecretError};
use tapwire_store::{EventStore, ObjectStore, StartContext, StoreStartError, Stores};

use crate::cli::Cli;
use crate::config::{Config, ConfigError, Services};
use crate::pipeline::output::Fanout;
use crate::plugins::route::StoreStillNamed;
use crate::status::ready::Reached;

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
    Start(#[from] StoreStartError),
    /// The new config removes an object store a running stack sends to.
    #[error(transparent)]
    StoreStillNamed(#[from] StoreStillNamed),
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Ids of stores stopped (changed or removed).
    pub stopped: Vec<String>,
    /// Ids of stores started (changed or added).
    pub started: Vec<String>,
}

/// Stores a reload keeps running, with the config each was started from.
#[derive(Default)]
pub struct Running {
    events: Vec<(EventStoreConfig, Arc<dyn EventStore>)>,
    objects: Vec<(ObjectStoreConfig, Arc<dyn ObjectStore>)>,
}

/// Starts the stores of `services`, reusing those in `running` whose config is
/// the same.
pub fn start_stores(
    services: &Services,
    running: &Running,
    context: &mut StartContext,
) -> Result<Stores, StoreStartError> {
    let mut events = Vec::new();
    for cfg in &services.event_stores {
        match running.events.iter().find(|(c, _)| c == cfg) {
            Some((_, kept)) => events.push(Arc::clone(kept)),
            None => events.push(cfg.start(context)?),
        }
    }
    let mut objects = Vec::new();
    for cfg in &services.object_stores {
        match running.objects.iter().find(|(c, _)| c == cfg) {
            Some((_, kept)) => objects.push(Arc::clone(kept)),
            None => objects.push(cfg.start(context)?),
        }
    }
    Ok(Stores { events, objects })
}

/// What `/readyz` asks each store (`reached_destination`); held weakly, so a
/// reload can close a replaced store.
pub fn readiness(stores: &Stores) -> Vec<(&'static str, String, Reached)> {
    let mut out: Vec<(&'static str, String, Reached)> = Vec::new();
    for store in &stores.events {
        out.push(("event", store.id().to_owned(), Box::new(|| true)));
    }
    for store in &stores.objects {
        let weak = Arc::downgrade(store);
        out.push((
            "object",
            store.id().to_owned(),
            Box::new(move || weak.upgrade().is_some_and(|s| s.reached_destination())),
        ));
    }
    out
}

/// Splits `stores` (started from `old`) into those `new` keeps and the rest,
/// which are stopped after delivering what they hold (at most `grace` each).
fn keep_unchanged(stores: &Stores, old: &Services, new: &Services, grace: Duration) -> Running {
    let mut running = Running::default();
    for (cfg, store) in old.object_stores.iter().zip(&stores.objects) {
        if new.object_stores.contains(cfg) {
            running.objects.push((cfg.clone(), Arc::clone(store)));
        } else {
            store.shutdown(grace);
            tracing::info!(store = store.id(), stats = ?store.stats(), "object store replaced");
        }
    }
    for (cfg, store) in old.event_stores.iter().zip(&stores.events) {
        if new.event_stores.contains(cfg) {
            running.events.push((cfg.clone(), Arc::clone(store)));
        } else {
            store.shutdown(grace);
            tracing::info!(store = store.id(), stats = ?store.stats(), "event store replaced");
        }
    }
    running
}

/// Reads the config again and replaces the stores that changed. On error the
/// running config and stores are left as they were.
pub fn reload(
    cli: &Cli,
    current: &mut Config,
    stores: &mut Stores,
    context: &mut StartContext,
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
    if let Some(slot) = slots.first() {
        let ids: Vec<&str> = new.object_stores.iter().map(|c| c.id()).collect();
        let mut running = slot.lock().unwrap_or_else(|e| e.into_inner()).http.clone();
        running.route_stores(&ids)?;
    }
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
    // The same stores in the same order: nothing to do. (Only reordered, they
    // are all kept below, in the new order.)
    if old.event_stores == new.event_stores && old.object_stores == new.object_stores {
        // Only where the records go may have changed.
        if let Some(slot) = slots.first() {
            let fanout = slot.lock().unwrap_or_else(|e| e.into_inner());
            fanout
                .records
                .set(&fanout.events, next.services.record_routes());
        }
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
        fanout.events.clear();
        fanout.objects.clear();
    }
    let running = keep_unchanged(stores, &current.services, &next.services, RELOAD_GRACE);
    *stores = Stores {
        events: Vec::new(),
        objects: Vec::new(),
    };
    let result = match start_stores(&next.services, &running, context) {
        Ok(started) => {
            *stores = started;
            *current = next;
            Ok(outcome)
        }
        Err(err) => {
            // Bring back what was stopped, from the old config.
            match start_stores(&current.services, &running, context) {
                Ok(restored) => *stores = restored,
                Err(again) => {
                    tracing::error!(error = %again, "cannot restart the previous stores either");
                    *stores = Stores {
                        events: running.events.into_iter().map(|(_, s)| s).collect(),
                        objects: running.objects.into_iter().map(|(_, s)| s).collect(),
                    };
                }
            }
            Err(err.into())
        }
    };
    let ids: Vec<&str> = stores.objects.iter().map(|s| s.id()).collect();
    for fanout in &mut held {
        fanout.events.clone_from(&stores.events);
        fanout.objects.clone_from(&stores.objects);
        // Checked above for the new stores; the old ones, if restored, hold
        // every id the stacks name.
        if let Err(error) = fanout.http.route_stores(&ids) {
            tracing::error!(%error, "objects of that stack have no store until restart");
        }
    }
    if let Some(fanout) = held.first() {
        fanout
            .records
            .set(&stores.events, current.services.record_routes());
    }
    result
}
