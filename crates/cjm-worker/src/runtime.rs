//! The worker's threads and its main loop.
//!
//! - The **channel thread** (Rust, never takes the GIL) receives every frame. It
//!   answers pings and stats requests, queues calls, routes cancels, and when the
//!   host's end closes it kills the worker's whole process group at once, whatever
//!   plugin code is doing.
//! - The **main thread** runs plugin code: it waits for the next call with the GIL
//!   released, then decodes the arguments, calls the plugin and sends the result.
//! - The **helper thread** takes the GIL only to deliver cancellation (calling
//!   `plugin.cancel()`, or raising an exception asynchronously in the main thread),
//!   so a plugin that holds the GIL can delay a cancel but never a ping.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};

use cjm_proto::{
    Channel, Frame, Hello, Kind, Message, PROTOCOL, Reader, Segment, SegmentId, ShmPool, Side,
    Value, Writer,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyList, PyTuple};

use crate::convert::{Decoder, Encoder};
use crate::pybuffer::HeldBuffer;

static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();

/// The runtime of this worker process, once `serve` has started.
pub(crate) fn runtime() -> PyResult<&'static Arc<Runtime>> {
    RUNTIME.get().ok_or_else(|| {
        PyRuntimeError::new_err("cjm_worker is not serving a plugin in this process")
    })
}

struct Job {
    id: u64,
    frame: Frame,
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    /// The main thread is parked on `ready`: only then does a new call need the
    /// wake-up syscall (usually it is still spinning and sees `queued`).
    sleeping: bool,
}

enum HelperJob {
    Cancel(u64),
    Interrupt(u64),
}

/// Where a buffer about to be sent already lives.
pub(crate) enum Located {
    /// In a segment this worker owns, at an offset.
    Own(Arc<Segment>, usize),
    /// In a segment the host lent us, at an offset.
    Host(SegmentId, usize),
}

struct Entry {
    id: SegmentId,
    base: usize,
    len: usize,
    weak: Py<PyAny>,
    own: Option<Arc<Segment>>,
    receipts: u32,
}

/// Shared-memory segments that are mapped as Python `mmap` objects in this process.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<Vec<Entry>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn locate(&self, ptr: usize, len: usize) -> Option<Located> {
        let entries = self.lock();
        let e = entries.iter().find(|e| {
            ptr >= e.base
                && ptr
                    .checked_add(len)
                    .is_some_and(|end| end <= e.base + e.len)
        })?;
        let offset = ptr - e.base;
        Some(match &e.own {
            Some(seg) => Located::Own(Arc::clone(seg), offset),
            None => Located::Host(e.id, offset),
        })
    }

    /// The Python `mmap` for segment `id`, mapping it from `fd` if needed.
    pub(crate) fn python_view<'py>(
        &self,
        py: Python<'py>,
        rt: &Runtime,
        id: SegmentId,
        fd: Option<RawFd>,
    ) -> PyResult<Bound<'py, PyAny>> {
        {
            let mut entries = self.lock();
            if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
                let mm = e.weak.bind(py).call0()?;
                if !mm.is_none() {
                    e.receipts += 1;
                    return Ok(mm);
                }
            }
        }
        let (own, raw_fd, writable) = match id.owner() {
            Side::Worker => {
                let seg = rt.pool.get(id).ok_or_else(|| {
                    PyValueError::new_err("cjm: host sent back an unknown segment")
                })?;
                let fd = seg.fd().as_raw_fd();
                (Some(seg), fd, true)
            }
            Side::Host => (
                None,
                fd.ok_or_else(|| {
                    PyValueError::new_err("cjm: shared-memory reference without its fd")
                })?,
                false,
            ),
        };
        let mm = map_python(py, raw_fd, writable)?;
        self.register(py, &mm, id, own)?;
        Ok(mm)
    }

    fn register(
        &self,
        py: Python<'_>,
        mm: &Bound<'_, PyAny>,
        id: SegmentId,
        own: Option<Arc<Segment>>,
    ) -> PyResult<()> {
        // SAFETY: GIL held, `mm` is live; the view is released right away and the
        // mapping's address stays fixed for the mmap object's lifetime.
        let view = unsafe { HeldBuffer::get(mm.as_ptr()) }
            .ok_or_else(|| PyRuntimeError::new_err("cjm: mmap has no buffer"))?;
        let (base, len) = (view.as_ptr() as usize, view.len());
        drop(view);
        let callback = PyCFunction::new_closure(
            py,
            None,
            None,
            move |_args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                if let Some(rt) = RUNTIME.get() {
                    rt.segments.gone(rt, id);
                }
                Ok(())
            },
        )?;
        let weak = py
            .import("_weakref")?
            .getattr("ref")?
            .call1((mm, callback))?;
        self.lock().push(Entry {
            id,
            base,
            len,
            weak: weak.unbind(),
            own,
            receipts: 1,
        });
        Ok(())
    }

    /// The Python mapping of `id` was collected.
    fn gone(&self, rt: &Runtime, id: SegmentId) {
        let entry = {
            let mut entries = self.lock();
            entries
                .iter()
                .position(|e| e.id == id)
                .map(|i| entries.swap_remove(i))
        };
        if let Some(e) = entry
            && e.own.is_none()
        {
            let msg = Message::Release {
                segment: id,
                receipts: e.receipts,
            };
            rt.send(&msg, 0);
        }
    }
}

fn map_python(py: Python<'_>, fd: RawFd, writable: bool) -> PyResult<Bound<'_, PyAny>> {
    let mmap = py.import("mmap")?;
    let kwargs = PyDict::new(py);
    let access = if writable {
        "ACCESS_WRITE"
    } else {
        "ACCESS_READ"
    };
    kwargs.set_item("access", mmap.getattr(access)?)?;
    // Python's mmap duplicates the descriptor, so ours may close right after.
    mmap.getattr("mmap")?.call((fd, 0), Some(&kwargs))
}

/// Everything the worker's threads share.
pub(crate) struct Runtime {
    channel: Channel,
    jobs: Mutex<Jobs>,
    /// Length of `jobs.queue`, readable without the lock.
    queued: std::sync::atomic::AtomicUsize,
    ready: Condvar,
    current: AtomicU64,
    cancelled: Mutex<HashSet<u64>>,
    interrupted: AtomicU64,
    helper: Mutex<mpsc::Sender<HelperJob>>,
    plugin: Py<PyAny>,
    plugin_name: String,
    main_thread: i64,
    progress: Mutex<(f64, String)>,
    pub(crate) pool: ShmPool,
    pub(crate) segments: Registry,
}

impl Runtime {
    /// Sends a message, reporting (not raising) failures: the channel thread notices
    /// a dead host on its own and ends the process.
    fn send(&self, msg: &Message, id: u64) {
        match msg.encode(Side::Worker) {
            Ok(w) => self.send_writer(msg.kind(), id, &w),
            Err(e) => eprintln!(
                "cjm-worker: cannot encode {} message: {e}",
                msg.kind().name()
            ),
        }
    }

    fn send_writer(&self, kind: Kind, id: u64, w: &Writer) {
        if let Err(e) = self.channel.send(kind, id, w) {
            eprintln!("cjm-worker: cannot send {} message: {e}", kind.name());
        }
    }

    fn next_job(&self) -> Job {
        // Spin briefly (yielding the CPU each turn) before parking: in a stream of
        // small calls the next one usually arrives within microseconds, and taking
        // it while still on the CPU saves waking a parked thread.
        let spin_until = std::time::Instant::now() + std::time::Duration::from_micros(60);
        while self.queued.load(Ordering::Acquire) == 0 && std::time::Instant::now() < spin_until {
            std::thread::yield_now();
        }
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(job) = jobs.queue.pop_front() {
                self.queued.store(jobs.queue.len(), Ordering::Release);
                self.current.store(job.id, Ordering::Release);
                return job;
            }
            jobs.sleeping = true;
            jobs = self
                .ready
                .wait(jobs)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            jobs.sleeping = false;
        }
    }

    fn is_cancelled(&self, id: u64) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
    }

    /// The channel thread's loop; never returns while the host is there.
    fn channel_loop(self: &Arc<Self>) -> ! {
        loop {
            let frame = match self.channel.recv() {
                Ok(Some(f)) => f,
                Ok(None) => host_gone("the host closed the channel"),
                Err(cjm_proto::ProtoError::Io { source, .. }) => {
                    host_gone(&format!("the channel failed: {source}"))
                }
                Err(e) => {
                    eprintln!("cjm-worker: dropped a malformed frame from the host: {e}");
                    continue;
                }
            };
            let id = frame.header.id;
            match frame.header.kind {
                Kind::Call => {
                    let mut jobs = self
                        .jobs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    jobs.queue.push_back(Job { id, frame });
                    self.queued.store(jobs.queue.len(), Ordering::Release);
                    let sleeping = jobs.sleeping;
                    drop(jobs);
                    if sleeping {
                        self.ready.notify_one();
                    }
                }
                Kind::Ping => self.send(&Message::Pong, id),
                Kind::StatsRequest => self.send(&Message::Stats(self.stats()), id),
                Kind::Cancel => self.cancel(id),
                Kind::Interrupt => self.to_helper(HelperJob::Interrupt(id)),
                Kind::Release => {
                    let mut fds = frame.fds;
                    let mut ctx = cjm_proto::DecodeCtx {
                        fds: &mut fds,
                        segments: &cjm_proto::NoSegments,
                    };
                    if let Ok(Message::Release { segment, receipts }) =
                        Message::decode(Kind::Release, &frame.body, &mut ctx)
                    {
                        self.pool.released(segment, receipts);
                    }
                }
                Kind::Shutdown => exit_group(0),
                other => eprintln!("cjm-worker: ignored unexpected {} frame", other.name()),
            }
        }
    }

    fn cancel(&self, id: u64) {
        let queued = {
            let mut jobs = self
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = jobs.queue.len();
            jobs.queue.retain(|j| j.id != id);
            self.queued.store(jobs.queue.len(), Ordering::Release);
            before != jobs.queue.len()
        };
        if queued {
            // Never started: it ends here, cooperatively, without plugin code.
            let err = cancelled_error(&self.plugin_name, "cooperative");
            self.send(&Message::Error(err), id);
            return;
        }
        self.cancelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        if self.current.load(Ordering::Acquire) == id {
            self.to_helper(HelperJob::Cancel(id));
        }
    }

    fn to_helper(&self, job: HelperJob) {
        let tx = self
            .helper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = tx.send(job);
    }

    fn helper_loop(self: &Arc<Self>, rx: &mpsc::Receiver<HelperJob>) {
        while let Ok(job) = rx.recv() {
            Python::attach(|py| match job {
                HelperJob::Cancel(id) => {
                    if self.current.load(Ordering::Acquire) != id {
                        return;
                    }
                    let plugin = self.plugin.bind(py);
                    if plugin.hasattr("cancel").unwrap_or(false)
                        && let Err(e) = plugin.call_method0("cancel")
                    {
                        eprintln!("cjm-worker: plugin cancel() raised: {e}");
                    }
                    self.send(
                        &Message::CancelAck {
                            phase: "cooperative".into(),
                        },
                        id,
                    );
                }
                HelperJob::Interrupt(id) => {
                    if self.current.load(Ordering::Acquire) != id {
                        return;
                    }
                    match py
                        .import("cjm_worker._interrupt")
                        .and_then(|m| m.getattr("CancelInterrupt"))
                    {
                        Ok(exc) => {
                            if let Ok(m) = py.import("cjm_worker._interrupt") {
                                let _ = m.setattr("PLUGIN_NAME", self.plugin_name.as_str());
                            }
                            self.interrupted.store(id, Ordering::Release);
                            // SAFETY: GIL held; the main thread id was read from
                            // `_thread.get_ident()` on that thread; `exc` is a live
                            // exception class, borrowed for the call.
                            unsafe {
                                pyo3::ffi::PyThreadState_SetAsyncExc(
                                    self.main_thread as std::ffi::c_long,
                                    exc.as_ptr(),
                                );
                            }
                            self.send(
                                &Message::CancelAck {
                                    phase: "interrupted".into(),
                                },
                                id,
                            );
                        }
                        Err(e) => eprintln!("cjm-worker: cannot interrupt: {e}"),
                    }
                }
            });
        }
    }

    fn stats(&self) -> Value {
        let rss = fs_read("/proc/self/statm")
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u64>().ok())
            })
            .map_or(0, |pages| pages * rustix::param::page_size() as u64);
        let queued = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .queue
            .len();
        let (progress, message) = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Value::map([
            ("pid", Value::from(std::process::id())),
            ("rss_bytes", Value::Int(rss as i64)),
            (
                "current_call",
                Value::Int(self.current.load(Ordering::Acquire) as i64),
            ),
            ("queued_calls", Value::Int(queued as i64)),
            ("progress", Value::Float(progress)),
            ("message", Value::Str(message)),
            ("shm_bytes", Value::Int(self.pool.mapped_bytes() as i64)),
        ])
    }

    /// Runs one call on the main thread (GIL held).
    fn run(&self, py: Python<'_>, job: Job) {
        let Job { id, mut frame } = job;
        if self.is_cancelled(id) {
            let err = cancelled_error(&self.plugin_name, "cooperative");
            self.send(&Message::Error(err), id);
            self.finish(py, id);
            return;
        }
        let outcome = self.dispatch(py, id, &mut frame);
        match outcome {
            Ok(()) => {}
            Err(err) => {
                let phase = if self.interrupted.load(Ordering::Acquire) == id {
                    Some("interrupted")
                } else if self.is_cancelled(id) {
                    Some("cooperative")
                } else {
                    None
                };
                let raised = raised_exception(py, &err, phase);
                self.send(&Message::Error(raised), id);
            }
        }
        self.finish(py, id);
    }

    fn finish(&self, _py: Python<'_>, id: u64) {
        self.current.store(0, Ordering::Release);
        if self.interrupted.swap(0, Ordering::AcqRel) == id {
            // SAFETY: GIL held; a NULL exception clears an interrupt that may still
            // be pending if the call ended before the interpreter raised it.
            unsafe {
                pyo3::ffi::PyThreadState_SetAsyncExc(
                    self.main_thread as std::ffi::c_long,
                    std::ptr::null_mut(),
                );
            }
        }
        self.cancelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        *self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (0.0, String::new());
    }

    /// Decodes and runs a call and sends its answer. The arguments stay alive until
    /// the answer is sent, so a reply that references a host segment always reaches
    /// the host before the release of that segment does.
    fn dispatch(&self, py: Python<'_>, id: u64, frame: &mut Frame) -> PyResult<()> {
        let mut r = Reader::new(&frame.body);
        let method = r
            .len_str()
            .map_err(|e| PyValueError::new_err(format!("cjm: bad call frame: {e}")))?
            .to_owned();
        let mut dec = Decoder::new(self, &mut frame.fds);
        let args = dec.value(py, &mut r)?;
        let kwargs = dec.value(py, &mut r)?;
        let args = args.cast::<PyList>()?.to_tuple();
        let kwargs = kwargs.cast::<PyDict>()?.clone();
        let plugin = self.plugin.bind(py);
        let result = match method.as_str() {
            "execute" => {
                reset_call_state(plugin)?;
                plugin.call_method(pyo3::intern!(py, "execute"), args.clone(), Some(&kwargs))?
            }
            "execute_stream" => {
                reset_call_state(plugin)?;
                return self.stream(py, id, plugin, &args, &kwargs);
            }
            "reconfigure" if !plugin.hasattr("reconfigure")? => {
                // A plugin without `reconfigure` (duck-typed) is configured anew, as
                // the reference's manager does when reconfigure is not handled.
                let new_config = args
                    .get_item(1)
                    .unwrap_or_else(|_| py.None().into_bound(py));
                plugin.call_method1(pyo3::intern!(py, "initialize"), (new_config,))?
            }
            "initialize" | "reconfigure" | "cleanup" | "prefetch" | "on_disable" | "on_enable" => {
                if plugin.hasattr(method.as_str())? {
                    plugin.call_method(method.as_str(), args.clone(), Some(&kwargs))?
                } else {
                    py.None().into_bound(py)
                }
            }
            "get_config_schema" | "get_current_config" | "get_config_options" => {
                if plugin.hasattr(method.as_str())? {
                    plugin.call_method(method.as_str(), args.clone(), Some(&kwargs))?
                } else {
                    PyDict::new(py).into_any()
                }
            }
            "get_system_status" | "list_processes" => {
                if !plugin.hasattr(method.as_str())? {
                    return Err(pyo3::exceptions::PyNotImplementedError::new_err(format!(
                        "plugin {:?} is not a monitor plugin (it has no {method}())",
                        self.plugin_name
                    )));
                }
                plugin.call_method(method.as_str(), args.clone(), Some(&kwargs))?
            }
            "get_progress" => {
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
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown method {other:?}: the worker serves execute, execute_stream, initialize, reconfigure, cleanup, prefetch, on_disable, on_enable, get_config_schema, get_current_config, get_config_options, get_system_status, list_processes, get_progress"
                )));
            }
        };
        let mut enc = Encoder::new(self);
        enc.value(&result)?;
        self.send_writer(Kind::Result, id, &enc.w);
        drop((args, kwargs));
        Ok(())
    }

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

/// Reads a small procfs file; this worker never reports the path in an error.
fn fs_read(path: &str) -> Option<String> {
    let mut s = String::new();
    std::io::Read::read_to_string(
        &mut std::fs::OpenOptions::new().read(true).open(path).ok()?,
        &mut s,
    )
    .ok()?;
    Some(s)
}

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

/// What the host needs to classify a raised exception (cjm-core's `RaisedException`).
fn raised_exception(py: Python<'_>, err: &PyErr, cancel_phase: Option<&str>) -> Value {
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

use pyo3::types::PyString;

/// A cancellation answered without running plugin code.
fn cancelled_error(plugin: &str, phase: &str) -> Value {
    let message = format!("Plugin {plugin:?} cancelled by operator");
    Value::map([
        ("type_name", Value::from("PluginCancelledError")),
        (
            "mro",
            Value::List(
                [
                    "cjm_worker.errors.PluginCancelledError",
                    "cjm_worker.errors.PluginTransientError",
                    "cjm_worker.errors.PluginError",
                    "builtins.Exception",
                    "builtins.BaseException",
                    "builtins.object",
                ]
                .into_iter()
                .map(Value::from)
                .collect(),
            ),
        ),
        ("message", Value::Str(message.clone())),
        (
            "repr",
            Value::Str(format!("PluginCancelledError({message:?})")),
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

/// Ends the worker and everything it started.
/// The worker's `cgroup.kill`, opened at start when the host gave it a cgroup of
/// its own (`CJM_CGROUP_KILL`); -1 otherwise.
static CGROUP_KILL: AtomicI32 = AtomicI32::new(-1);

/// Opens `CJM_CGROUP_KILL`, so that leaving can take every process the worker
/// started, even those that left its process group.
fn open_cgroup_kill() {
    let Some(path) = std::env::var_os("CJM_CGROUP_KILL") else {
        return;
    };
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
        CGROUP_KILL.store(file.into_raw_fd(), Ordering::Release);
    }
}

/// Waits (at most two seconds) until the host has moved this process into the
/// cgroup `CJM_CGROUP` names, so that nothing the plugin starts begins outside it.
fn wait_for_cgroup() {
    let Some(want) = std::env::var_os("CJM_CGROUP") else {
        return;
    };
    let want = format!("0::{}", want.to_string_lossy());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut here = String::new();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .open("/proc/self/cgroup")
        {
            let _ = std::io::Read::read_to_string(&mut f, &mut here);
        }
        if here.lines().any(|l| l == want) {
            return;
        }
        if std::time::Instant::now() > deadline {
            eprintln!("cjm-worker: not moved into its cgroup ({want}); going on without it");
            return;
        }
        // A move usually lands within microseconds of the fork; a slow one waits
        // for a kernel grace period (milliseconds).
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Kills the worker's cgroup, this process included (async-signal-safe).
fn kill_cgroup() {
    let fd = CGROUP_KILL.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: write(2) of one byte to a descriptor this process opened.
        unsafe { libc::write(fd, b"1".as_ptr().cast(), 1) };
    }
}

fn exit_group(code: i32) -> ! {
    // The cgroup first: it holds the group and whatever left it, and this
    // process too, so nothing after it may be needed.
    kill_cgroup();
    // Only a process-group leader may take its group down: run by hand (not by a
    // host), a worker shares its shell's group and must not kill it.
    if rustix::process::getpgrp() == rustix::process::getpid() {
        // SAFETY: plain syscall; SIGKILL to our own group, which includes us.
        unsafe { libc::kill(0, libc::SIGKILL) };
    }
    // SAFETY: immediate exit without running Python finalizers (other threads may
    // hold the GIL forever).
    unsafe { libc::_exit(code) }
}

extern "C" fn on_parent_death(_signal: libc::c_int) {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        kill_cgroup();
        if libc::getpgrp() == libc::getpid() {
            libc::kill(0, libc::SIGKILL);
        }
        libc::_exit(0);
    }
}

fn host_gone(why: &str) -> ! {
    eprintln!("cjm-worker: {why}; exiting with the process group");
    exit_group(0)
}

struct Args {
    fd: RawFd,
    module: String,
    class: String,
    ppid: Option<i32>,
}

fn parse_args(argv: &[String]) -> PyResult<Args> {
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

/// `python -m cjm_worker …`: serve one plugin until the host goes away.
#[expect(
    clippy::too_many_lines,
    reason = "start-up is one sequence best read top to bottom"
)]
#[expect(
    clippy::similar_names,
    reason = "args and argv are the conventional pair"
)]
pub(crate) fn serve(py: Python<'_>, argv: &[String]) -> PyResult<i32> {
    let args = parse_args(argv)?;
    // Die with the host even if the channel somehow stays open (a backstop: EOF on
    // the channel is the primary signal). Not SIGKILL, which would take only this
    // process: the handler takes the whole group, as the channel thread does.
    open_cgroup_kill();
    wait_for_cgroup();
    // The plugin's environment is what its manifest declares, nothing of cjm's.
    let environ = py.import("os")?.getattr("environ")?;
    for name in ["CJM_CGROUP_KILL", "CJM_CGROUP"] {
        environ.call_method1("pop", (name, py.None()))?;
    }
    let parent_death_signal = libc::SIGRTMIN() + 2;
    // SAFETY: installs an async-signal-safe handler (getpgrp, getpid, kill, _exit)
    // for a real-time signal nothing else in the worker uses.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_parent_death as *const () as libc::sighandler_t;
        libc::sigaction(parent_death_signal, &raw const action, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, parent_death_signal);
    }
    if let Some(ppid) = args.ppid
        && rustix::process::getppid()
            .map(rustix::process::Pid::as_raw_nonzero)
            .map(std::num::NonZero::get)
            != Some(ppid)
    {
        host_gone("the host exited before the worker started");
    }
    // SAFETY: the host passed us this descriptor for our exclusive use.
    let fd = unsafe { OwnedFd::from_raw_fd(args.fd) };
    // Plugin subprocesses must not inherit the channel (they would keep it open).
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| PyRuntimeError::new_err(format!("cjm: --fd {}: {e}", args.fd)))?;
    let channel = Channel::from_fd(fd);
    let python: String = py.import("sys")?.getattr("version")?.extract()?;
    let hello = Message::Hello(Hello {
        protocol: PROTOCOL.into(),
        runtime: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        python: python.split_whitespace().next().unwrap_or_default().into(),
    });
    channel
        .send(
            hello.kind(),
            0,
            &hello
                .encode(Side::Worker)
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?,
        )
        .map_err(|e| PyRuntimeError::new_err(format!("cjm: cannot greet the host: {e}")))?;

    let plugin = match load_plugin(py, &args.module, &args.class) {
        Ok(p) => p,
        Err(e) => {
            let raised = raised_exception(py, &e, None);
            let msg = Message::LoadFailed(raised);
            if let Ok(w) = msg.encode(Side::Worker) {
                let _ = channel.send(msg.kind(), 0, &w);
            }
            return Ok(3);
        }
    };
    let plugin_name = plugin
        .getattr("name")
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| args.class.clone());
    let version = plugin
        .getattr("version")
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "0.0.0".into());
    let main_thread: i64 = py
        .import("_thread")?
        .getattr("get_ident")?
        .call0()?
        .extract()?;
    let (tx, rx) = mpsc::channel();
    let rt = Arc::new(Runtime {
        channel,
        jobs: Mutex::default(),
        queued: std::sync::atomic::AtomicUsize::new(0),
        ready: Condvar::new(),
        current: AtomicU64::new(0),
        cancelled: Mutex::default(),
        interrupted: AtomicU64::new(0),
        helper: Mutex::new(tx),
        plugin: plugin.clone().unbind(),
        plugin_name: plugin_name.clone(),
        main_thread,
        progress: Mutex::default(),
        pool: ShmPool::new(Side::Worker, 1 << 30),
        segments: Registry::default(),
    });
    if RUNTIME.set(Arc::clone(&rt)).is_err() {
        return Err(PyRuntimeError::new_err(
            "cjm: serve() called twice in one process",
        ));
    }
    wrap_reporters(py, &plugin)?;
    if py.import("sys")?.getattr("modules")?.contains("logging")? {
        py.import("cjm_worker._logbridge")?
            .call_method0("install")?;
    }
    rt.send(
        &Message::Ready(Value::map([
            ("name", Value::Str(plugin_name)),
            ("version", Value::Str(version)),
            ("pid", Value::from(std::process::id())),
        ])),
        0,
    );
    let ch = Arc::clone(&rt);
    std::thread::Builder::new()
        .name("cjm-channel".into())
        .spawn(move || ch.channel_loop())
        .map_err(|e| {
            PyRuntimeError::new_err(format!("cjm: cannot start the channel thread: {e}"))
        })?;
    let helper = Arc::clone(&rt);
    std::thread::Builder::new()
        .name("cjm-cancel".into())
        .spawn(move || helper.helper_loop(&rx))
        .map_err(|e| {
            PyRuntimeError::new_err(format!("cjm: cannot start the cancel thread: {e}"))
        })?;
    loop {
        let job = py.detach(|| rt.next_job());
        rt.run(py, job);
    }
}

fn load_plugin<'py>(py: Python<'py>, module: &str, class: &str) -> PyResult<Bound<'py, PyAny>> {
    let m = py.import(module)?;
    let cls = m.getattr(class)?;
    cls.call0()
}

/// Makes `report_progress` / `report_usage` push to the host, keeping the plugin's
/// own behaviour (storing `_progress`, `_status_message`, `_last_api_usage`).
fn wrap_reporters(py: Python<'_>, plugin: &Bound<'_, PyAny>) -> PyResult<()> {
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
        *rt.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (progress, message.clone());
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

/// `cjm_worker.shm_alloc(n)`: a writable shared-memory buffer the host receives
/// without a copy when the plugin returns it (or a numpy array over it).
pub(crate) fn shm_alloc(py: Python<'_>, nbytes: usize) -> PyResult<Bound<'_, PyAny>> {
    let rt = runtime()?;
    let buf = rt
        .pool
        .alloc(nbytes)
        .map_err(|e| PyRuntimeError::new_err(format!("cjm: shared memory: {e}")))?;
    let seg = Arc::clone(buf.segment());
    drop(buf);
    let mm = map_python(py, seg.fd().as_raw_fd(), true)?;
    let id = seg.id();
    rt.segments.register(py, &mm, id, Some(seg))?;
    let view = py.get_type::<pyo3::types::PyMemoryView>().call1((mm,))?;
    view.get_item(pyo3::types::PySlice::new(py, 0, nbytes as isize, 1))
}

/// `cjm_worker._native._emit_log(level, name, message)`: a log record for the host.
pub(crate) fn emit_log(level: i64, logger: String, message: String) -> PyResult<()> {
    let rt = runtime()?;
    let id = rt.current.load(Ordering::Acquire);
    rt.send(
        &Message::Log(cjm_proto::LogRecord {
            level,
            logger,
            message,
        }),
        id,
    );
    Ok(())
}
