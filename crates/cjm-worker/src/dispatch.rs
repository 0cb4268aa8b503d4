//! One call on the main thread: which plugin method a call names, and how each kind
//! of method is run and answered.

use cjm_proto::{Frame, Kind, Message, Reader};
use pyo3::exceptions::{PyNotImplementedError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::convert::{Decoder, Encoder};
use crate::runtime::Runtime;

/// How a worker answers a method, whatever its name.
#[derive(Clone, Copy)]
enum Method {
    /// `execute`: one result.
    Execute,
    /// `execute_stream`: chunks, then an end (one chunk from `execute` for a plugin
    /// that has no `execute_stream`).
    ExecuteStream,
    /// `reconfigure`, or `initialize` anew for a plugin that has no `reconfigure`.
    Reconfigure,
    /// A lifecycle hook a plugin may leave out: answered `None` then.
    Hook,
    /// A configuration query a plugin may leave out: answered `{}` then.
    ConfigQuery,
    /// A monitor plugin's query: a `NotImplementedError` from any other plugin.
    Monitor,
    /// `get_progress`: what the plugin last reported.
    Progress,
}

/// Every method a worker serves, by the name a call frame carries.
const METHODS: &[(&str, Method)] = &[
    ("execute", Method::Execute),
    ("execute_stream", Method::ExecuteStream),
    ("initialize", Method::Hook),
    ("reconfigure", Method::Reconfigure),
    ("cleanup", Method::Hook),
    ("prefetch", Method::Hook),
    ("on_disable", Method::Hook),
    ("on_enable", Method::Hook),
    ("get_config_schema", Method::ConfigQuery),
    ("get_current_config", Method::ConfigQuery),
    ("get_config_options", Method::ConfigQuery),
    ("get_system_status", Method::Monitor),
    ("list_processes", Method::Monitor),
    ("get_progress", Method::Progress),
];

fn unknown_method(name: &str) -> PyErr {
    let served: Vec<&str> = METHODS.iter().map(|(name, _)| *name).collect();
    PyValueError::new_err(format!(
        "unknown method {name:?}: the worker serves {}",
        served.join(", ")
    ))
}

impl Runtime {
    /// Decodes and runs a call and sends its answer. The arguments stay alive until
    /// the answer is sent, so a reply that references a host segment always reaches
    /// the host before the release of that segment does.
    pub(crate) fn dispatch(&self, py: Python<'_>, id: u64, frame: &mut Frame) -> PyResult<()> {
        let mut r = Reader::new(&frame.body);
        let name = r
            .len_str()
            .map_err(|e| PyValueError::new_err(format!("cjm: bad call frame: {e}")))?
            .to_owned();
        let mut dec = Decoder::new(self, &mut frame.fds);
        let args = dec.value(py, &mut r)?;
        let kwargs = dec.value(py, &mut r)?;
        let args = args.cast::<PyList>()?.to_tuple();
        let kwargs = kwargs.cast::<PyDict>()?.clone();
        let Some(&(_, method)) = METHODS.iter().find(|(known, _)| *known == name) else {
            return Err(unknown_method(&name));
        };
        let plugin = self.plugin.bind(py);
        let name = name.as_str();
        let result = match method {
            Method::Execute => {
                reset_call_state(plugin)?;
                plugin.call_method(pyo3::intern!(py, "execute"), args.clone(), Some(&kwargs))?
            }
            Method::ExecuteStream => {
                reset_call_state(plugin)?;
                return self.stream(py, id, plugin, &args, &kwargs);
            }
            Method::Reconfigure if !plugin.hasattr(name)? => {
                // A plugin without `reconfigure` (duck-typed) is configured anew, as
                // the reference's manager does when reconfigure is not handled.
                let new_config = args
                    .get_item(1)
                    .unwrap_or_else(|_| py.None().into_bound(py));
                plugin.call_method1(pyo3::intern!(py, "initialize"), (new_config,))?
            }
            Method::Reconfigure | Method::Hook => {
                if plugin.hasattr(name)? {
                    plugin.call_method(name, args.clone(), Some(&kwargs))?
                } else {
                    py.None().into_bound(py)
                }
            }
            Method::ConfigQuery => {
                if plugin.hasattr(name)? {
                    plugin.call_method(name, args.clone(), Some(&kwargs))?
                } else {
                    PyDict::new(py).into_any()
                }
            }
            Method::Monitor => {
                if !plugin.hasattr(name)? {
                    return Err(PyNotImplementedError::new_err(format!(
                        "plugin {:?} is not a monitor plugin (it has no {name}())",
                        self.plugin_name
                    )));
                }
                plugin.call_method(name, args.clone(), Some(&kwargs))?
            }
            Method::Progress => {
                let d = PyDict::new(py);
                let progress: f64 = plugin
                    .getattr("_progress")
                    .and_then(|p| p.extract())
                    .unwrap_or(0.0);
                let message: String = plugin
                    .getattr("_status_message")
                    .and_then(|m| m.extract())
                    .unwrap_or_default();
                d.set_item("progress", progress)?;
                d.set_item("message", message)?;
                d.into_any()
            }
        };
        let mut enc = Encoder::new(self);
        enc.value(&result)?;
        self.send_writer(Kind::Result, id, &enc.w);
        drop((args, kwargs));
        Ok(())
    }

    /// Runs `execute_stream` and sends each item as a chunk, then `End`; a cancel
    /// between two items closes the generator and raises `PluginCancelledError`.
    fn stream(
        &self,
        py: Python<'_>,
        id: u64,
        plugin: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        let iterable = if plugin.hasattr("execute_stream")? {
            plugin.call_method("execute_stream", args.clone(), Some(kwargs))?
        } else {
            PyList::new(
                py,
                [plugin.call_method("execute", args.clone(), Some(kwargs))?],
            )?
            .into_any()
        };
        let iter = iterable.try_iter()?;
        for item in iter {
            let item = item?;
            let mut enc = Encoder::new(self);
            enc.value(&item)?;
            self.send_writer(Kind::Chunk, id, &enc.w);
            if self.is_cancelled(id) {
                // The plugin yielded after a cancel: stop it where it stands.
                let _ = iterable.call_method0("close");
                let cls = py
                    .import("cjm_worker.errors")?
                    .getattr("PluginCancelledError")?;
                return Err(PyErr::from_value(cls.call1((self.plugin_name.as_str(),))?));
            }
        }
        self.send(&Message::End, id);
        Ok(())
    }
}

/// Clears what the previous call left on the plugin: its cancel flag and usage.
fn reset_call_state(plugin: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = plugin.py();
    let cancel_flag = pyo3::intern!(py, "_cancel_requested");
    if plugin.hasattr(cancel_flag)? {
        plugin.setattr(cancel_flag, false)?;
    }
    // Ignore plugins that forbid new attributes (`__slots__`): usage is optional.
    let _ = plugin.setattr(pyo3::intern!(py, "_last_api_usage"), py.None());
    Ok(())
}
