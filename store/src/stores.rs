//! Every configured store, started together and stopped together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{EventStoreConfig, ObjectStoreConfig};
use crate::stdout::{STDOUT_QUEUE_LINES, StdoutWriter};
use crate::{EventStore, ObjectStore, PulseError, S3Error};

/// A store could not be started (the error names the store).
#[derive(Debug, thiserror::Error)]
pub enum StoreStartError {
    /// An S3 store.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A pulse store.
    #[error(transparent)]
    Pulse(#[from] PulseError),
    /// Standard output could not be set up.
    #[error("cannot start the stdout writer")]
    Stdout(#[source] std::io::Error),
}

/// What stores of different kinds share while starting.
pub struct StartContext {
    stdout: Option<Arc<StdoutWriter>>,
    memory: StoreMemory,
}

impl Default for StartContext {
    fn default() -> Self {
        Self::new(StoreMemory::default())
    }
}

/// Payload bytes a store's in-memory queue holds at most, unless the agent
/// sets it from its memory budget.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;

/// The memory stores may take, which the agent sets from its memory budget
/// (see docs/config.md, `memory_budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMemory {
    /// Payload bytes each store's in-memory queue holds at most (the stdout
    /// writer, the S3 spool writer). Past it a store pushes back (see
    /// [`crate::room`]): set below the memory budget, so that a slow store
    /// slows capture down before the budget runs out and bodies are shed.
    pub queue_bytes: u64,
    /// Memory an S3 store's index of the objects waiting in its spool may
    /// take ([`crate::spool::dir::objects_within`]); past it new objects are
    /// refused as `spool_full`.
    pub index_bytes: u64,
    /// Memory an S3 store's announcements waiting in memory for their
    /// objects' uploads may take ([`crate::spool::dir::notices_within`]);
    /// past it they wait on disk.
    pub notice_bytes: u64,
}

impl Default for StoreMemory {
    fn default() -> Self {
        Self {
            queue_bytes: DEFAULT_QUEUE_BYTES,
            index_bytes: DEFAULT_QUEUE_BYTES,
            notice_bytes: crate::spool::dir::MAX_NOTICES as u64 * crate::spool::dir::NOTICE_BYTES,
        }
    }
}

impl StartContext {
    /// Stores that take at most `memory`.
    pub fn new(memory: StoreMemory) -> Self {
        Self {
            stdout: None,
            memory,
        }
    }

    /// See [`StartContext::new`].
    pub fn memory(&self) -> StoreMemory {
        self.memory
    }

    /// The one standard-output writer all stdout stores share, so lines never
    /// interleave.
    pub fn stdout(&mut self) -> Result<Arc<StdoutWriter>, StoreStartError> {
        if let Some(writer) = &self.stdout {
            return Ok(Arc::clone(writer));
        }
        let writer = StdoutWriter::start(STDOUT_QUEUE_LINES, self.memory.queue_bytes)
            .map_err(StoreStartError::Stdout)?;
        self.stdout = Some(Arc::clone(&writer));
        Ok(writer)
    }
}

/// The part of a shutdown deadline kept for the event stores, after the
/// object stores: a quarter of it, at most [`EVENT_SHARE_MAX`].
pub fn event_share(deadline: Duration) -> Duration {
    (deadline / 4).min(EVENT_SHARE_MAX)
}

/// At most this much of a shutdown deadline is kept for the event stores:
/// standard output or a pulse receiver takes a backlog of announcements in
/// well under it.
pub const EVENT_SHARE_MAX: Duration = Duration::from_secs(2);

/// Every configured store, started.
pub struct Stores {
    /// Event stores; each event goes to every one.
    pub events: Vec<Arc<dyn EventStore>>,
    /// Object stores; each object goes to every one.
    pub objects: Vec<Arc<dyn ObjectStore>>,
}

impl Stores {
    /// Starts every store, in file order. Secrets must already resolve.
    pub fn start(
        events: &[EventStoreConfig],
        objects: &[ObjectStoreConfig],
    ) -> Result<Self, StoreStartError> {
        let mut ctx = StartContext::default();
        Ok(Self {
            events: events
                .iter()
                .map(|s| s.start(&mut ctx))
                .collect::<Result<_, _>>()?,
            objects: objects
                .iter()
                .map(|s| s.start(&mut ctx))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Stops every store within one `deadline` for all of them: object stores
    /// first, in parallel (each spools or uploads what it holds), then event
    /// stores, in parallel, with what is left of the deadline.
    ///
    /// Object stores stop [`event_share`] before the deadline, whether or not
    /// they have finished: an S3 store uploads its spool until its deadline
    /// and announces the last uploads as it stops, and those announcements
    /// are events. Given the whole deadline it left the event stores none to
    /// write them in, and they were counted unwritten. An object not uploaded
    /// by then stays in the spool for the next start; an event not written is
    /// lost.
    pub fn shutdown(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let objects_until = until - event_share(deadline);
        std::thread::scope(|scope| {
            for store in &self.objects {
                scope.spawn(move || {
                    store.shutdown(objects_until.saturating_duration_since(Instant::now()));
                    tracing::info!(store = store.id(), stats = ?store.stats(), "object store stopped");
                });
            }
        });
        std::thread::scope(|scope| {
            for store in &self.events {
                scope.spawn(move || {
                    store.shutdown(until.saturating_duration_since(Instant::now()));
                    tracing::info!(store = store.id(), stats = ?store.stats(), "event store stopped");
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::s3::AccessUrl;
    use crate::{Object, StoreStats, Ticket};

    /// An event store that keeps what it is given and the deadline it was
    /// stopped with.
    #[derive(Default)]
    struct Kept {
        events: Mutex<Vec<Bytes>>,
        deadline: Mutex<Option<Duration>>,
    }

    impl EventStore for Kept {
        fn id(&self) -> &str {
            "events"
        }
        fn emit(&self, event: Bytes) {
            self.events.lock().unwrap().push(event);
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
        fn shutdown(&self, deadline: Duration) {
            *self.deadline.lock().unwrap() = Some(deadline);
        }
    }

    /// An object store that, like an S3 store with a backlog, works until its
    /// deadline and announces its last objects as it stops.
    struct Busy {
        events: Arc<Kept>,
        deadline: Mutex<Option<Duration>>,
    }

    impl ObjectStore for Busy {
        fn id(&self) -> &str {
            "objects"
        }
        fn put_with(&self, _: Object, _: Ticket) {}
        fn access_url(&self) -> Option<&AccessUrl> {
            None
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
        fn shutdown(&self, deadline: Duration) {
            *self.deadline.lock().unwrap() = Some(deadline);
            std::thread::sleep(deadline);
            self.events
                .emit(Bytes::from_static(b"{\"type\":\"artifact_record\"}"));
        }
    }

    #[test]
    fn event_stores_keep_their_share_of_a_deadline_the_object_stores_use_up() {
        let events = Arc::new(Kept::default());
        let busy = Arc::new(Busy {
            events: Arc::clone(&events),
            deadline: Mutex::new(None),
        });
        let stores = Stores {
            events: vec![Arc::clone(&events) as Arc<dyn EventStore>],
            objects: vec![Arc::clone(&busy) as Arc<dyn ObjectStore>],
        };
        let deadline = Duration::from_secs(2);
        let began = Instant::now();
        stores.shutdown(deadline);
        let took = began.elapsed();

        let objects_had = busy.deadline.lock().unwrap().unwrap();
        let events_had = events.deadline.lock().unwrap().unwrap();
        assert!(
            objects_had <= deadline - event_share(deadline),
            "object stores had {objects_had:?} of {deadline:?}"
        );
        // The object store's last announcement reached the event store before
        // it was stopped, with its share of the deadline still to write it in.
        assert_eq!(events.events.lock().unwrap().len(), 1);
        assert!(
            events_had >= event_share(deadline) - Duration::from_millis(100),
            "event stores had {events_had:?}, expected about {:?}",
            event_share(deadline)
        );
        assert!(
            took <= deadline + Duration::from_millis(100),
            "took {took:?}"
        );
    }

    #[test]
    fn the_event_share_is_a_quarter_of_the_deadline_up_to_two_seconds() {
        assert_eq!(
            event_share(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(event_share(Duration::from_secs(14)), EVENT_SHARE_MAX);
        assert_eq!(event_share(Duration::ZERO), Duration::ZERO);
    }
}
