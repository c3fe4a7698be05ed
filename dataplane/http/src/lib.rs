//! HTTP parsers for tapwire: pure functions over byte slices, no I/O.
