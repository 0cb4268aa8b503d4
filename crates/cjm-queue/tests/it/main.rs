//! The queue on real workers (the manager's fixture plugins) and real `SQLite`.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

mod client;
mod control;
mod durability;
mod reports;
mod runs;
mod scale;
mod sequences;
mod support;
