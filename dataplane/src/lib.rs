//! The tapwire agent: configuration, the probe loader, readers, shards and the
//! glue from captured records to event and object stores.

pub mod capture;
pub mod cli;
