//! cjm-sched's decisions, one situation per test, on hand-built views and a
//! manual clock; its monitors against real processes and the fake GPU's folder.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

mod eviction;
mod fit;
mod hammer;
mod monitors;
mod real_gpu;
mod support;
