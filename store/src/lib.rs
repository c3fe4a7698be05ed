//! tapwire's stores: where events (metadata) and objects (payloads) go.

pub mod config;
