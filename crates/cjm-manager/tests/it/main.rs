//! The manager on real workers: manifests in a scratch search path pointing at the
//! test venv's interpreter and `tests/fixtures/manager_plugins.py`.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

mod config;
mod lifecycle;
mod oom;
mod real_gpu;
mod scheduling;
mod secrets;
mod shutdown;
mod streams;
mod supervision;
mod support;
mod sysmon;
