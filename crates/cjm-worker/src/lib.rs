//! The cjm worker runtime: the native half of the `cjm_worker` Python package.
//!
//! It owns the worker's end of the channel, its threads, and the conversion of
//! Python objects to and from the wire. It never decides policy (timeouts, restarts,
//! what a cancel escalates to): the host does.
//!
//! - `runtime`: what the threads share, the channel thread, the main loop, `serve`.
//! - `dispatch`: the methods a call can name and how each is answered.
//! - `cancel`: routing a cancel, and the cancel thread.
//! - `lifeline`: dying with the host (channel EOF, parent-death signal, cgroup).
//! - `segments`, `convert`, `pybuffer`: shared memory as Python `mmap`s, Python
//!   objects to and from the wire, and the buffer protocol abi3 lacks.
//! - `raised`: a Python exception as the host classifies it.
//! - `report`: progress, usage and log records pushed while a call runs.
//! - `args`: the command line.

mod args;
mod cancel;
mod convert;
mod dispatch;
mod lifeline;
mod pybuffer;
mod raised;
mod report;
mod runtime;
mod segments;

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
        crate::segments::shm_alloc(py, nbytes)
    }

    /// Forwards one log record to the host.
    #[pyfunction]
    fn _emit_log(level: i64, logger: String, message: String) -> PyResult<()> {
        crate::report::emit_log(level, logger, message)
    }

    /// What a call cancelled before it ran reports as its exception, for the tests
    /// that check it against `cjm_worker.errors.PluginCancelledError`.
    #[pyfunction]
    fn _cancelled_error<'py>(
        py: Python<'py>,
        plugin: &str,
        phase: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::raised::cancelled_error_dict(py, plugin, phase)
    }

    /// The wire protocol this runtime speaks.
    #[pymodule_export]
    const PROTOCOL: &str = cjm_proto::PROTOCOL;
}
