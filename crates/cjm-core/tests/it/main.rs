//! cjm-core's integration tests, one module per area. Fixtures under
//! `tests/fixtures/` were generated from the Python reference by the `gen_*.py`
//! scripts beside them; the tests only read them.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns read fixtures; a malformed fixture should fail the test"
)]

mod classify;
mod config;
mod hashing;
mod job_error;
mod metadata;
mod plugin_error;
mod taxonomy;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `UNIX_EPOCH` moved by `seconds` (negative for the past) plus `nanos`.
fn time_at(seconds: i64, nanos: u32) -> SystemTime {
    let whole = Duration::from_secs(seconds.unsigned_abs());
    let base = if seconds < 0 {
        UNIX_EPOCH - whole
    } else {
        UNIX_EPOCH + whole
    };
    base + Duration::from_nanos(u64::from(nanos))
}

/// The `[seconds, nanos]` pair the fixtures use for a time.
fn fixture_time(pair: &serde_json::Value) -> SystemTime {
    time_at(
        pair[0].as_i64().expect("seconds"),
        pair[1].as_u64().expect("nanos") as u32,
    )
}

fn errors_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("../fixtures/errors.json")).expect("errors.json parses")
}
