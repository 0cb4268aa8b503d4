//! The public handle on one worker: [`Worker`] (start, calls blocking and async,
//! streams, pings, stats, phased cancel, restart, graceful stop) and the types a
//! call hands back ([`PendingCall`], [`CallStream`]) or takes ([`CallOptions`],
//! [`CancelPolicy`]). The process itself, and everything that runs while it
//! lives, is in `process.rs`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cjm_core::{CancelPhase, PluginError, PluginRef};
use cjm_proto::{Call, Hello, Kind, ShmBufferMut, Value};

use crate::completion::{Completion, Wait};
use crate::deadline::Deadline;
use crate::error::{Death, WorkerError};
use crate::event::Event;
use crate::lock::lock;
use crate::pending::{Outcome, ReplyTo};
use crate::process::Process;
use crate::spec::WorkerSpec;
use crate::stats::{self, WorkerStats};

/// Per-call options.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Fail with a timeout (and cancel the call) after this long.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn timeout(t: Duration) -> Self {
        Self { timeout: Some(t) }
    }
}

/// How hard and how patiently to cancel.
#[derive(Debug, Clone, Copy)]
pub struct CancelPolicy {
    /// How long each phase waits for the call to end before the next one.
    pub grace: Duration,
    /// Start a fresh worker after killing one.
    pub restart: bool,
}

impl Default for CancelPolicy {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(2),
            restart: true,
        }
    }
}

/// A phase of a cancel as it begins ([`Worker::cancel_blocking_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// The plugin is asked to stop (`plugin.cancel()`; `check_cancel()` raises).
    Asking,
    /// The grace ran out: an exception is raised in the running Python thread.
    Interrupting,
    /// The grace ran out again: the worker's process group is killed.
    Killing,
    /// A fresh worker is started in place of the killed one.
    Restarting,
}

/// A call in flight.
pub struct PendingCall {
    id: u64,
    plugin: String,
    completion: Arc<Completion<Outcome>>,
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PendingCall {
    /// The call's id (the request id on the channel).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Blocks until the outcome arrives.
    pub fn wait(self) -> Result<Value, WorkerError> {
        self.completion
            .wait(None)
            .unwrap_or_else(|| Err(self.timeout_error(Duration::ZERO)))
    }

    /// Blocks up to `timeout`; `Err(self)` if it has not finished.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<Value, WorkerError>, Self> {
        match self.completion.wait(Some(timeout)) {
            Some(o) => Ok(o),
            None => Err(self),
        }
    }

    /// Awaits the outcome.
    pub async fn outcome(self) -> Result<Value, WorkerError> {
        Wait(&self.completion).await
    }

    fn timeout_error(&self, t: Duration) -> WorkerError {
        WorkerError::Plugin(PluginError::Timeout {
            plugin: PluginRef::new(self.plugin.clone()),
            timeout: t,
        })
    }
}

/// A streamed call: chunks until the end or an error.
#[derive(Debug)]
pub struct CallStream {
    id: u64,
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<Value, WorkerError>>,
}

impl CallStream {
    /// The call's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Value, WorkerError>> {
        self.rx.recv().await
    }

    /// The next chunk, blocking; `None` at the end.
    pub fn next_blocking(&mut self) -> Option<Result<Value, WorkerError>> {
        self.rx.blocking_recv()
    }
}

impl Iterator for CallStream {
    type Item = Result<Value, WorkerError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_blocking()
    }
}

/// The host side of one worker: a Python plugin in its own process, reached over a
/// private channel. Cloning is cheap; the worker is killed when the last clone
/// drops, unless stopped before.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    spec: WorkerSpec,
    process: Mutex<Arc<Process>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("plugin", &self.inner.spec.plugin)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: so is the worker (and everything it started).
        let p = self
            .process
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        p.kill();
        let _ = p.wait_exit(Some(&Deadline::real(Duration::from_secs(5))));
        p.join_threads();
    }
}

impl Worker {
    /// Starts the worker and waits for the plugin to load (blocking).
    pub fn spawn(spec: WorkerSpec) -> Result<Self, WorkerError> {
        let process = Process::spawn(&spec)?;
        Ok(Self {
            inner: Arc::new(Inner {
                spec,
                process: Mutex::new(process),
            }),
        })
    }

    /// Starts the worker without blocking the async runtime.
    pub async fn spawn_async(spec: WorkerSpec) -> Result<Self, WorkerError> {
        let plugin = spec.plugin.clone();
        let python = spec.python.clone();
        tokio::task::spawn_blocking(move || Self::spawn(spec))
            .await
            .map_err(|e| WorkerError::Spawn {
                plugin,
                python,
                source: std::io::Error::other(e.to_string()),
            })?
    }

    fn process(&self) -> Arc<Process> {
        Arc::clone(&lock(&self.inner.process))
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.inner.spec.plugin
    }

    /// The spec the worker was started with.
    pub fn spec(&self) -> &WorkerSpec {
        &self.inner.spec
    }

    /// The worker's pid (its process group id too).
    pub fn pid(&self) -> u32 {
        self.process().pid
    }

    /// The worker's greeting (protocol, runtime version, Python version).
    pub fn hello(&self) -> Hello {
        self.process().hello.clone()
    }

    /// What the plugin said about itself when it loaded (`name`, `version`).
    pub fn info(&self) -> Value {
        self.process().info.clone()
    }

    /// Subscribes to what the worker pushes: progress, logs, usage, output, exit.
    pub fn events(&self) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
        self.process().events.subscribe()
    }

    /// A writable shared-memory buffer: fill it, `freeze()` it and pass it in a
    /// call, and the worker reads it without a copy.
    pub fn alloc(&self, len: usize) -> Result<ShmBufferMut, WorkerError> {
        let p = self.process();
        p.pool.alloc(len).map_err(|source| WorkerError::Protocol {
            plugin: p.plugin.clone(),
            source,
        })
    }

    /// Sends a call and returns at once.
    pub fn start(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<PendingCall, WorkerError> {
        let p = self.process();
        let completion = Arc::new(Completion::new());
        let call = Call {
            method: method.to_owned(),
            args,
            kwargs,
        };
        let id = p.start(&call, ReplyTo::Call(Arc::clone(&completion)))?;
        Ok(PendingCall {
            id,
            plugin: p.plugin.clone(),
            completion,
        })
    }

    /// Calls `method` and blocks for its result.
    ///
    /// A call's timeout is measured on the system's clock (`Instant`, and
    /// `tokio::time` for [`Worker::call`]), not the spec's clock: a call is the
    /// hot path (about 15 µs a round trip, `bench/RESULTS.md`), and reading a
    /// shared clock through a lock on every wait would cost a measurable part of
    /// that.
    pub fn call_blocking(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        opts: CallOptions,
    ) -> Result<Value, WorkerError> {
        let pending = self.start(method, args, kwargs)?;
        match opts.timeout {
            None => pending.wait(),
            Some(t) => match pending.wait_timeout(t) {
                Ok(outcome) => outcome,
                Err(pending) => Err(self.timed_out(&pending, t)),
            },
        }
    }

    /// Calls `method` and awaits its result.
    pub async fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        opts: CallOptions,
    ) -> Result<Value, WorkerError> {
        let pending = self.start(method, args, kwargs)?;
        match opts.timeout {
            None => pending.outcome().await,
            Some(t) => {
                let completion = Arc::clone(&pending.completion);
                match tokio::time::timeout(t, Wait(&completion)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(self.timed_out(&pending, t)),
                }
            }
        }
    }

    /// A call that ran out of time: cancel it in the background (phases and all)
    /// and report the timeout now.
    fn timed_out(&self, pending: &PendingCall, t: Duration) -> WorkerError {
        let worker = self.clone();
        let id = pending.id;
        let _ = std::thread::Builder::new()
            .name("cjm-timeout-cancel".into())
            .spawn(move || {
                let _ = worker.cancel_blocking(id, CancelPolicy::default());
            });
        pending.timeout_error(t)
    }

    /// `plugin.execute(*args, **kwargs)`, blocking.
    pub fn execute_blocking(
        &self,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, WorkerError> {
        self.call_blocking("execute", args, kwargs, CallOptions::default())
    }

    /// `plugin.execute(*args, **kwargs)`.
    pub async fn execute(
        &self,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, WorkerError> {
        self.call("execute", args, kwargs, CallOptions::default())
            .await
    }

    /// `plugin.execute_stream(*args, **kwargs)`: chunks as the plugin yields them.
    pub fn stream(
        &self,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<CallStream, WorkerError> {
        let p = self.process();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let call = Call {
            method: "execute_stream".into(),
            args,
            kwargs,
        };
        let id = p.start(&call, ReplyTo::Stream(tx))?;
        Ok(CallStream { id, rx })
    }

    /// Round trip of a ping through the worker's channel thread (answers even while
    /// plugin code holds the GIL).
    pub fn ping_blocking(&self, timeout: Duration) -> Result<Duration, WorkerError> {
        // A round-trip time is a measurement, not a deadline: the system's clock.
        let started = Instant::now();
        self.control(Kind::Ping, timeout)?;
        Ok(started.elapsed())
    }

    /// What the worker reports about itself (its view: current call, queue, progress).
    pub fn worker_stats_blocking(&self, timeout: Duration) -> Result<Value, WorkerError> {
        self.control(Kind::StatsRequest, timeout)
    }

    fn control(&self, kind: Kind, timeout: Duration) -> Result<Value, WorkerError> {
        let p = self.process();
        let completion = Arc::new(Completion::new());
        // Control requests use the call table for their answers.
        let id = p.start_control(kind, ReplyTo::Call(Arc::clone(&completion)))?;
        if let Some(outcome) = completion.wait(Some(timeout)) {
            return outcome;
        }
        p.forget(id);
        Err(WorkerError::Plugin(PluginError::Timeout {
            plugin: PluginRef::new(p.plugin.clone()),
            timeout,
        }))
    }

    /// What the worker's own cgroup counts (memory now, its peak, its limit,
    /// OOM kills inside it), where the machine delegates a cgroup v2 memory
    /// controller to cjm; `None` elsewhere.
    pub fn cgroup_memory(&self) -> Option<crate::CgroupMemory> {
        self.process().cgroup_memory()
    }

    /// Process statistics from procfs: RSS and CPU of the worker and its children.
    pub fn stats(&self) -> Result<WorkerStats, WorkerError> {
        let p = self.process();
        stats::collect(p.pid).map_err(|e| WorkerError::Died {
            plugin: p.plugin.clone(),
            death: p.death().unwrap_or(Death {
                exit: None,
                probable_oom: false,
                oom_evidence: None,
                log_file: None,
                killed_by_host: false,
                stderr_tail: vec![format!("reading /proc failed: {e}")],
            }),
        })
    }

    /// Cancels call `id` in phases: cooperative (`plugin.cancel()`, so
    /// `check_cancel()` raises), then an exception raised in the running Python
    /// thread, then killing the worker's process group (and restarting it if the
    /// policy says so). Returns the phase that ended the call, or `None` if the call
    /// had already finished.
    pub fn cancel_blocking(
        &self,
        id: u64,
        policy: CancelPolicy,
    ) -> Result<Option<CancelPhase>, WorkerError> {
        self.cancel_blocking_with(id, policy, &mut |_| {})
    }

    /// [`Worker::cancel_blocking`], telling `step` as each phase begins (a
    /// queue records them on the job as they happen).
    pub fn cancel_blocking_with(
        &self,
        id: u64,
        policy: CancelPolicy,
        step: &mut (dyn FnMut(CancelStep) + Send),
    ) -> Result<Option<CancelPhase>, WorkerError> {
        let p = self.process();
        if !p.is_pending(id) {
            return Ok(None);
        }
        step(CancelStep::Asking);
        // Each grace starts before its request goes out, so whatever the worker
        // does in answer (an acknowledgement, an event) comes after the deadline
        // is set: a test that moves a manual clock on an acknowledgement moves it
        // past this deadline, never before it.
        let grace = p.deadline(policy.grace);
        let _ = p.send_control(Kind::Cancel, id);
        if p.wait_settled(id, &grace) {
            return Ok(Some(CancelPhase::Cooperative));
        }
        step(CancelStep::Interrupting);
        let grace = p.deadline(policy.grace);
        let _ = p.send_control(Kind::Interrupt, id);
        if p.wait_settled(id, &grace) {
            return Ok(Some(CancelPhase::Interrupted));
        }
        step(CancelStep::Killing);
        p.kill_for_cancel(id);
        // A killed worker's status: a safety bound, on the system's clock.
        let _ = p.wait_exit(Some(&Deadline::real(
            policy.grace.max(Duration::from_secs(5)),
        )));
        if policy.restart {
            step(CancelStep::Restarting);
            self.restart_blocking()?;
        }
        Ok(Some(CancelPhase::Killed))
    }

    /// [`Worker::cancel_blocking`] without blocking the async runtime.
    pub async fn cancel(
        &self,
        id: u64,
        policy: CancelPolicy,
    ) -> Result<Option<CancelPhase>, WorkerError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.cancel_blocking(id, policy))
            .await
            .unwrap_or(Ok(None))
    }

    /// Replaces the worker process with a fresh one (killing the old one if alive).
    pub fn restart_blocking(&self) -> Result<(), WorkerError> {
        let old = self.process();
        old.kill();
        let _ = old.wait_exit(Some(&Deadline::real(Duration::from_secs(5))));
        let fresh = Process::spawn(&self.inner.spec)?;
        *lock(&self.inner.process) = fresh;
        Ok(())
    }

    /// Whether the worker process is alive.
    pub fn is_alive(&self) -> bool {
        self.process().death().is_none()
    }

    /// How the worker died, if it did.
    pub fn death(&self) -> Option<Death> {
        self.process().death()
    }

    /// Waits for the worker process to exit, at most `timeout` (on the system's
    /// clock, as a call's own timeout).
    pub fn wait_exit_blocking(&self, timeout: Duration) -> Option<Death> {
        self.process().wait_exit(Some(&Deadline::real(timeout)))
    }

    /// Stops gracefully: `cleanup()` (bounded), then a shutdown request, SIGTERM
    /// and SIGKILL to the process group, each bounded by the spec's grace.
    pub fn stop_blocking(&self) -> Death {
        let p = self.process();
        let death = self.stop_process(&p);
        p.join_threads();
        death
    }

    fn stop_process(&self, p: &Process) -> Death {
        let spec = &self.inner.spec;
        if p.death().is_none() {
            self.cleanup_before_stop();
            p.expect_exit();
            let _ = p.send_control(Kind::Shutdown, 0);
            if let Some(d) = p.wait_exit(Some(&p.deadline(spec.stop_grace))) {
                return d;
            }
            p.terminate();
            if let Some(d) = p.wait_exit(Some(&p.deadline(spec.stop_grace))) {
                return d;
            }
            p.kill();
        }
        p.wait_exit(None).unwrap_or(Death {
            exit: None,
            probable_oom: false,
            oom_evidence: None,
            log_file: spec.log_file.clone(),
            killed_by_host: true,
            stderr_tail: Vec::new(),
        })
    }

    /// Calls `cleanup()` and waits for it, at most the spec's cleanup timeout on
    /// its clock (the deadline of a stop, unlike a call's own timeout); one that
    /// overruns is cancelled in the background as a call past its timeout is.
    fn cleanup_before_stop(&self) {
        let limit = self.inner.spec.cleanup_timeout;
        let Ok(mut pending) = self.start("cleanup", vec![], vec![]) else {
            return;
        };
        let deadline = self.process().deadline(limit);
        while let Some(wait) = deadline.next_wait() {
            match pending.wait_timeout(wait) {
                Ok(_) => return,
                Err(still) => pending = still,
            }
        }
        let _ = self.timed_out(&pending, limit);
    }

    /// [`Worker::stop_blocking`] without blocking the async runtime.
    pub async fn stop(&self) -> Death {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.stop_blocking())
            .await
            .unwrap_or(Death {
                exit: None,
                probable_oom: false,
                oom_evidence: None,
                log_file: None,
                killed_by_host: true,
                stderr_tail: Vec::new(),
            })
    }
}
