//! Fault injection for tests; compiled only with the `fault-injection` cargo
//! feature, so release builds carry no switch.
//!
//! `TAPWIRE_FAULT_STALL=shard`: a shard thread that has just moved records
//! stops for good, as if stuck in a call, with the rest of its work waiting.

use std::sync::OnceLock;

/// The environment variable naming the kind of thread to stall.
pub const ENV_STALL: &str = "TAPWIRE_FAULT_STALL";

/// Called by a pipeline thread of kind `kind` (`shard`) after it moved work;
/// never returns when the switch names that kind.
pub fn stall_point(kind: &str) {
    static STALL: OnceLock<Option<String>> = OnceLock::new();
    let stall = STALL.get_or_init(|| std::env::var(ENV_STALL).ok());
    if stall.as_deref() == Some(kind) {
        tracing::warn!(kind, "fault injection: stalling this thread");
        loop {
            std::thread::park();
        }
    }
}
