//! Plugin stacks: what each HTTP transaction becomes.
//!
//! The stacks of a config are compiled once at load ([`compile`]) into an
//! [`HttpPlan`]: the stack `tap.http` names, and per-domain stacks from
//! `tap.endpoints`. The output stage picks a transaction's stack by its domain,
//! runs the `http_capture` rules on it (first match wins) and stores the
//! objects its level and format call for, and emits the request event if the
//! stack has `report_usage`. Only what tapwire applies is accepted: any other
//! plugin, level, format or key is refused with its location, never ignored.
//!
//! - [`stack`]: config to plan.
//! - [`capture`]: `http_capture` levels and formats (Qtap's `http_transaction`
//!   layouts and tapwire's parts).
//! - [`fields`]: the fields rule expressions read.

pub mod capture;
pub mod fields;
pub mod stack;

pub use capture::{Format, Level};
pub use stack::{HttpPlan, PathStep, Refusal, StackError, StackPlan, compile};
