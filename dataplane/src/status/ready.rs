//! Readiness: the probes are attached, and every store has reached its
//! destination at least once since start or the last reload. A store failing
//! later shows in the metrics, not here: an S3 outage must not take every
//! agent out of service at once.
//!
//! stdout stores are ready once started; an S3 store once its bucket check or
//! an upload has succeeded; a pulse store once started (it has no check).

use std::sync::Mutex;

/// Whether a store has reached its destination (called by the status server).
pub type Reached = Box<dyn Fn() -> bool + Send + Sync>;

/// The readiness conditions.
#[derive(Default)]
pub struct Readiness {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    attached: bool,
    stores: Vec<Store>,
}

struct Store {
    what: &'static str,
    id: String,
    reached: Reached,
    /// Latched: once reached, ready until the stores are replaced.
    seen: bool,
}

impl Readiness {
    /// The probes are attached (or, `false`, detached).
    pub fn set_attached(&self, attached: bool) {
        self.lock().attached = attached;
    }

    /// Replaces the watched stores (at start and on reload): `(what, id,
    /// reached)` with `what` `event` or `object`.
    pub fn set_stores(&self, stores: Vec<(&'static str, String, Reached)>) {
        self.lock().stores = stores
            .into_iter()
            .map(|(what, id, reached)| Store {
                what,
                id,
                reached,
                seen: false,
            })
            .collect();
    }

    /// `Ok` when ready, else the reasons, one per line.
    pub fn check(&self) -> Result<(), String> {
        let mut state = self.lock();
        let mut reasons = Vec::new();
        if !state.attached {
            reasons.push("probes not attached yet".to_owned());
        }
        for store in &mut state.stores {
            if !store.seen && (store.reached)() {
                store.seen = true;
            }
            if !store.seen {
                reasons.push(format!(
                    "{} store `{}` has not reached its destination yet",
                    store.what, store.id
                ));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("\n"))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn ready_once_attached_and_every_store_reached_and_it_stays_so() {
        let readiness = Readiness::default();
        let up = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&up);
        readiness.set_stores(vec![
            ("event", "console".into(), Box::new(|| true)),
            (
                "object",
                "s3".into(),
                Box::new(move || flag.load(Ordering::Relaxed)),
            ),
        ]);
        assert_eq!(
            readiness.check().unwrap_err(),
            "probes not attached yet\nobject store `s3` has not reached its destination yet"
        );
        readiness.set_attached(true);
        assert!(readiness.check().unwrap_err().contains("`s3`"));
        up.store(true, Ordering::Relaxed);
        assert_eq!(readiness.check(), Ok(()));
        up.store(false, Ordering::Relaxed);
        assert_eq!(readiness.check(), Ok(()), "a later failure keeps it ready");
    }
}
