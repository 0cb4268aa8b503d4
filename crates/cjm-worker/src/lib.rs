//! The cjm worker runtime: the native half of the `cjm_worker` Python package.
//!
//! It owns the worker's end of the channel, its threads, and the conversion of
//! Python objects to and from the wire. It never decides policy (timeouts, restarts,
//! what a cancel escalates to): the host does.

mod convert;
mod pybuffer;
mod runtime;

use pyo3::prelude::*;

/// The native half of the `cjm_worker` package.
#[pymodule]
mod _native {
    use pyo3::prelude::*;

    /// Serves one plugin over the channel named by `--fd` until the host goes away.
    #[pyfunction]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts arguments by value"
    )]
    fn serve(py: Python<'_>, argv: Vec<String>) -> PyResult<i32> {
        crate::runtime::serve(py, &argv)
    }

    /// A writable shared-memory buffer of `nbytes`, returned to the host without a copy.
    #[pyfunction]
    fn shm_alloc(py: Python<'_>, nbytes: usize) -> PyResult<Bound<'_, PyAny>> {
        crate::runtime::shm_alloc(py, nbytes)
    }

    /// Forwards one log record to the host.
    #[pyfunction]
    fn _emit_log(level: i64, logger: String, message: String) -> PyResult<()> {
        crate::runtime::emit_log(level, logger, message)
    }

    /// The wire protocol this runtime speaks.
    #[pymodule_export]
    const PROTOCOL: &str = cjm_proto::PROTOCOL;
}
