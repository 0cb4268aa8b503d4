//! Admission: whether a call may start now, under the manager's [`Policy`].
//!
//! - `fit` (the default) asks [`cjm_sched::Scheduler`] with a [`View`] built from
//!   the latest sample and the instances as they are now, and carries out its
//!   decision: run under a permit, evict idle workers and ask again, wait with a
//!   reason and ask again, or fail with the numbers.
//! - `safety` and `queue` check the manifest's declared amounts against the
//!   reference's stats, as the reference does; when they block, idle instances
//!   are evicted least recently used first, then the call fails.
//! - `permissive` admits everything.
//!
//! A call on a running worker that fits is decided without blocking, on any
//! thread; everything else (starting a worker, evicting, waiting) blocks, and
//! the async path runs it off the runtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cjm_proxy::Worker;
use cjm_sched::fit::{Activity, Loaded, Request, View};
use cjm_sched::{Decision, Permit, Policy};

use super::Manager;
use super::monitor::Snapshot;
use crate::error::ManagerError;
use crate::instance::{Instance, lock};
use crate::state::{InstanceState, ManagerEvent};

/// The longest a waiting call sleeps before it samples and asks again, when
/// nothing it can see changes sooner.
const RECHECK: Duration = Duration::from_millis(100);

/// A call that may run: its worker, and the reservation it runs under.
pub(super) struct Admitted {
    pub(super) worker: Worker,
    pub(super) permit: Option<Permit>,
}

/// Where a call stands after the first, non-blocking look.
pub(super) enum Quick {
    /// It runs now.
    Ready(Admitted),
    /// It needs blocking work first.
    Later(Step),
}

/// The blocking work a call needs before it runs.
pub(super) enum Step {
    /// Start the worker (under this permit, on its device).
    Start(Option<Permit>),
    /// Carry out a `fit` decision.
    Fit(Decision),
    /// A reference policy blocked it on this sample.
    Blocked(cjm_sched::policy::Blocked),
}

impl Manager {
    /// Admits a call on `inst`, blocking as long as the policy says, starting
    /// its worker if needed.
    pub(super) fn place(&self, inst: &Arc<Instance>) -> Result<Admitted, ManagerError> {
        match self.quick(inst) {
            Quick::Ready(admitted) => Ok(admitted),
            Quick::Later(step) => self.finish(inst, step),
        }
    }

    /// The first look at a call, which never blocks on memory or a worker.
    pub(super) fn quick(&self, inst: &Arc<Instance>) -> Quick {
        let ready = |permit| match inst.worker() {
            Some(worker) if worker.is_alive() => Quick::Ready(Admitted { worker, permit }),
            _ => Quick::Later(Step::Start(permit)),
        };
        match &self.inner.scheduling {
            Policy::Permissive => ready(None),
            Policy::Safety | Policy::Queue { .. } => {
                match self.check_declared(inst, &self.snapshot()) {
                    Ok(()) => ready(None),
                    Err(blocked) => Quick::Later(Step::Blocked(blocked)),
                }
            }
            Policy::Fit(_) if inst.worker().is_some() => {
                let fit = self
                    .inner
                    .fit
                    .as_ref()
                    .expect("the fit policy has a scheduler");
                let snapshot = self.snapshot();
                let request = self.request(inst, &snapshot);
                // The reason there is no GPU only words a wait, which this
                // view never decides.
                let own = View {
                    loaded: loaded(inst, &snapshot).into_iter().collect(),
                    no_gpu_reason: None,
                    devices: snapshot.devices.clone(),
                    ..self.bare_view_without_devices(&snapshot)
                };
                match fit.admit_from_own_view(&request, &own) {
                    Some(permit) => ready(Some(permit)),
                    None => Quick::Later(Step::Fit(self.decide(inst, &snapshot))),
                }
            }
            Policy::Fit(_) => match self.decide(inst, &self.snapshot()) {
                Decision::Admit(permit) => ready(Some(permit)),
                other => Quick::Later(Step::Fit(other)),
            },
        }
    }

    /// Carries a call from `step` to running, or to its error.
    pub(super) fn finish(
        &self,
        inst: &Arc<Instance>,
        step: Step,
    ) -> Result<Admitted, ManagerError> {
        let mut wait_id = None;
        let started = self.inner.clock.now();
        let out = self.steps(inst, step, &mut wait_id);
        if wait_id.is_some() {
            self.inner.waits.clear(wait_id);
            if out.is_ok() {
                self.emit(&ManagerEvent::Admitted {
                    instance_id: inst.id.clone(),
                    waited: self.inner.clock.now().saturating_sub(started),
                });
            }
        }
        out
    }

    fn steps(
        &self,
        inst: &Arc<Instance>,
        mut step: Step,
        wait_id: &mut Option<u64>,
    ) -> Result<Admitted, ManagerError> {
        let clock = &self.inner.clock;
        let started = clock.now();
        loop {
            step = match step {
                Step::Start(permit) => {
                    if let Some(worker) = inst.worker() {
                        if worker.is_alive() {
                            return Ok(Admitted { worker, permit });
                        }
                        // It died and its supervisor's restart waits out a
                        // backoff: this call starts a fresh worker now (the
                        // crash is counted all the same).
                        self.stop_instance(inst);
                    }
                    if let Some(device) = permit.as_ref().and_then(Permit::device) {
                        lock(&inst.placement).device = Some(device);
                    }
                    let worker = self.start_instance(inst)?;
                    return Ok(Admitted { worker, permit });
                }
                Step::Fit(Decision::Admit(permit)) => Step::Start(Some(permit)),
                Step::Fit(Decision::Never(never)) => {
                    return Err(ManagerError::Never {
                        plugin: inst.plugin.clone(),
                        never: Box::new(never),
                    });
                }
                Step::Fit(Decision::Evict(victims)) => {
                    let seen = self.inner.monitor.latest().seq;
                    for victim in &victims {
                        let stopped = self.evict(victim, inst);
                        if let Some(fit) = &self.inner.fit {
                            fit.evicted(victim, stopped);
                        }
                    }
                    Step::Fit(self.decide(inst, &self.fresh_snapshot(seen)))
                }
                Step::Fit(Decision::Wait(wait, ticket)) => {
                    let waited = clock.now().saturating_sub(started);
                    if waited >= self.inner.admission_timeout {
                        return Err(ManagerError::Waited {
                            plugin: inst.plugin.clone(),
                            instance_id: inst.id.clone(),
                            waited,
                            wait: Box::new(wait),
                        });
                    }
                    if wait_id.is_none() {
                        tracing::info!("{wait}");
                    }
                    self.inner
                        .waits
                        .set(wait_id, &inst.id, wait.to_string(), started);
                    self.emit(&ManagerEvent::Waiting {
                        instance_id: inst.id.clone(),
                        reason: wait.to_string(),
                    });
                    let seen = self.inner.monitor.latest().seq;
                    let left = self.inner.admission_timeout.saturating_sub(waited);
                    if let Some(fit) = &self.inner.fit {
                        fit.wait_for_change(ticket, left.min(RECHECK));
                    }
                    Step::Fit(self.decide(inst, &self.fresh_snapshot(seen)))
                }
                Step::Blocked(blocked) => self.after_blocked(inst, blocked, started, wait_id)?,
            };
        }
    }

    /// The reference's path once a `safety` or `queue` check fails: `queue`
    /// checks again until its timeout; then idle instances are evicted, least
    /// recently used first, checking after each; then the call fails.
    fn after_blocked(
        &self,
        inst: &Arc<Instance>,
        mut blocked: cjm_sched::policy::Blocked,
        started: Duration,
        wait_id: &mut Option<u64>,
    ) -> Result<Step, ManagerError> {
        let clock = &self.inner.clock;
        if let Policy::Queue {
            timeout,
            poll_interval,
        } = self.inner.scheduling
        {
            // Said once, and listed in `resources()` while it waits.
            let reason = format!("{} waits (queue policy): {blocked}", inst.plugin);
            tracing::info!("{reason}");
            self.inner
                .waits
                .set(wait_id, &inst.id, reason.clone(), started);
            self.emit(&ManagerEvent::Waiting {
                instance_id: inst.id.clone(),
                reason,
            });
            let waited = clock.now().saturating_sub(started);
            let left = timeout.saturating_sub(waited);
            let polled = cjm_sched::policy::poll_until_fits(&**clock, left, poll_interval, || {
                let seen = self.inner.monitor.latest().seq;
                self.check_declared(inst, &self.fresh_snapshot(seen))
            });
            match polled {
                Ok(()) => return Ok(Step::Start(None)),
                Err(b) => blocked = b,
            }
        }
        let mut evicted = Vec::new();
        for victim in self.lru_idle(inst) {
            if !self.evict(&victim, inst) {
                continue;
            }
            evicted.push(victim);
            let seen = self.inner.monitor.latest().seq;
            match self.check_declared(inst, &self.fresh_snapshot(seen)) {
                Ok(()) => return Ok(Step::Start(None)),
                Err(b) => blocked = b,
            }
        }
        Err(ManagerError::Blocked {
            instance_id: inst.id.clone(),
            policy: self.inner.scheduling.name(),
            blocked,
            evicted,
        })
    }

    /// The reference's `_check_resources` on a sample.
    fn check_declared(
        &self,
        inst: &Instance,
        snapshot: &Snapshot,
    ) -> Result<(), cjm_sched::policy::Blocked> {
        let block = lock(&inst.placement).block.clone();
        cjm_sched::policy::check_declared(
            &inst.plugin,
            block.as_ref(),
            &snapshot.stats,
            matches!(self.inner.scheduling, Policy::Safety),
        )
    }

    /// Other instances with an idle worker, least recently used first.
    pub(super) fn lru_idle(&self, inst: &Instance) -> Vec<String> {
        let mut idle: Vec<(Duration, String)> = self
            .inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|i| i.id != inst.id && i.worker().is_some())
            .filter(|i| i.in_flight.load(Ordering::Acquire) == 0 && !i.kept.load(Ordering::Acquire))
            .map(|i| (lock(&i.status).last_used, i.id.clone()))
            .collect();
        idle.sort();
        idle.into_iter().map(|(_, id)| id).collect()
    }

    /// One `fit` decision for a call on `inst`.
    fn decide(&self, inst: &Instance, snapshot: &Snapshot) -> Decision {
        let fit = self
            .inner
            .fit
            .as_ref()
            .expect("the fit policy has a scheduler");
        fit.decide(&self.request(inst, snapshot), &self.view(snapshot))
    }

    /// What a call on `inst` asks for.
    fn request(&self, inst: &Instance, snapshot: &Snapshot) -> Request {
        let mut placement = lock(&inst.placement);
        let mut expected = cjm_sched::footprint::expect(
            placement.declared,
            placement.record.as_ref(),
            self.inner.footprint_margin,
        );
        let mut requires_gpu = placement.requires_gpu;
        if snapshot.devices.is_empty() && (requires_gpu || expected.footprint.vram_bytes > 0) {
            // As the reference's policies do without GPU stats: run it anyway.
            if !placement.said_no_gpu {
                placement.said_no_gpu = true;
                tracing::warn!(
                    "plugin {} (instance {}) says it needs a GPU ({expected}) and there is none \
                     here ({}); it runs without one",
                    inst.plugin,
                    inst.id,
                    snapshot
                        .no_gpu_reason
                        .as_deref()
                        .unwrap_or("no GPU was found"),
                );
            }
            requires_gpu = false;
            expected.footprint.vram_bytes = 0;
        }
        Request {
            instance: inst.id.clone(),
            plugin: inst.plugin.clone(),
            expected,
            requires_gpu,
            // The instance's own gate caps its calls before admission.
            max_concurrent: None,
        }
    }

    /// What one decision looks at: `snapshot`'s memory, and every instance with
    /// a worker as it is now.
    pub(super) fn view(&self, snapshot: &Snapshot) -> View {
        let loaded = self
            .inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter_map(|inst| loaded(inst, snapshot))
            .collect();
        View {
            loaded,
            ..self.bare_view(snapshot)
        }
    }

    /// `snapshot`'s machine, with no instance listed.
    fn bare_view(&self, snapshot: &Snapshot) -> View {
        View {
            devices: snapshot.devices.clone(),
            no_gpu_reason: snapshot.no_gpu_reason.clone(),
            ..self.bare_view_without_devices(snapshot)
        }
    }

    /// `snapshot`'s memory, with no GPU and no instance listed.
    fn bare_view_without_devices(&self, snapshot: &Snapshot) -> View {
        View {
            ram_free_bytes: snapshot.ram_free_bytes,
            ram_capacity_bytes: snapshot.ram_capacity_bytes,
            devices: Vec::new(),
            no_gpu_reason: None,
            loaded: Vec::new(),
            max_workers: self.inner.max_workers,
            sampled_at: snapshot.taken_at,
        }
    }

    /// Stops idle instance `id` to make room for a call on `inst`; `false` when
    /// it could not be evicted (a call started on it meanwhile).
    pub(super) fn evict(&self, id: &str, inst: &Instance) -> bool {
        let Some(victim) = self.get(id) else {
            return true;
        };
        if victim.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        tracing::info!(
            "evicting idle instance {id} of plugin {} to make room for {} (plugin {})",
            victim.plugin,
            inst.id,
            inst.plugin
        );
        self.stop_instance(&victim);
        self.emit(&ManagerEvent::Evicted {
            instance_id: victim.id.clone(),
            plugin: victim.plugin.clone(),
            for_instance: inst.id.clone(),
        });
        true
    }
}

/// `inst` as a decision sees it; `None` when it has no worker.
fn loaded(inst: &Instance, snapshot: &Snapshot) -> Option<Loaded> {
    let worker = inst.worker();
    let (state, last_used) = {
        let status = lock(&inst.status);
        (status.state, status.last_used)
    };
    let activity = match state {
        InstanceState::Starting => Activity::Starting,
        InstanceState::Stopping => Activity::Stopping,
        _ if worker.is_none() => return None,
        _ if inst.in_flight.load(Ordering::Acquire) > 0 => Activity::Busy,
        _ if inst.kept.load(Ordering::Acquire) => Activity::Kept,
        _ => Activity::Idle,
    };
    let placement = lock(&inst.placement);
    Some(Loaded {
        instance: inst.id.clone(),
        plugin: inst.plugin.clone(),
        activity,
        last_used,
        held: inst
            .pid()
            .and_then(|pid| snapshot.held.get(&pid).copied())
            .unwrap_or_default(),
        device: placement.device,
        reload_ms: placement.start_ms,
    })
}
