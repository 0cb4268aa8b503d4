//! Integration tests: real worker processes running real plugins.
#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

mod support;

mod buffers;
mod calls;
mod cancel;
mod clock;
mod death;
mod errors;
mod forkserver;
mod host_death;
mod isolation;
