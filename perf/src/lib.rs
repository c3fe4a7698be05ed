//! tapwire's benchmark harness.
