//! What the scheduler sees, for people: [`Manager::resources`], which
//! `cjm-ctl resources` prints. The latest sample, what running calls reserved,
//! each loaded instance's footprint (held now and expected), and every call that
//! waits, with its reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cjm_sched::{Expected, Footprint};

use super::Manager;
use crate::instance::lock;
use crate::state::InstanceState;

/// The scheduler's picture of the machine and the instances.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The admission policy: `fit`, `safety`, `queue` or `permissive`.
    pub policy: &'static str,
    /// Where GPU readings come from, in words.
    pub gpu_source: String,
    /// When the sample was taken, on the manager's clock.
    pub sampled_at: Duration,
    /// RAM a new allocation can get now.
    pub ram_free_bytes: u64,
    /// The most RAM there could be.
    pub ram_capacity_bytes: u64,
    /// What admitted calls reserved and their workers do not hold yet.
    pub ram_reserved_bytes: u64,
    /// The GPUs.
    pub devices: Vec<DeviceResources>,
    /// Every loaded instance.
    pub instances: Vec<InstanceResources>,
    /// Every call waiting to be admitted.
    pub waiting: Vec<WaitingCall>,
    /// Each environment's forkserver (the warm interpreter workers are forked
    /// from) and what it holds: memory the environment costs beside its workers.
    pub forkservers: Vec<ForkserverResources>,
}

/// One environment's forkserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkserverResources {
    /// The environment's interpreter.
    pub python: std::path::PathBuf,
    /// The server's pid.
    pub pid: u32,
    /// Its RSS.
    pub ram_bytes: u64,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceResources {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its memory.
    pub total_bytes: u64,
    /// Its memory no one holds.
    pub free_bytes: u64,
    /// Reserved by admitted calls and not yet held.
    pub reserved_bytes: u64,
}

/// One loaded instance.
#[derive(Debug, Clone)]
pub struct InstanceResources {
    /// Its id.
    pub id: String,
    /// Its plugin.
    pub plugin: String,
    /// Its state.
    pub state: InstanceState,
    /// Its worker's pid.
    pub pid: Option<u32>,
    /// Its GPU.
    pub device: Option<u32>,
    /// What its worker and the worker's children hold now.
    pub held: Footprint,
    /// The worker's processes (itself and its live descendants).
    pub processes: usize,
    /// Their CPU time, in seconds.
    pub cpu_seconds: f64,
    /// What a call on it is expected to need, and why.
    pub expected: Expected,
    /// Calls running on it under a reservation.
    pub running: usize,
}

/// A call waiting to be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCall {
    /// The instance it is for.
    pub instance_id: String,
    /// Why it waits, as its error would say if it gave up now.
    pub reason: String,
    /// How long it has waited.
    pub waited: Duration,
}

/// The calls that wait now, each under its own number.
#[derive(Debug, Default)]
pub(super) struct Waits {
    next: AtomicU64,
    now: std::sync::Mutex<Vec<(u64, String, String, Duration)>>,
}

impl Waits {
    /// Records (or updates) the wait of the call numbered `*id`, numbering it
    /// on its first wait.
    pub(super) fn set(
        &self,
        id: &mut Option<u64>,
        instance: &str,
        reason: String,
        since: Duration,
    ) {
        let mut now = lock(&self.now);
        if let Some(w) = id.and_then(|n| now.iter_mut().find(|w| w.0 == n)) {
            w.2 = reason;
        } else {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            *id = Some(n);
            now.push((n, instance.to_owned(), reason, since));
        }
    }

    /// Forgets the call numbered `id` (admitted, failed or gone).
    pub(super) fn clear(&self, id: Option<u64>) {
        if let Some(n) = id {
            lock(&self.now).retain(|w| w.0 != n);
        }
    }
}

impl Manager {
    /// What the scheduler sees now (from the latest sample, at most
    /// [`ManagerOptions::monitor_interval`](super::ManagerOptions::monitor_interval)
    /// old).
    pub fn resources(&self) -> Resources {
        self.resources_from(&self.snapshot())
    }

    /// The same, from a sample taken now.
    pub fn refresh_resources(&self) -> Resources {
        let seen = self.inner.monitor.latest().seq;
        self.resources_from(&self.fresh_snapshot(seen))
    }

    /// What a call on installed plugin `plugin` is expected to need: its
    /// manifest's declared amounts, the prior, until calls are measured.
    /// `None` when it is not installed.
    pub fn expected_footprint(&self, plugin: &str) -> Option<Expected> {
        let manifest = self.manifest(plugin)?;
        let placement = crate::instance::Placement::of(&manifest);
        Some(cjm_sched::footprint::expect(
            placement.declared,
            None,
            self.inner.footprint_margin,
        ))
    }

    /// Where GPU readings come from, in words, with the system monitor's part.
    fn gpu_source(&self, snapshot: &super::monitor::Snapshot) -> String {
        let own = self.inner.monitor.gpus().describe();
        match (&snapshot.gpu_monitor, self.inner.sysmon.source()) {
            (Some(from), _) => format!("the system monitor, {from} (cjm's own: {own})"),
            (None, Some(from)) => {
                format!("{own}; the system monitor, {from}, for the policies' stats")
            }
            (None, None) => own,
        }
    }

    fn resources_from(&self, snapshot: &super::monitor::Snapshot) -> Resources {
        let view = self.view(snapshot);
        let reservations = self
            .inner
            .fit
            .as_ref()
            .map(cjm_sched::Scheduler::reservations)
            .unwrap_or_default();
        let outstanding = |instance: &str| -> Footprint {
            let needs = reservations
                .iter()
                .filter(|r| r.instance == instance)
                .fold(Footprint::default(), |a, r| a.max(r.needs));
            let held = view
                .loaded(instance)
                .map_or(Footprint::default(), |l| l.held);
            Footprint {
                ram_bytes: needs.ram_bytes.saturating_sub(held.ram_bytes),
                vram_bytes: needs.vram_bytes.saturating_sub(held.vram_bytes),
            }
        };
        let mut instances = Vec::new();
        for id in self.instance_ids() {
            let Some(inst) = self.get(&id) else { continue };
            let pid = inst.worker().map(|w| w.pid());
            let usage = pid.and_then(|p| snapshot.usage.get(&p));
            let placement = lock(&inst.placement).clone();
            instances.push(InstanceResources {
                state: inst.state(),
                pid,
                device: placement.device,
                held: pid
                    .and_then(|p| snapshot.held.get(&p).copied())
                    .unwrap_or_default(),
                processes: usage.map_or(0, |u| u.processes),
                cpu_seconds: usage.map_or(0.0, |u| u.cpu_seconds),
                expected: cjm_sched::footprint::expect(
                    placement.declared,
                    placement.record.as_ref(),
                    self.inner.footprint_margin,
                ),
                running: self.inner.fit.as_ref().map_or(0, |f| f.running(&id)),
                plugin: inst.plugin.clone(),
                id,
            });
        }
        let devices = snapshot
            .devices
            .iter()
            .map(|d| DeviceResources {
                index: d.index,
                name: d.name.clone(),
                total_bytes: d.total_bytes,
                free_bytes: d.free_bytes,
                reserved_bytes: reservations
                    .iter()
                    .filter(|r| r.device == Some(d.index))
                    .map(|r| outstanding(&r.instance).vram_bytes)
                    .sum(),
            })
            .collect();
        let mut reserved_instances: Vec<&str> =
            reservations.iter().map(|r| r.instance.as_str()).collect();
        reserved_instances.dedup();
        let now = self.inner.clock.now();
        Resources {
            policy: self.inner.scheduling.name(),
            gpu_source: self.gpu_source(snapshot),
            sampled_at: snapshot.taken_at,
            ram_free_bytes: snapshot.ram_free_bytes,
            ram_capacity_bytes: snapshot.ram_capacity_bytes,
            ram_reserved_bytes: reserved_instances
                .iter()
                .map(|i| outstanding(i).ram_bytes)
                .sum(),
            devices,
            instances,
            forkservers: snapshot
                .forkservers
                .iter()
                .map(|(python, pid, ram)| ForkserverResources {
                    python: python.clone(),
                    pid: *pid,
                    ram_bytes: *ram,
                })
                .collect(),
            waiting: lock(&self.inner.waits.now)
                .iter()
                .map(|(_, instance, reason, since)| WaitingCall {
                    instance_id: instance.clone(),
                    reason: reason.clone(),
                    waited: now.saturating_sub(*since),
                })
                .collect(),
        }
    }
}
