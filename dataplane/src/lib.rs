//! The tapwire agent: configuration, the probe loader, readers, shards and the
//! glue from captured records to event and object stores.

pub mod agent;
pub mod attribution;
pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
pub mod logging;
pub mod pipeline;
pub mod plan;
pub mod plugins;
pub mod privileges;
pub mod reload;
pub mod signals;
pub mod status;
