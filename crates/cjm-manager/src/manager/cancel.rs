//! [`CallCancel`]: a handle that stops one call from outside, whenever it is
//! asked: before the call starts (it never starts), or while it runs (the
//! worker's phases: ask the plugin, interrupt its thread, kill and restart
//! the worker). A job queue holds one per running job, for its cancel and
//! its timeout, and hears through it what the plugin reports as it runs
//! ([`CallReport`]: progress, log records).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cjm_core::{CancelPhase, PluginError};
use cjm_proto::Value;
use cjm_proxy::{CancelPolicy, CancelStep, Event, PendingCall, Worker, WorkerError};

use super::admission::Quick;
use super::calls::{After, Running, Slot, Tries, enabled, off_runtime};
use super::{Manager, plugin_ref};
use crate::error::ManagerError;
use crate::instance::{Instance, lock};

/// What a cancel's observer is told as each phase begins.
type OnStep = Box<dyn FnMut(CancelStep) + Send>;

/// What a call's observer is told as the plugin reports.
type OnReport = Box<dyn FnMut(CallReport) + Send>;

/// What a running call's plugin pushed to the host
/// ([`CallCancel::on_report`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallReport {
    /// `report_progress(progress, message)`.
    Progress {
        /// 0.0 to 1.0, or -1.0 when unknown.
        progress: f64,
        /// What it is doing, in words.
        message: String,
    },
    /// A `logging` record made while the call ran.
    Log {
        /// Python's level number (20: `INFO`).
        level: i64,
        /// The logger's name.
        logger: String,
        /// The message, formatted.
        message: String,
    },
    /// The call ran out of memory and is tried again (an idle worker
    /// evicted, its own restarted), as [`Manager::execute`]'s calls are.
    Retrying {
        /// The try that failed (1 for the first).
        attempt: usize,
        /// How it failed.
        error: String,
    },
}

/// How often a blocked caller looks for the running call's reports.
const REPORT_EVERY: Duration = Duration::from_millis(50);

/// Stops one call from outside ([`Manager::execute_cancellable`]).
///
/// Cheap to clone; every clone is the same handle. A handle serves one call.
#[derive(Clone)]
pub struct CallCancel {
    inner: Arc<State>,
}

struct State {
    requested: AtomicBool,
    /// The cancel of the running call was sent (once).
    fired: AtomicBool,
    /// The call running now.
    call: Mutex<Option<Call>>,
    policy: CancelPolicy,
    on_step: Mutex<Option<OnStep>>,
    on_report: Mutex<Option<OnReport>>,
    /// The thread that cancels the running call, once it was sent.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A running call: where it runs and its number, and the manager that
/// restarts its worker after a kill.
#[derive(Clone)]
struct Call {
    manager: Manager,
    inst: Arc<Instance>,
    worker: Worker,
    id: u64,
}

impl std::fmt::Debug for CallCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCancel")
            .field("requested", &self.is_requested())
            .finish_non_exhaustive()
    }
}

impl Default for CallCancel {
    fn default() -> Self {
        Self::new(CancelPolicy::default())
    }
}

impl CallCancel {
    /// A handle whose cancel waits `policy.grace` at each phase and restarts
    /// a killed worker when `policy.restart` says so.
    pub fn new(policy: CancelPolicy) -> Self {
        Self {
            inner: Arc::new(State {
                requested: AtomicBool::new(false),
                fired: AtomicBool::new(false),
                call: Mutex::new(None),
                policy,
                on_step: Mutex::new(None),
                on_report: Mutex::new(None),
                thread: Mutex::new(None),
            }),
        }
    }

    /// A handle with `grace` at each phase, restarting a killed worker.
    pub fn with_grace(grace: Duration) -> Self {
        Self::new(CancelPolicy {
            grace,
            restart: true,
        })
    }

    /// Tells `f` each phase of the cancel as it begins (in place of any
    /// observer set before).
    pub fn on_step(&self, f: impl FnMut(CancelStep) + Send + 'static) {
        *lock(&self.inner.on_step) = Some(Box::new(f));
    }

    /// Tells `f` what the running call's plugin reports (progress, log
    /// records), as it comes, in place of any observer set before. Set before
    /// the call starts; nothing is listened for without one.
    pub fn on_report(&self, f: impl FnMut(CallReport) + Send + 'static) {
        *lock(&self.inner.on_report) = Some(Box::new(f));
    }

    /// Asks for the call to stop; returns at once. The call's outcome says
    /// how far the cancel had to go.
    pub fn cancel(&self) {
        if self.inner.requested.swap(true, Ordering::AcqRel) {
            return;
        }
        self.fire();
    }

    /// Whether a cancel was asked for.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::Acquire)
    }

    /// Cancels the running call, if there is one, on a thread of its own
    /// (each phase waits out a grace).
    fn fire(&self) {
        let Some(call) = lock(&self.inner.call).clone() else {
            return;
        };
        if self.inner.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cjm-cancel".into())
            .spawn(move || {
                let tell = |step| {
                    if let Some(f) = lock(&me.inner.on_step).as_mut() {
                        f(step);
                    }
                };
                // The manager restarts a killed worker itself: a fresh process
                // is initialized with the instance's configuration.
                let policy = CancelPolicy {
                    restart: false,
                    ..me.inner.policy
                };
                let Call {
                    manager,
                    inst,
                    worker,
                    id,
                } = call;
                match worker.cancel_blocking_with(id, policy, &mut { tell }) {
                    Ok(Some(CancelPhase::Killed)) if me.inner.policy.restart => {
                        tell(CancelStep::Restarting);
                        manager.restart_after_kill(&inst, worker.pid());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("cancelling a call of plugin {}: {e}", worker.plugin());
                    }
                }
            });
        match spawned {
            Ok(thread) => *lock(&self.inner.thread) = Some(thread),
            Err(e) => tracing::warn!("cannot start a thread to cancel a call: {e}"),
        }
    }

    /// The error of a call cancelled before it started.
    fn before_start(inst: &Instance) -> ManagerError {
        ManagerError::Plugin(PluginError::Cancelled {
            plugin: plugin_ref(inst),
            phase: CancelPhase::Cooperative,
        })
    }

    /// Runs `execute` on `worker` as the call this handle stops.
    async fn run(
        &self,
        at: (&Manager, &Arc<Instance>),
        worker: &Worker,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, WorkerError> {
        let reports = self.listens().then(|| worker.events());
        let pending = worker.start("execute", args, kwargs)?;
        let id = pending.id();
        self.running(at, worker, id);
        let out = match reports {
            None => pending.outcome().await,
            Some(mut reports) => {
                let outcome = pending.outcome();
                tokio::pin!(outcome);
                let out = loop {
                    tokio::select! {
                        biased;
                        out = &mut outcome => break out,
                        e = reports.recv() => match e {
                            Some(e) => self.report(id, e),
                            None => break (&mut outcome).await,
                        },
                    }
                };
                // What the worker pushed before its result is told first.
                self.drain(id, &mut reports);
                out
            }
        };
        // A cancel that killed the worker restarts it before the call is over,
        // so the next call finds a fresh one.
        if let Some(thread) = self.ended() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        out
    }

    /// Runs `execute` on `worker`, blocking; reports are looked for every
    /// [`REPORT_EVERY`] while it runs.
    fn run_blocking(
        &self,
        at: (&Manager, &Arc<Instance>),
        worker: &Worker,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, WorkerError> {
        let reports = self.listens().then(|| worker.events());
        let pending = worker.start("execute", args, kwargs)?;
        let id = pending.id();
        self.running(at, worker, id);
        let out = match reports {
            None => pending.wait(),
            Some(mut reports) => {
                let mut pending: PendingCall = pending;
                let out = loop {
                    match pending.wait_timeout(REPORT_EVERY) {
                        Ok(out) => break out,
                        Err(still) => pending = still,
                    }
                    self.drain(id, &mut reports);
                };
                self.drain(id, &mut reports);
                out
            }
        };
        if let Some(thread) = self.ended() {
            let _ = thread.join();
        }
        out
    }

    /// Whether an observer waits for reports.
    fn listens(&self) -> bool {
        lock(&self.inner.on_report).is_some()
    }

    /// Tells the observer what call `id`'s worker pushed so far.
    fn drain(&self, id: u64, reports: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) {
        while let Ok(e) = reports.try_recv() {
            self.report(id, e);
        }
    }

    /// Tells the observer that the call is tried again after try `attempt`
    /// failed with `error`.
    fn retrying(&self, attempt: usize, error: &ManagerError) {
        if let Some(f) = lock(&self.inner.on_report).as_mut() {
            f(CallReport::Retrying {
                attempt,
                error: error.to_string(),
            });
        }
    }

    /// Tells the observer `e`, if it is a report of call `id`.
    fn report(&self, id: u64, e: Event) {
        let report = match e {
            Event::Progress {
                call,
                progress,
                message,
            } if call == id => CallReport::Progress { progress, message },
            Event::Log {
                call,
                level,
                logger,
                message,
            } if call == id => CallReport::Log {
                level,
                logger,
                message,
            },
            _ => return,
        };
        if let Some(f) = lock(&self.inner.on_report).as_mut() {
            f(report);
        }
    }

    /// The call is over: forgotten, and the thread cancelling it, if one
    /// was started, handed back to be joined.
    fn ended(&self) -> Option<std::thread::JoinHandle<()>> {
        *lock(&self.inner.call) = None;
        lock(&self.inner.thread).take()
    }

    /// Call `id` runs on `worker`: a cancel asked for meanwhile is sent now.
    fn running(&self, (manager, inst): (&Manager, &Arc<Instance>), worker: &Worker, id: u64) {
        *lock(&self.inner.call) = Some(Call {
            manager: manager.clone(),
            inst: Arc::clone(inst),
            worker: worker.clone(),
            id,
        });
        if self.is_requested() {
            self.fire();
        }
    }
}

impl Manager {
    /// `method` on `worker` with a timeout: past it, the call is cancelled in
    /// phases on a thread of its own (a worker the cancel kills is restarted
    /// and initialized by the manager) and the caller gets the timeout now.
    pub(super) fn call_timed(
        &self,
        inst: &Arc<Instance>,
        worker: &Worker,
        method: &str,
        (args, kwargs): (Vec<Value>, Vec<(String, Value)>),
        timeout: Duration,
    ) -> Result<Value, WorkerError> {
        let pending = worker.start(method, args, kwargs)?;
        match pending.wait_timeout(timeout) {
            Ok(outcome) => outcome,
            Err(pending) => {
                let cancel = CallCancel::default();
                cancel.running((self, inst), worker, pending.id());
                cancel.cancel();
                Err(WorkerError::Plugin(PluginError::Timeout {
                    plugin: plugin_ref(inst),
                    timeout,
                }))
            }
        }
    }

    /// `execute(*args, **kwargs)` on instance `id`, awaited, stopped by
    /// `cancel` whenever it is asked: a call cancelled before it started never
    /// starts; a running one is stopped in the worker's phases. Either way the
    /// outcome is the plugin's `Cancelled` error with the phase that ended it.
    /// Calls out of memory are tried again, as [`Manager::execute`]'s are,
    /// unless cancelled.
    pub async fn execute_cancellable(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        cancel: &CallCancel,
    ) -> Result<Value, ManagerError> {
        let inst = self.instance(id)?;
        enabled(&inst)?;
        let mut tries = Tries::new(self, args, kwargs);
        loop {
            if cancel.is_requested() {
                return Err(CallCancel::before_start(&inst));
            }
            let (args, kwargs) = tries.arguments();
            let outcome = if inst.gate.is_some() {
                // The cap blocks a thread while waiting; keep that off the runtime.
                let (me, cancel, waiting) = (self.clone(), cancel.clone(), Arc::clone(&inst));
                off_runtime(&inst.plugin, move || {
                    let _slot = Slot::take(&waiting);
                    let admitted = me.admit(&waiting)?;
                    let mut running = Running::enter(&me, &waiting, admitted.permit, true);
                    let out = cancel.run_blocking((&me, &waiting), &admitted.worker, args, kwargs);
                    running.succeeded(out.is_ok());
                    Ok(out?)
                })
                .await
            } else {
                let admitted = match self.quick(&inst) {
                    Quick::Ready(admitted) => Ok(admitted),
                    Quick::Later(step) => {
                        let (me, waiting) = (self.clone(), Arc::clone(&inst));
                        off_runtime(&inst.plugin, move || me.finish(&waiting, step)).await
                    }
                };
                match admitted {
                    Ok(admitted) => {
                        let mut running = Running::enter(self, &inst, admitted.permit, true);
                        let out = cancel
                            .run((self, &inst), &admitted.worker, args, kwargs)
                            .await;
                        running.succeeded(out.is_ok());
                        out.map_err(ManagerError::from)
                    }
                    Err(e) => Err(e),
                }
            };
            let outcome = match outcome {
                Err(e) if cancel.is_requested() => return Err(e),
                other => other,
            };
            match tries.after(outcome) {
                After::Done(outcome) => {
                    return outcome.map_err(|e| tries.last_error(&inst, e));
                }
                After::Retry(e) => {
                    cancel.retrying(tries.attempt, &e);
                    let (me, failed, attempt) = (self.clone(), Arc::clone(&inst), tries.attempt);
                    off_runtime(&inst.plugin, move || {
                        me.recover(&failed, attempt, &e);
                        Ok(())
                    })
                    .await?;
                }
            }
        }
    }
}
