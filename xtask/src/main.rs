//! `cargo xtask`: builds, demos, tests, benchmarks.
fn main() {}
