//! `cargo xtask`: set-up, run, test.
fn main() {}
