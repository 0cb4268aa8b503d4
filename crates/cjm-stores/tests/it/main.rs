//! cjm-stores against real `SQLite`, real files and the real reference: the Python
//! package's stores, driven through `reference_driver.py` with `$CJM_PYTHON`,
//! write what this crate reads and read what it writes.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]
#![expect(
    clippy::float_cmp,
    reason = "both implementations must agree to the bit, so floats are compared exactly"
)]

mod concurrency;
mod config;
mod empirical;
mod hygiene;
mod secrets;
mod support;
