//! The shared test set-up (`testkit/`), under the name the suites use.
#![allow(unused_imports, reason = "each test binary uses a subset")]

pub use tapwire_testkit::*;
