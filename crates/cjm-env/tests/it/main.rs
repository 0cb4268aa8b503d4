//! Real environments built with uv from a local wheelhouse, offline.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]
mod conda;
mod envs;
mod install;
mod runtime;
mod support;
mod workers;
