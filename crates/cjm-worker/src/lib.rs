//! The cjm worker runtime.
use pyo3::prelude::*;

/// The native half of the `cjm_worker` package.
#[pymodule]
mod _native {}
