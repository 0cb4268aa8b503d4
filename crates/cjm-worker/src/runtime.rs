//! The worker's shared state, its channel thread and its main loop.
//!
//! A worker runs three threads:
//! - The **channel thread** (Rust, never takes the GIL) receives every frame. It
//!   answers pings and stats requests, queues calls, routes cancels, and when the
//!   host's end closes it kills the worker's whole process group at once, whatever
//!   plugin code is doing (`lifeline.rs`).
//! - The **main thread** runs plugin code: it waits for the next call with the GIL
//!   released, then decodes the arguments, calls the plugin and sends the result
//!   (`dispatch.rs`).
//! - The **cancel thread** takes the GIL only to deliver cancellation (calling
//!   `plugin.cancel()`, or raising an exception asynchronously in the main thread),
//!   so a plugin that holds the GIL can delay a cancel but never a ping (`cancel.rs`).
//!
//! [`serve`] starts them and greets the host; [`Runtime`] is what they share.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use cjm_proto::{Channel, Frame, Hello, Kind, Message, PROTOCOL, ShmPool, Side, Value, Writer};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::args::parse_args;
use crate::cancel::CancelJob;
use crate::lifeline::{die_with_parent, exit_group, host_gone, open_cgroup_kill, wait_for_cgroup};
use crate::raised::{cancelled_error, raised_exception};
use crate::report::wrap_reporters;
use crate::segments::Registry;

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

/// Everything the worker's threads share.
pub(crate) struct Runtime {
    channel: Channel,
    /// Calls received and not started, for the main thread.
    jobs: Mutex<Jobs>,
    /// Length of `jobs.queue`, readable without the lock.
    queued: AtomicUsize,
    /// Wakes the main thread parked in `next_job`.
    ready: Condvar,
    /// The call the main thread is running; 0 when idle.
    pub(crate) current: AtomicU64,
    /// Calls the host cancelled that have not finished.
    pub(crate) cancelled: Mutex<HashSet<u64>>,
    /// The call into which the cancel thread raised `CancelInterrupt`; 0 if none.
    pub(crate) interrupted: AtomicU64,
    pub(crate) cancel_thread: Mutex<mpsc::Sender<CancelJob>>,
    pub(crate) plugin: Py<PyAny>,
    pub(crate) plugin_name: String,
    /// `_thread.get_ident()` of the main thread, where interrupts are raised.
    pub(crate) main_thread: i64,
    /// What the plugin last reported in the running call, for stats requests.
    pub(crate) progress: Mutex<(f64, String)>,
    pub(crate) pool: ShmPool,
    pub(crate) segments: Registry,
}

impl Runtime {
    /// Sends a message, reporting (not raising) failures: the channel thread notices
    /// a dead host on its own and ends the process.
    pub(crate) fn send(&self, msg: &Message, id: u64) {
        match msg.encode(Side::Worker) {
            Ok(w) => self.send_writer(msg.kind(), id, &w),
            Err(e) => eprintln!(
                "cjm-worker: cannot encode {} message: {e}",
                msg.kind().name()
            ),
        }
    }

    pub(crate) fn send_writer(&self, kind: Kind, id: u64, w: &Writer) {
        if let Err(e) = self.channel.send(kind, id, w) {
            eprintln!("cjm-worker: cannot send {} message: {e}", kind.name());
        }
    }

    fn next_job(&self) -> Job {
        // Spin briefly (yielding the CPU each turn) before parking: in a stream of
        // small calls the next one usually arrives within microseconds, and taking
        // it while still on the CPU saves waking a parked thread.
        let spin_until = Instant::now() + Duration::from_micros(60);
        while self.queued.load(Ordering::Acquire) == 0 && Instant::now() < spin_until {
            std::thread::yield_now();
        }
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
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
                .unwrap_or_else(PoisonError::into_inner);
            jobs.sleeping = false;
        }
    }

    pub(crate) fn is_cancelled(&self, id: u64) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
                    let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
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
                Kind::Interrupt => self.to_cancel_thread(CancelJob::Interrupt(id)),
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

    /// Removes call `id` from the queue; false if it was not there (running or done).
    pub(crate) fn unqueue(&self, id: u64) -> bool {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let before = jobs.queue.len();
        jobs.queue.retain(|j| j.id != id);
        self.queued.store(jobs.queue.len(), Ordering::Release);
        before != jobs.queue.len()
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
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .len();
        let (progress, message) = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = (0.0, String::new());
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
    open_cgroup_kill();
    wait_for_cgroup();
    // The plugin's environment is what its manifest declares, nothing of cjm's.
    let environ = py.import("os")?.getattr("environ")?;
    for name in ["CJM_CGROUP_KILL", "CJM_CGROUP"] {
        environ.call_method1("pop", (name, py.None()))?;
    }
    die_with_parent(args.ppid);
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
        queued: AtomicUsize::new(0),
        ready: Condvar::new(),
        current: AtomicU64::new(0),
        cancelled: Mutex::default(),
        interrupted: AtomicU64::new(0),
        cancel_thread: Mutex::new(tx),
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
    let canceller = Arc::clone(&rt);
    std::thread::Builder::new()
        .name("cjm-cancel".into())
        .spawn(move || canceller.cancel_loop(&rx))
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
