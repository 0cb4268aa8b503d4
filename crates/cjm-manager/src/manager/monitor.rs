//! What the scheduler looks at: one sample of the machine's memory, the GPUs and
//! every running worker's tree, taken by a monitor thread every
//! [`ManagerOptions::monitor_interval`](super::ManagerOptions::monitor_interval)
//! and kept as the latest [`Snapshot`]. The call path reads the latest snapshot
//! and never samples; only a call that evicted or waits asks for a fresh one,
//! to see memory come back as soon as it does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use cjm_sched::fit::Device;
use cjm_sched::process::{ProcessTable, TreeUsage};
use cjm_sched::{Footprint, GpuSample, Gpus, MachineSample};
use serde_json::{Map, Value};

use super::sysmon::Reading;
use super::threads::Shutdown;
use super::{Inner, Manager};
use crate::instance::lock;

/// One sample of everything admission reads.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Counts samples: a caller that waits for memory asks for one newer than
    /// the one it decided on.
    pub(crate) seq: u64,
    /// When it was taken, on the manager's clock.
    pub(crate) taken_at: Duration,
    /// RAM a new allocation can get (`MemAvailable`, capped by a cgroup limit).
    pub(crate) ram_free_bytes: u64,
    /// The most RAM there could be.
    pub(crate) ram_capacity_bytes: u64,
    /// The GPUs.
    pub(crate) devices: Vec<Device>,
    /// Why there are none, when there are none.
    pub(crate) no_gpu_reason: Option<String>,
    /// The system monitor the GPUs come from ("plugin P (instance I)"), when
    /// cjm's own source has none: one device that sums the plugin's, which
    /// workers are not pinned to.
    pub(crate) gpu_monitor: Option<String>,
    /// What each worker's tree holds, by the worker's pid.
    pub(crate) held: HashMap<u32, Footprint>,
    /// Each worker tree's processes, RSS and CPU time, by the worker's pid.
    pub(crate) usage: HashMap<u32, TreeUsage>,
    /// The reference's stats (`memory_available_mb`, `gpu_free_memory_mb`), for
    /// the `safety` and `queue` policies.
    pub(crate) stats: Map<String, Value>,
    /// Each running forkserver (one per environment) and the RAM it holds:
    /// memory its environment costs beside its workers.
    pub(crate) forkservers: Vec<(std::path::PathBuf, u32, u64)>,
}

/// The samples and the source of GPU readings.
#[derive(Debug)]
pub(crate) struct Monitor {
    /// Set by the options, or detected with the first sample.
    gpus: OnceLock<Arc<Gpus>>,
    latest: RwLock<Arc<Snapshot>>,
    /// Serializes sampling: callers that queue behind a sample reuse it.
    sampling: Mutex<()>,
    seq: AtomicU64,
}

impl Monitor {
    pub(crate) fn new(gpus: Option<Arc<Gpus>>) -> Self {
        let cell = OnceLock::new();
        if let Some(g) = gpus {
            let _ = cell.set(g);
        }
        Self {
            gpus: cell,
            latest: RwLock::new(Arc::new(Snapshot::default())),
            sampling: Mutex::new(()),
            seq: AtomicU64::new(0),
        }
    }

    /// Where GPU readings come from (detected once).
    pub(crate) fn gpus(&self) -> &Arc<Gpus> {
        self.gpus.get_or_init(|| Arc::new(Gpus::detect()))
    }

    /// The GPU source, if it is known yet (never detected here).
    pub(crate) fn known_gpus(&self) -> Option<&Gpus> {
        self.gpus.get().map(|g| &**g)
    }

    pub(crate) fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .latest
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Samples now unless a sample newer than `seen` was stored while this
    /// caller waited for its turn.
    fn sample(
        &self,
        seen: u64,
        pids: impl FnOnce() -> Vec<(u32, Option<u64>)>,
        now: Duration,
        reading: Option<&Reading>,
    ) -> Arc<Snapshot> {
        let _turn = lock(&self.sampling);
        let latest = self.latest();
        if latest.seq > seen {
            return latest;
        }
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let snapshot = Arc::new(take(self.gpus(), seq, pids, now, reading));
        *self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&snapshot);
        snapshot
    }
}

/// One pass: the GPUs, then the workers' pids, then `/proc` once and the
/// machine's memory. GPUs come first: a worker whose memory the GPU reading
/// shows had its pid registered before it allocated, so it is in the list.
/// The system monitor's `reading`, taken just before, is merged in.
fn take(
    gpus: &Gpus,
    seq: u64,
    pids: impl FnOnce() -> Vec<(u32, Option<u64>)>,
    now: Duration,
    reading: Option<&Reading>,
) -> Snapshot {
    let (gpu, no_gpu_reason) = match gpus.sample() {
        Ok(sample) => {
            let reason = match gpus {
                Gpus::None { reason } => Some(reason.clone()),
                _ if sample.devices.is_empty() => {
                    Some("the GPU source reports no devices".to_owned())
                }
                _ => None,
            };
            (sample, reason)
        }
        Err(e) => {
            warn_once(&format!(
                "{e}; scheduling as if there were no GPU until it reads again"
            ));
            (GpuSample::default(), Some(e.to_string()))
        }
    };
    let (gpu, no_gpu_reason, gpu_monitor) = match reading.and_then(|r| Some((r, r.gpu.as_ref()?))) {
        Some((r, theirs)) if gpu.devices.is_empty() => {
            (theirs.clone(), None, Some(r.source.clone()))
        }
        _ => (gpu, no_gpu_reason, None),
    };
    let machine = MachineSample::read()
        .inspect_err(|e| warn_once(&format!("cannot read the machine's memory ({e}); admitting calls as if memory were unlimited")))
        .ok();
    let pids = pids();
    let table = ProcessTable::scan()
        .inspect_err(|e| {
            warn_once(&format!(
                "cannot scan /proc ({e}); workers count as holding nothing"
            ));
        })
        .unwrap_or_default();
    let mut held = HashMap::with_capacity(pids.len());
    let mut usage = HashMap::with_capacity(pids.len());
    for &(pid, cgroup_bytes) in &pids {
        let Some(u) = table.usage(pid) else { continue };
        let tree = table.tree(pid);
        let vram = gpu.held_by(&tree).iter().map(|(_, b)| b).sum();
        held.insert(
            pid,
            Footprint {
                // Its own cgroup counts exactly, where it has one.
                ram_bytes: cgroup_bytes.unwrap_or(u.rss_bytes),
                vram_bytes: vram,
            },
        );
        usage.insert(pid, u);
    }
    let forkservers = cjm_proxy::forkservers()
        .into_iter()
        .filter_map(|(python, pid)| Some((python, pid, table.usage(pid)?.rss_bytes)))
        .collect();
    let mut stats = machine
        .as_ref()
        .map(|m| cjm_sched::policy::stats(m, &gpu))
        .unwrap_or_default();
    if let Some(r) = reading {
        // As the reference's policies read the monitor's stats.
        stats.extend(r.stats.clone());
    }
    Snapshot {
        seq,
        taken_at: now,
        ram_free_bytes: machine.as_ref().map_or(u64::MAX, MachineSample::free_bytes),
        ram_capacity_bytes: machine
            .as_ref()
            .map_or(u64::MAX, MachineSample::capacity_bytes),
        devices: gpu
            .devices
            .iter()
            .map(|d| Device {
                index: d.index,
                name: d.name.clone(),
                total_bytes: d.total_bytes,
                free_bytes: d.free_bytes,
            })
            .collect(),
        no_gpu_reason,
        gpu_monitor,
        held,
        usage,
        stats,
        forkservers,
    }
}

/// Warns once per distinct message, so a monitor that fails every 100 ms says
/// it once.
pub(super) fn warn_once(message: &str) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = lock(&SAID);
    if !said.iter().any(|m| m == message) {
        tracing::warn!("{message}");
        said.push(message.to_owned());
    }
}

impl Manager {
    /// The pids of every running worker, with what its own cgroup counts
    /// where it has one with the memory controller.
    fn worker_pids(&self) -> Vec<(u32, Option<u64>)> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter_map(|i| {
                let cgroup = i
                    .worker()
                    .and_then(|w| w.cgroup_memory())
                    .map(|m| m.current_bytes);
                Some((i.pid()?, cgroup))
            })
            .collect()
    }

    /// The latest sample; the first one is taken here.
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        let latest = self.inner.monitor.latest();
        if latest.seq > 0 {
            return latest;
        }
        self.fresh_snapshot(0)
    }

    /// A sample newer than the one numbered `seen`, taken now unless another
    /// caller just took one.
    pub(super) fn fresh_snapshot(&self, seen: u64) -> Arc<Snapshot> {
        let reading = self.monitor_reading();
        self.inner.monitor.sample(
            seen,
            || self.worker_pids(),
            self.inner.clock.now(),
            reading.as_deref(),
        )
    }

    /// Starts the monitor thread, unless it runs or this manager has none.
    pub(super) fn start_monitor(&self) -> std::io::Result<()> {
        let Some(every) = self.inner.monitor_interval else {
            return Ok(());
        };
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.inner.threads.shutdown();
        self.inner
            .threads
            .start_monitor(move || monitor(&weak, &shutdown, every))
    }
}

/// The monitor thread: a sample every `every` of real time, until shutdown;
/// waiting callers are told after each.
fn monitor(inner: &Weak<Inner>, shutdown: &Shutdown, every: Duration) {
    while !shutdown.wait(every) {
        let Some(inner) = inner.upgrade() else { return };
        let manager = Manager { inner };
        let seen = manager.inner.monitor.latest().seq;
        manager.fresh_snapshot(seen);
        if let Some(fit) = &manager.inner.fit {
            fit.nudge();
        }
    }
}
