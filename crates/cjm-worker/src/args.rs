//! The worker's command line: `--fd N --module MODULE --class CLASS [--ppid PID]`.

use std::os::fd::RawFd;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// What the host tells a worker on its command line.
pub(crate) struct Args {
    /// The worker's end of the channel, inherited from the host.
    pub(crate) fd: RawFd,
    /// The module that defines the plugin class.
    pub(crate) module: String,
    /// The plugin class, instantiated with no arguments.
    pub(crate) class: String,
    /// The host's pid, when it passed one: a worker whose parent is someone else
    /// started after its host died.
    pub(crate) ppid: Option<i32>,
}

/// Reads `argv` (without the program name). A missing, malformed or unknown
/// argument is a `ValueError` that says which, or gives the usage line.
pub(crate) fn parse_args(argv: &[String]) -> PyResult<Args> {
    let mut fd = None;
    let mut module = None;
    let mut class = None;
    let mut ppid = None;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| PyValueError::new_err(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--fd" => {
                fd = Some(
                    val()?
                        .parse::<RawFd>()
                        .map_err(|e| PyValueError::new_err(format!("--fd: {e}")))?,
                );
            }
            "--module" => module = Some(val()?),
            "--class" => class = Some(val()?),
            "--ppid" => {
                ppid = Some(
                    val()?
                        .parse::<i32>()
                        .map_err(|e| PyValueError::new_err(format!("--ppid: {e}")))?,
                );
            }
            other => return Err(PyValueError::new_err(format!("unknown argument {other:?}"))),
        }
    }
    let usage = "usage: python -m cjm_worker --fd N --module MODULE --class CLASS [--ppid PID] (a cjm host starts workers; see cjm-ctl)";
    Ok(Args {
        fd: fd.ok_or_else(|| PyValueError::new_err(usage))?,
        module: module.ok_or_else(|| PyValueError::new_err(usage))?,
        class: class.ok_or_else(|| PyValueError::new_err(usage))?,
        ppid,
    })
}
