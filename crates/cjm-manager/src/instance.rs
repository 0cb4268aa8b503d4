//! One loaded instance: its worker (if running), state, configuration, gates.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cjm_manifest::Manifest;
use cjm_proxy::{CallOptions, Worker, WorkerSpec};
use serde_json::{Map, Value};

use crate::error::ManagerError;
use crate::state::{CrashHistory, CrashRecord, InstanceState};

/// Locks, recovering from a poisoned lock (a panic elsewhere must not wedge the
/// manager).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A plugin lifecycle hook deferred until the instance's calls finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    OnDisable,
    OnEnable,
}

impl Hook {
    pub(crate) fn method(self) -> &'static str {
        match self {
            Self::OnDisable => "on_disable",
            Self::OnEnable => "on_enable",
        }
    }
}

/// A counting gate for the per-instance concurrency cap.
#[derive(Debug)]
pub(crate) struct Gate {
    permits: Mutex<Permits>,
    freed: Condvar,
}

#[derive(Debug)]
struct Permits {
    free: usize,
    /// Callers blocked in `acquire` now.
    waiting: usize,
}

impl Gate {
    pub(crate) fn new(permits: usize) -> Self {
        Self {
            permits: Mutex::new(Permits {
                free: permits.max(1),
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) {
        let mut permits = lock(&self.permits);
        if permits.free == 0 {
            permits.waiting += 1;
            while permits.free == 0 {
                permits = self
                    .freed
                    .wait(permits)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            permits.waiting -= 1;
        }
        permits.free -= 1;
    }

    pub(crate) fn release(&self) {
        lock(&self.permits).free += 1;
        self.freed.notify_one();
    }

    /// How many calls wait for a permit now.
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.permits).waiting
    }
}

/// Mutable facts about an instance, under one lock.
#[derive(Debug)]
pub(crate) struct Status {
    pub(crate) state: InstanceState,
    pub(crate) crashes: CrashHistory,
    pub(crate) last_crash: Option<CrashRecord>,
    pub(crate) quarantine: Option<String>,
    pub(crate) pending_hook: Option<Hook>,
    pub(crate) last_used: Duration,
}

/// A loaded instance of a plugin.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) plugin: String,
    pub(crate) manifest: Manifest,
    pub(crate) spec: WorkerSpec,
    pub(crate) config: Mutex<Map<String, Value>>,
    pub(crate) worker: Mutex<Option<Worker>>,
    /// Serializes starting and stopping the worker.
    pub(crate) lifecycle: Mutex<()>,
    pub(crate) status: Mutex<Status>,
    pub(crate) enabled: AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) gate: Option<Gate>,
    pub(crate) idle_ttl: Option<Duration>,
    /// Bumped for each new worker; a supervisor whose number is stale stops.
    pub(crate) generation: AtomicU64,
    /// What admission knows of it: its declared needs, GPU pin and start cost.
    pub(crate) placement: Mutex<Placement>,
    /// The pid of a worker spawned and still initializing (0: none), so that
    /// the memory it takes while it starts is counted as its own.
    pub(crate) starting_pid: std::sync::atomic::AtomicU32,
    /// The reference's hash of its configuration: the key of its empirical record.
    pub(crate) config_hash: Mutex<std::sync::Arc<str>>,
    /// The system monitor's instance: its worker is never evicted or reaped.
    pub(crate) kept: AtomicBool,
}

/// An instance's side of admission.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    /// The manifest's declared amounts (`resources.min_system_ram_mb`,
    /// `min_gpu_vram_mb`), the prior of its footprint.
    pub(crate) declared: Option<cjm_sched::Footprint>,
    /// The manifest's `resources.requires_gpu`.
    pub(crate) requires_gpu: bool,
    /// The raw `resources` block, as the reference's policies read it.
    pub(crate) block: Option<Map<String, Value>>,
    /// The GPU its worker is pinned to (`CUDA_VISIBLE_DEVICES`), once placed.
    pub(crate) device: Option<u32>,
    /// How long its last start took, in milliseconds: the cost of evicting it.
    pub(crate) start_ms: f64,
    /// Whether the log has said that it wants a GPU and none is here.
    pub(crate) said_no_gpu: bool,
    /// What its calls were measured to need, under its current configuration.
    pub(crate) record: Option<cjm_stores::EmpiricalRecord>,
}

impl Placement {
    /// From the manifest's `resources` block.
    pub(crate) fn of(manifest: &Manifest) -> Self {
        let resources = manifest.code.resources.as_ref();
        let block = resources.map(|r| {
            let mut block = r.extra.clone();
            block.insert("requires_gpu".into(), r.requires_gpu.into());
            block
        });
        Self {
            declared: cjm_sched::footprint::declared(block.as_ref()),
            requires_gpu: resources.is_some_and(|r| r.requires_gpu),
            block,
            ..Self::default()
        }
    }
}

impl Instance {
    pub(crate) fn worker(&self) -> Option<Worker> {
        lock(&self.worker).clone()
    }

    /// Its worker's pid: the running one's, or the one starting.
    /// The hash its empirical record is keyed by, for `config`.
    pub(crate) fn hash_of(config: &Map<String, Value>) -> std::sync::Arc<str> {
        cjm_stores::compute_config_hash(Some(config)).into()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.worker()
            .map(|w| w.pid())
            .or_else(|| Some(self.starting_pid.load(Ordering::Acquire)).filter(|p| *p != 0))
    }

    pub(crate) fn state(&self) -> InstanceState {
        let stored = lock(&self.status).state;
        if stored == InstanceState::Ready && self.in_flight.load(Ordering::Acquire) > 0 {
            InstanceState::Busy
        } else {
            stored
        }
    }

    /// The error a call to this quarantined instance gets.
    pub(crate) fn crash_looping(&self, reason: String) -> ManagerError {
        ManagerError::CrashLooping {
            plugin: self.plugin.clone(),
            instance_id: self.id.clone(),
            reason,
        }
    }

    /// Queues `hook`; an opposite hook still waiting cancels out with it. It runs
    /// now if no call is in flight, else after the last one.
    pub(crate) fn defer_hook(&self, hook: Hook) {
        {
            let mut status = lock(&self.status);
            status.pending_hook = match status.pending_hook {
                Some(pending) if pending != hook => None,
                _ => Some(hook),
            };
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            self.fire_pending_hook();
        }
    }

    /// Runs the queued hook, if any, in the worker, if one runs.
    pub(crate) fn fire_pending_hook(&self) {
        let Some(hook) = lock(&self.status).pending_hook.take() else {
            return;
        };
        if let Some(w) = self.worker()
            && let Err(e) = w.call_blocking(hook.method(), vec![], vec![], CallOptions::default())
        {
            tracing::warn!(
                "{}() of instance {} of plugin {} failed: {e}",
                hook.method(),
                self.id,
                self.plugin
            );
        }
    }
}
