//! The agent's pipeline modules, compiled from their own sources for the fuzz
//! targets: the `tapwire` crate itself needs the eBPF toolchain and the store's
//! network stack, which a sanitizer build must not pull in. The files are the
//! agent's, unchanged; only the modules a shard and its events need are here.

#[path = "../../dataplane/src/attribution.rs"]
pub mod attribution;

/// The shard, its inputs and the transactions it emits.
#[path = "../../dataplane/src/pipeline"]
pub mod pipeline {
    pub mod budget;
    pub mod event_fields;
    pub mod input;
    pub mod reorder;
    pub mod shard;
    pub mod txn;
}

// The event writer names its calendar helper by the store crate's path; this
// crate stands in for it with the same std-only file.
extern crate self as tapwire_store;

#[path = "../../store/src/calendar.rs"]
pub mod calendar;

#[path = "../../store/src/hex.rs"]
pub mod hex;

#[path = "../../store/src/access_url.rs"]
pub mod access_url;

/// The store crate's digest type, for `hex`.
pub type Digest = blake3::Hash;
