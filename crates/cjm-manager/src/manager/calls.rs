//! The call path: admitting a call (enabled, started on demand), making it, and the
//! [`Running`] guard that holds the concurrency cap, counts it in flight, resets
//! the idle clock and fires a deferred hook after the last one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cjm_core::PluginError;
use cjm_proto::Value;
use cjm_proxy::{CallOptions, Worker, WorkerError};

use super::{Manager, plugin_ref};
use crate::error::ManagerError;
use crate::instance::{Instance, lock};

impl Manager {
    /// Checks that `inst` takes work and returns its worker, started on demand.
    pub(super) fn admit(&self, inst: &Arc<Instance>) -> Result<Worker, ManagerError> {
        if !inst.enabled.load(Ordering::Acquire) {
            return Err(ManagerError::Plugin(PluginError::Disabled {
                plugin: plugin_ref(inst),
            }));
        }
        if let Some(w) = inst.worker() {
            return Ok(w);
        }
        self.start_instance(inst)
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
        let worker = self.admit(&inst)?;
        let _running = Running::enter(self, &inst);
        Ok(worker.call_blocking(method, args, kwargs, options)?)
    }

    /// `execute(*args, **kwargs)` on instance `id`, awaited.
    pub async fn execute_async(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, ManagerError> {
        let inst = self.instance(id)?;
        let worker = match inst.worker() {
            Some(w) if inst.enabled.load(Ordering::Acquire) => w,
            _ => {
                let (me, admitted) = (self.clone(), Arc::clone(&inst));
                off_runtime(&inst.plugin, move || me.admit(&admitted)).await?
            }
        };
        if inst.gate.is_some() {
            // The cap blocks a thread while waiting; keep that off the runtime.
            let (me, id) = (self.clone(), id.to_owned());
            return off_runtime(&inst.plugin, move || me.execute(&id, args, kwargs)).await;
        }
        let _running = Running::enter(self, &inst);
        Ok(worker.execute(args, kwargs).await?)
    }

    /// Calls the plugin's `prefetch()` (load models ahead of the first job),
    /// starting the worker if needed.
    pub fn prefetch(&self, id: &str) -> Result<(), ManagerError> {
        self.call(id, "prefetch", vec![], vec![], CallOptions::default())
            .map(drop)
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

/// A call in flight: the concurrency cap held, counted, the idle clock reset, and
/// on the way out a deferred hook fired if this was the last call.
pub(super) struct Running<'a> {
    manager: &'a Manager,
    inst: &'a Instance,
}

impl<'a> Running<'a> {
    pub(super) fn enter(manager: &'a Manager, inst: &'a Instance) -> Self {
        if let Some(g) = &inst.gate {
            g.acquire();
        }
        if inst.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            manager.inner.hub.call_transition(inst, true);
        }
        Self { manager, inst }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let inst = self.inst;
        lock(&inst.status).last_used = self.manager.inner.clock.now();
        let left = inst.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if let Some(g) = &inst.gate {
            g.release();
        }
        if left == 0 {
            self.manager.inner.hub.call_transition(inst, false);
        }
        if left == 0 && lock(&inst.status).pending_hook.is_some() {
            inst.fire_pending_hook();
        }
    }
}
