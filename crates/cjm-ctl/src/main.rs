//! `cjm-ctl`, the operator CLI.
fn main() {}
