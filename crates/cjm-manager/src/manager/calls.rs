//! The call path: a turn under the instance's concurrency cap ([`Slot`]),
//! admission (enabled, then the policy, the worker started on demand), the call,
//! and the [`Running`] guard that counts it in flight, holds its reservation,
//! resets the idle clock and fires a deferred hook after the last one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use cjm_core::PluginError;
use cjm_proto::Value;
use cjm_proxy::{CallOptions, WorkerError};
use cjm_sched::Permit;

use super::admission::{Admitted, Quick};
use super::record::Ended;
use super::recovery::out_of_memory;
use super::{Manager, plugin_ref};
use crate::error::ManagerError;
use crate::instance::{Gate, Instance, lock};

impl Manager {
    /// Checks that `inst` takes work, then admits the call (its worker started
    /// on demand).
    pub(super) fn admit(&self, inst: &Arc<Instance>) -> Result<Admitted, ManagerError> {
        enabled(inst)?;
        self.place(inst)
    }

    /// `execute(*args, **kwargs)` on instance `id`.
    pub fn execute(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, ManagerError> {
        self.call(id, "execute", args, kwargs, CallOptions::default())
    }

    /// Any method of instance `id`'s plugin.
    ///
    /// A call that runs out of memory is tried again after making room
    /// ([`ManagerOptions::oom_retries`](super::ManagerOptions::oom_retries)).
    pub fn call(
        &self,
        id: &str,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        options: CallOptions,
    ) -> Result<Value, ManagerError> {
        let inst = self.instance(id)?;
        let _slot = Slot::take(&inst);
        let mut tries = Tries::new(self, args, kwargs);
        loop {
            let (args, kwargs) = tries.arguments();
            let outcome = self.admit(&inst).and_then(|admitted| {
                let mut running = Running::enter(self, &inst, admitted.permit, method == "execute");
                let out = match options.timeout {
                    // Past its timeout the manager cancels it, so that a worker
                    // the cancel kills is restarted and initialized again.
                    Some(t) => self.call_timed(&inst, &admitted.worker, method, (args, kwargs), t),
                    None => admitted.worker.call_blocking(method, args, kwargs, options),
                };
                running.succeeded(out.is_ok());
                Ok(out?)
            });
            match tries.after(outcome) {
                After::Done(outcome) => return outcome.map_err(|e| tries.last_error(&inst, e)),
                After::Retry(e) => self.recover(&inst, tries.attempt, &e),
            }
        }
    }

    /// `execute(*args, **kwargs)` on instance `id`, awaited.
    pub async fn execute_async(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, ManagerError> {
        let inst = self.instance(id)?;
        if inst.gate.is_some() {
            // The cap blocks a thread while waiting; keep that off the runtime.
            let (me, id) = (self.clone(), id.to_owned());
            return off_runtime(&inst.plugin, move || me.execute(&id, args, kwargs)).await;
        }
        enabled(&inst)?;
        let mut tries = Tries::new(self, args, kwargs);
        loop {
            let (args, kwargs) = tries.arguments();
            let admitted = match self.quick(&inst) {
                Quick::Ready(admitted) => Ok(admitted),
                Quick::Later(step) => {
                    let (me, waiting) = (self.clone(), Arc::clone(&inst));
                    off_runtime(&inst.plugin, move || me.finish(&waiting, step)).await
                }
            };
            let outcome = match admitted {
                Ok(admitted) => {
                    let mut running = Running::enter(self, &inst, admitted.permit, true);
                    let out = admitted.worker.execute(args, kwargs).await;
                    running.succeeded(out.is_ok());
                    out.map_err(ManagerError::from)
                }
                Err(e) => Err(e),
            };
            match tries.after(outcome) {
                After::Done(outcome) => return outcome.map_err(|e| tries.last_error(&inst, e)),
                After::Retry(e) => {
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

    /// Calls the plugin's `prefetch()` (load models ahead of the first job),
    /// starting the worker if needed.
    pub fn prefetch(&self, id: &str) -> Result<(), ManagerError> {
        self.call(id, "prefetch", vec![], vec![], CallOptions::default())
            .map(drop)
    }
}

/// The tries of one call: its arguments kept for a retry (values share their
/// buffers, so a copy is cheap), and how many times it ran out of memory.
pub(super) struct Tries {
    retries: usize,
    pub(super) attempt: usize,
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
}

/// What follows a try.
pub(super) enum After {
    /// The call's outcome.
    Done(Result<Value, ManagerError>),
    /// It ran out of memory and may be tried again.
    Retry(ManagerError),
}

impl Tries {
    pub(super) fn new(manager: &Manager, args: Vec<Value>, kwargs: Vec<(String, Value)>) -> Self {
        Self {
            retries: manager.inner.oom_retries,
            attempt: 0,
            args,
            kwargs,
        }
    }

    /// This try's arguments: a copy while another try may follow.
    pub(super) fn arguments(&mut self) -> (Vec<Value>, Vec<(String, Value)>) {
        if self.attempt < self.retries {
            (self.args.clone(), self.kwargs.clone())
        } else {
            (
                std::mem::take(&mut self.args),
                std::mem::take(&mut self.kwargs),
            )
        }
    }

    pub(super) fn after(&mut self, outcome: Result<Value, ManagerError>) -> After {
        match outcome {
            Err(e) if self.attempt < self.retries && out_of_memory(&e) => {
                self.attempt += 1;
                After::Retry(e)
            }
            other => After::Done(other),
        }
    }

    /// The error of the last try: after retries for memory, one that says so.
    pub(super) fn last_error(&self, inst: &Instance, e: ManagerError) -> ManagerError {
        if self.attempt > 0 && out_of_memory(&e) {
            ManagerError::OutOfMemory {
                plugin: inst.plugin.clone(),
                instance_id: inst.id.clone(),
                tries: self.attempt + 1,
                last: Box::new(e),
            }
        } else {
            e
        }
    }
}

/// Refuses work for a disabled instance, with the typed error.
pub(super) fn enabled(inst: &Instance) -> Result<(), ManagerError> {
    if inst.enabled.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(ManagerError::Plugin(PluginError::Disabled {
            plugin: plugin_ref(inst),
        }))
    }
}

/// Runs blocking manager work for plugin `plugin` on the runtime's blocking pool.
/// A task that panicked, or never ran because the runtime shut down, reads as
/// the worker gone.
pub(super) async fn off_runtime<T: Send + 'static>(
    plugin: &str,
    work: impl FnOnce() -> Result<T, ManagerError> + Send + 'static,
) -> Result<T, ManagerError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| {
        ManagerError::Worker(WorkerError::Died {
            plugin: plugin.to_owned(),
            death: cjm_proxy::Death::default(),
        })
    })?
}

/// A turn under an instance's concurrency cap (`max_concurrent`), taken before
/// admission so that a call waiting for its turn reserves nothing.
pub(super) struct Slot<'a>(Option<&'a Gate>);

impl<'a> Slot<'a> {
    pub(super) fn take(inst: &'a Instance) -> Self {
        if let Some(g) = &inst.gate {
            g.acquire();
        }
        Self(inst.gate.as_ref())
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.release();
        }
    }
}

/// A call in flight: counted, its reservation held, the idle clock reset, and
/// on the way out a deferred hook fired if this was the last call.
pub(super) struct Running<'a> {
    manager: &'a Manager,
    inst: &'a Arc<Instance>,
    /// Released after the call is counted out.
    _permit: Option<Permit>,
    /// When it started, if its sample is recorded.
    started: Option<Instant>,
    success: bool,
}

impl<'a> Running<'a> {
    /// Counts a call in; with `record`, its sample is recorded when it ends.
    pub(super) fn enter(
        manager: &'a Manager,
        inst: &'a Arc<Instance>,
        permit: Option<Permit>,
        record: bool,
    ) -> Self {
        Self {
            manager,
            inst,
            _permit: permit,
            started: call_started(manager, inst, record),
            success: false,
        }
    }

    /// Says how the call ended (a call dropped before this failed).
    pub(super) fn succeeded(&mut self, ok: bool) {
        self.success = ok;
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        call_ended(self.manager, self.inst, self.started, self.success);
    }
}

/// Counts a call on `inst` in; with `record`, returns when it started, for
/// its sample.
pub(super) fn call_started(manager: &Manager, inst: &Instance, record: bool) -> Option<Instant> {
    if inst.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
        manager.inner.hub.call_transition(inst, true);
    }
    (record && manager.inner.recorder.on()).then(Instant::now)
}

/// Counts a call on `inst` out: the idle clock reset, a deferred hook fired
/// after the last one, its sample recorded if it `started` recording.
pub(super) fn call_ended(
    manager: &Manager,
    inst: &Arc<Instance>,
    started: Option<Instant>,
    success: bool,
) {
    lock(&inst.status).last_used = manager.inner.clock.now();
    let left = inst.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
    if left == 0 {
        manager.inner.hub.call_transition(inst, false);
    }
    if left == 0 && lock(&inst.status).pending_hook.is_some() {
        inst.fire_pending_hook();
    }
    if let Some(started) = started {
        manager.inner.recorder.send(Ended {
            inst: Arc::clone(inst),
            config_hash: Arc::clone(&lock(&inst.config_hash)),
            pid: inst.pid(),
            duration: started.elapsed(),
            success,
            at: SystemTime::now(),
        });
    }
}
