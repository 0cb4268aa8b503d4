//! Out-of-memory recovery, as the reference's retry loop does it: a call (or the
//! start of its worker) that fails because memory ran out — the plugin's own
//! `PluginResourceError`, or the worker killed by a signal the host did not send,
//! as the kernel's OOM killer does — evicts the least recently used idle worker
//! beside it, restarts its own worker, and tries again, at most
//! [`ManagerOptions::oom_retries`](super::ManagerOptions::oom_retries) times. The
//! error of the last try says why it gave up.

use std::sync::Arc;

use cjm_core::{ErrorCategory, WorkerExit};
use cjm_proxy::WorkerError;

use super::Manager;
use crate::error::ManagerError;
use crate::instance::{Instance, lock};
use crate::state::ManagerEvent;

/// Whether `e` says memory ran out.
pub(super) fn out_of_memory(e: &ManagerError) -> bool {
    match e {
        ManagerError::Worker(WorkerError::Plugin(p)) | ManagerError::Plugin(p) => {
            p.category() == ErrorCategory::Resource
        }
        ManagerError::Worker(WorkerError::Died { death, .. }) => {
            !death.killed_by_host
                && (death.probable_oom || death.exit == Some(WorkerExit::Signal(libc::SIGKILL)))
        }
        _ => false,
    }
}

impl Manager {
    /// Makes room after try `attempt` of a call on `inst` ran out of memory:
    /// the least recently used idle instance beside it (on its GPU, for one
    /// pinned to a GPU) is evicted, and `inst`'s own worker is stopped, so the
    /// next try starts a fresh one (a CUDA allocator after an out-of-memory is
    /// best reset by a new process, as the reference reasons).
    pub(super) fn recover(&self, inst: &Arc<Instance>, attempt: usize, error: &ManagerError) {
        let retries = self.inner.oom_retries;
        tracing::warn!(
            "instance {} of plugin {} ran out of memory (try {attempt} of {}): {error}; \
             evicting an idle worker, restarting it and trying again",
            inst.id,
            inst.plugin,
            retries + 1
        );
        self.emit(&ManagerEvent::OutOfMemory {
            instance_id: inst.id.clone(),
            attempt,
            error: error.to_string(),
        });
        let device = lock(&inst.placement).device;
        let victim = self.lru_idle(inst).into_iter().find(|id| {
            device.is_none()
                || self
                    .get(id)
                    .is_some_and(|v| lock(&v.placement).device == device)
        });
        if let Some(victim) = victim {
            // Its memory is awaited as after any eviction: a driver may free it late.
            if let Some(fit) = &self.inner.fit {
                fit.evicting(&victim, &self.view(&self.snapshot()));
            }
            let stopped = self.evict(&victim, inst);
            if let Some(fit) = &self.inner.fit {
                fit.evicted(&victim, stopped);
            }
        }
        self.stop_instance(inst);
    }
}
