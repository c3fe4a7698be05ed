//! Plugin stacks: what each HTTP transaction becomes.
//!
//! The stacks of a config are compiled once at load ([`compile`]) into an
//! [`HttpPlan`]: the stack `tap.http` names, and per-domain stacks from
//! `tap.endpoints`. The output stage picks a transaction's stack by its domain,
//! runs the `http_capture` rules on it (first match wins) and stores the
//! objects its level and format call for, and emits the request event if the
//! stack has `report_usage`; `http_metrics` counts it on the status server and
//! `access_logs` writes its entry to stderr; `detect_errors` writes an `issue`
//! event per firing rule and stores the parts its rules record. Only what tapwire applies is accepted: any other
//! plugin, level, format or key is refused with its location, never ignored.
//!
//! - [`stack`]: config to plan.
//! - [`access_log`]: `access_logs` entries and their writer.
//! - [`capture`]: `http_capture` levels and formats (Qtap's `http_transaction`
//!   layouts and tapwire's parts).
//! - [`detect`]: `detect_errors` rules, their `issue` events and recorded parts.
//! - [`fields`]: the fields rule expressions read.
//! - [`route`]: which object stores a stack's objects go to.

pub mod access_log;
pub mod capture;
pub mod detect;
pub mod fields;
pub mod route;
pub mod stack;

pub use capture::{Format, Level};
pub use route::StoreRoute;
pub use stack::{AccessLogs, HttpPlan, PathStep, Refusal, StackError, StackPlan, compile};
