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
    queue_bytes: u64,
}

impl Default for StartContext {
    fn default() -> Self {
        Self::new(DEFAULT_QUEUE_BYTES)
    }
}

/// Payload bytes a store's in-memory queue holds at most, unless the agent
/// sets it from its memory budget.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;

impl StartContext {
    /// Stores whose in-memory queues hold at most `queue_bytes` of payload
    /// each (the stdout writer, the S3 spool writer). Past it a store pushes
    /// back (see [`crate::room`]): the agent sets it below its memory budget so
    /// that a slow store slows capture down before the budget runs out and
    /// bodies are shed.
    pub fn new(queue_bytes: u64) -> Self {
        Self {
            stdout: None,
            queue_bytes,
        }
    }

    /// See [`StartContext::new`].
    pub fn queue_bytes(&self) -> u64 {
        self.queue_bytes
    }

    /// The one standard-output writer all stdout stores share, so lines never
    /// interleave.
    pub fn stdout(&mut self) -> Result<Arc<StdoutWriter>, StoreStartError> {
        if let Some(writer) = &self.stdout {
            return Ok(Arc::clone(writer));
        }
        let writer = StdoutWriter::start(STDOUT_QUEUE_LINES, self.queue_bytes)
            .map_err(StoreStartError::Stdout)?;
        self.stdout = Some(Arc::clone(&writer));
        Ok(writer)
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
    pub fn shutdown(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        std::thread::scope(|scope| {
            for store in &self.objects {
                scope.spawn(move || {
                    store.shutdown(until.saturating_duration_since(Instant::now()));
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
