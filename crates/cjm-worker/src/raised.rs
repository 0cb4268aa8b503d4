//! A Python exception as the host classifies it (cjm-core's `RaisedException`).
//!
//! [`raised_exception`] reads a raised exception (its class, MRO, message, traceback
//! and the attributes cjm's errors declare). [`cancelled_error`] describes the
//! `PluginCancelledError` of a call that was cancelled before plugin code ran: it is
//! called on the channel thread, which never takes the GIL, so the class is written
//! out here, and `test_errors.py` checks it against `cjm_worker.errors` through
//! `_native._cancelled_error`.

use cjm_proto::Value;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use std::fmt::Write as _;

/// What the host needs to classify a raised exception (cjm-core's `RaisedException`).
pub(crate) fn raised_exception(py: Python<'_>, err: &PyErr, cancel_phase: Option<&str>) -> Value {
    let value = err.value(py);
    let ty = value.get_type();
    let s = |o: PyResult<Bound<'_, PyAny>>| -> Option<String> { o.ok()?.extract::<String>().ok() };
    let type_name = s(ty.getattr("__name__")).unwrap_or_else(|| "Exception".into());
    let mro: Vec<Value> = ty
        .getattr("__mro__")
        .ok()
        .and_then(|m| m.try_iter().ok())
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|c| {
                    let module = s(c.getattr("__module__")).unwrap_or_default();
                    let name = s(c.getattr("__qualname__")).unwrap_or_default();
                    Value::Str(format!("{module}.{name}"))
                })
                .collect()
        })
        .unwrap_or_default();
    let message = value.str().map(|s| s.to_string()).unwrap_or_default();
    let repr = value
        .repr()
        .map_or_else(|_| type_name.clone(), |s| s.to_string());
    let traceback = py
        .import("traceback")
        .and_then(|tb| tb.getattr("format_exception"))
        .and_then(|f| f.call1((ty.clone(), value.clone(), err.traceback(py))))
        .and_then(|lines| PyString::new(py, "").call_method1("join", (lines,)))
        .ok()
        .and_then(|s| s.extract::<String>().ok());
    let opt_str = |name: &str| {
        value
            .getattr(name)
            .ok()
            .and_then(|v| v.extract::<String>().ok())
    };
    let declared_category = opt_str("category");
    let declared_retriable = ty
        .getattr("default_retriable")
        .ok()
        .and_then(|v| v.extract::<bool>().ok());
    let fields_invalid = value
        .getattr("fields_invalid")
        .ok()
        .and_then(|v| v.extract::<Vec<String>>().ok())
        .map(|v| Value::List(v.into_iter().map(Value::Str).collect()));
    let retry_after = value
        .getattr("retry_after_seconds")
        .ok()
        .and_then(|v| v.extract::<f64>().ok());
    let shortfall = value
        .getattr("resource_shortfall")
        .ok()
        .filter(|v| !v.is_none())
        .map(|v| {
            let f = |k: &str| v.getattr(k).ok();
            Value::map([
                (
                    "resource",
                    f("resource")
                        .and_then(|x| x.extract::<String>().ok())
                        .map_or(Value::None, Value::Str),
                ),
                (
                    "needed",
                    f("needed")
                        .and_then(|x| x.extract::<f64>().ok())
                        .map_or(Value::None, Value::Float),
                ),
                (
                    "available",
                    f("available")
                        .and_then(|x| x.extract::<f64>().ok())
                        .map_or(Value::None, Value::Float),
                ),
            ])
        });
    let opt = |v: Option<String>| v.map_or(Value::None, Value::Str);
    Value::map([
        ("type_name", Value::Str(type_name)),
        ("mro", Value::List(mro)),
        ("message", Value::Str(message)),
        ("repr", Value::Str(repr)),
        ("traceback", opt(traceback)),
        ("declared_category", opt(declared_category)),
        (
            "declared_retriable",
            declared_retriable.map_or(Value::None, Value::Bool),
        ),
        ("fields_invalid", fields_invalid.unwrap_or(Value::None)),
        (
            "retry_after_seconds",
            retry_after.map_or(Value::None, Value::Float),
        ),
        ("resource_shortfall", shortfall.unwrap_or(Value::None)),
        (
            "cancel_phase",
            cancel_phase.map_or(Value::None, |p| Value::Str(p.into())),
        ),
    ])
}

/// The MRO of `cjm_worker.errors.PluginCancelledError`, as [`raised_exception`]
/// reports it (`module.qualname`).
const CANCELLED_MRO: [&str; 6] = [
    "cjm_worker.errors.PluginCancelledError",
    "cjm_worker.errors.PluginTransientError",
    "cjm_worker.errors.PluginError",
    "builtins.Exception",
    "builtins.BaseException",
    "builtins.object",
];

/// A cancellation answered without running plugin code, described as
/// [`raised_exception`] would describe `PluginCancelledError(plugin)`.
pub(crate) fn cancelled_error(plugin: &str, phase: &str) -> Value {
    let message = format!("Plugin {} cancelled by operator", py_repr(plugin));
    Value::map([
        ("type_name", Value::from("PluginCancelledError")),
        (
            "mro",
            Value::List(CANCELLED_MRO.into_iter().map(Value::from).collect()),
        ),
        ("message", Value::Str(message.clone())),
        (
            "repr",
            Value::Str(format!("PluginCancelledError({})", py_repr(&message))),
        ),
        ("traceback", Value::None),
        ("declared_category", Value::from("transient")),
        ("declared_retriable", Value::Bool(false)),
        ("fields_invalid", Value::None),
        ("retry_after_seconds", Value::None),
        ("resource_shortfall", Value::None),
        ("cancel_phase", Value::from(phase)),
    ])
}

/// A string as Python's `repr` writes it: single quotes unless the text holds a
/// single quote and no double quote, with backslashes, the quote and control
/// characters escaped.
fn py_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// [`cancelled_error`] as a Python dict, for `_native._cancelled_error`.
pub(crate) fn cancelled_error_dict<'py>(
    py: Python<'py>,
    plugin: &str,
    phase: &str,
) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, &cancelled_error(plugin, phase))
}

/// The plain values an exception's description holds, as Python objects.
fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (key, item) in entries {
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any()
        }
        Value::BigInt(_) | Value::Bytes(_) | Value::Array(_) => {
            return Err(PyTypeError::new_err(
                "cjm: an exception's description holds only plain values",
            ));
        }
    })
}
