//! What plugin code pushes to the host while a call runs: progress, usage and log
//! records, each sent as it happens (the host never polls).

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use cjm_proto::{Kind, LogRecord, Message};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};

use crate::convert::Encoder;
use crate::runtime::runtime;

/// Makes `report_progress` / `report_usage` push to the host, keeping the plugin's
/// own behaviour (storing `_progress`, `_status_message`, `_last_api_usage`).
pub(crate) fn wrap_reporters(py: Python<'_>, plugin: &Bound<'_, PyAny>) -> PyResult<()> {
    wrap_after(py, plugin, c"report_progress", |me, args| {
        let progress: f64 = me
            .getattr("_progress")
            .and_then(|p| p.extract())
            .or_else(|_| args.get_item(0).and_then(|p| p.extract()))
            .unwrap_or(0.0);
        let message: String = me
            .getattr("_status_message")
            .and_then(|m| m.extract())
            .unwrap_or_default();
        let rt = runtime()?;
        *rt.progress.lock().unwrap_or_else(PoisonError::into_inner) = (progress, message.clone());
        rt.send(
            &Message::Progress { progress, message },
            rt.current.load(Ordering::Acquire),
        );
        Ok(())
    })?;
    wrap_after(py, plugin, c"report_usage", |me, _| {
        let Some(usage) = me.getattr("_last_api_usage").ok().filter(|u| !u.is_none()) else {
            return Ok(());
        };
        let rt = runtime()?;
        let mut enc = Encoder::new(rt);
        enc.value(&usage)?;
        rt.send_writer(Kind::Usage, rt.current.load(Ordering::Acquire), &enc.w);
        Ok(())
    })
}

/// Replaces the instance's method `name` with one that calls the original, then
/// `after(plugin, args)`. Plugins with `__slots__` keep their own method; the host
/// then sees nothing pushed, which is the reference's behaviour too.
fn wrap_after(
    py: Python<'_>,
    plugin: &Bound<'_, PyAny>,
    name: &'static std::ffi::CStr,
    after: impl Fn(&Bound<'_, PyAny>, &Bound<'_, PyTuple>) -> PyResult<()> + Send + Sync + 'static,
) -> PyResult<()> {
    let attr = name.to_str().unwrap_or_default();
    let Ok(orig) = plugin.getattr(attr) else {
        return Ok(());
    };
    let orig = orig.unbind();
    let me = plugin.clone().unbind();
    let f = PyCFunction::new_closure(
        py,
        Some(name),
        None,
        move |args: &Bound<'_, PyTuple>, kw: Option<&Bound<'_, PyDict>>| -> PyResult<Py<PyAny>> {
            let py = args.py();
            let out = orig.bind(py).call(args.clone(), kw)?;
            after(me.bind(py), args)?;
            Ok(out.unbind())
        },
    )?;
    let _ = plugin.setattr(attr, f);
    Ok(())
}

/// `cjm_worker._native._emit_log(level, name, message)`: a log record for the host.
pub(crate) fn emit_log(level: i64, logger: String, message: String) -> PyResult<()> {
    let rt = runtime()?;
    let id = rt.current.load(Ordering::Acquire);
    rt.send(
        &Message::Log(LogRecord {
            level,
            logger,
            message,
        }),
        id,
    );
    Ok(())
}
