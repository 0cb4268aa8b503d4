//! The call path: a turn under the instance's concurrency cap ([`Slot`]),
//! admission (enabled, then the policy, the worker started on demand), the call,
//! and the [`Running`] guard that counts it in flight, holds its reservation,
//! resets the idle clock and fires a deferred hook after the last one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cjm_core::PluginError;
use cjm_proto::Value;
use cjm_proxy::{CallOptions, WorkerError};
use cjm_sched::Permit;

use super::admission::{Admitted, Quick};
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
        let admitted = self.admit(&inst)?;
        let _running = Running::enter(self, &inst, admitted.permit);
        Ok(admitted
            .worker
            .call_blocking(method, args, kwargs, options)?)
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
        let admitted = match self.quick(&inst) {
            Quick::Ready(admitted) => admitted,
            Quick::Later(step) => {
                let (me, waiting) = (self.clone(), Arc::clone(&inst));
                off_runtime(&inst.plugin, move || me.finish(&waiting, step)).await?
            }
        };
        let _running = Running::enter(self, &inst, admitted.permit);
        Ok(admitted.worker.execute(args, kwargs).await?)
    }

    /// Calls the plugin's `prefetch()` (load models ahead of the first job),
    /// starting the worker if needed.
    pub fn prefetch(&self, id: &str) -> Result<(), ManagerError> {
        self.call(id, "prefetch", vec![], vec![], CallOptions::default())
            .map(drop)
    }
}

/// Refuses work for a disabled instance, with the typed error.
fn enabled(inst: &Instance) -> Result<(), ManagerError> {
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
async fn off_runtime<T: Send + 'static>(
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
    inst: &'a Instance,
    /// Released after the call is counted out.
    _permit: Option<Permit>,
}

impl<'a> Running<'a> {
    pub(super) fn enter(manager: &'a Manager, inst: &'a Instance, permit: Option<Permit>) -> Self {
        if inst.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            manager.inner.hub.call_transition(inst, true);
        }
        Self {
            manager,
            inst,
            _permit: permit,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let inst = self.inst;
        lock(&inst.status).last_used = self.manager.inner.clock.now();
        let left = inst.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 {
            self.manager.inner.hub.call_transition(inst, false);
        }
        if left == 0 && lock(&inst.status).pending_hook.is_some() {
            inst.fire_pending_hook();
        }
    }
}
