//! The reference's system-monitor plugin contract, as a further source of
//! readings: a loaded plugin that answers `get_system_status()` (the
//! reference's `SystemStats`: `memory_available_mb`, `gpu_total_memory_mb`,
//! `gpu_free_memory_mb`, …) and `list_processes()` (its `ProcessStats`: `pid`,
//! `gpu_memory_mb`), registered with [`Manager::register_system_monitor`] as
//! the reference's `PluginManager.register_system_monitor` does.
//!
//! What its readings change:
//!
//! - its stats replace cjm's own keys for the `safety` and `queue` policies, as
//!   the reference's `_get_global_stats` feeds them;
//! - where cjm reads no GPU itself (no driver NVML can load) and the plugin
//!   reports one, `fit` places on that GPU (the plugin's totals, as one
//!   device), with each worker's share from `list_processes()`.
//!
//! RAM stays cjm's own reading (`MemAvailable`, capped by its cgroup): a
//! plugin's number can only be as fresh as its last poll, and `fit` watches
//! memory come back after each eviction.
//!
//! It is polled on the worker directly, outside the sampling lock, at most
//! every [`ManagerOptions::system_monitor_interval`](super::ManagerOptions::system_monitor_interval),
//! with a timeout; its worker is kept (never evicted, never reaped). A poll
//! that fails leaves cjm's own readings in charge, and says so once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cjm_proxy::{CallOptions, Worker};
use cjm_sched::gpu::GpuProcess;
use cjm_sched::{GpuDevice, GpuSample};
use serde_json::{Map, Value};

use super::Manager;
use super::monitor::warn_once;
use crate::error::ManagerError;
use crate::instance::{Instance, lock};

/// How long one poll of the plugin may take before it is abandoned.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// The reference's `SystemStats` numbers: amounts and percentages, none negative.
const NUMBERS: [&str; 8] = [
    "cpu_percent",
    "memory_used_mb",
    "memory_total_mb",
    "memory_available_mb",
    "gpu_free_memory_mb",
    "gpu_total_memory_mb",
    "gpu_used_memory_mb",
    "gpu_load_percent",
];

/// One answer of the system-monitor plugin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    /// Who answered: "plugin P (instance I)".
    pub(crate) source: String,
    /// Its `SystemStats`, the numbers that are not numbers left out.
    pub(crate) stats: Map<String, Value>,
    /// Its GPU as one device (index 0), with `list_processes()`'s shares;
    /// `None` when it reports no GPU memory.
    pub(crate) gpu: Option<GpuSample>,
}

/// The registered monitor and its latest reading.
#[derive(Debug, Default)]
pub(crate) struct SystemMonitor {
    state: Mutex<Option<Registered>>,
    /// One poll at a time.
    polling: Mutex<()>,
}

#[derive(Debug)]
struct Registered {
    instance: String,
    plugin: String,
    reading: Option<Arc<Reading>>,
    /// When it was last polled, on the manager's clock.
    polled_at: Option<Duration>,
}

impl SystemMonitor {
    /// "plugin P (instance I)", when one is registered.
    pub(crate) fn source(&self) -> Option<String> {
        lock(&self.state)
            .as_ref()
            .map(|r| format!("plugin {} (instance {})", r.plugin, r.instance))
    }

    /// The registered instance's id.
    fn instance(&self) -> Option<String> {
        lock(&self.state).as_ref().map(|r| r.instance.clone())
    }
}

impl Manager {
    /// Makes instance `id` (or, when no instance has that id, the first loaded
    /// instance of plugin `id`) the system monitor: its worker is started and
    /// kept, and asked once; an instance that does not answer the contract is
    /// refused with what it answered. Returns the instance's id. A monitor
    /// registered before is replaced.
    pub fn register_system_monitor(&self, id: &str) -> Result<String, ManagerError> {
        let inst = match self.get(id) {
            Some(inst) => inst,
            None => self
                .first_of_plugin(id)
                .map_or_else(|| self.instance(id), Ok)?,
        };
        let admitted = self.admit(&inst)?;
        drop(admitted.permit);
        let reading =
            poll(&inst, &admitted.worker).map_err(|reason| ManagerError::NotAMonitor {
                plugin: inst.plugin.clone(),
                instance_id: inst.id.clone(),
                reason,
            })?;
        let previous = lock(&self.inner.sysmon.state).replace(Registered {
            instance: inst.id.clone(),
            plugin: inst.plugin.clone(),
            reading: Some(Arc::new(reading)),
            polled_at: Some(self.inner.clock.now()),
        });
        if let Some(old) = previous.and_then(|p| self.get(&p.instance)) {
            old.kept.store(false, Ordering::Release);
        }
        inst.kept.store(true, Ordering::Release);
        tracing::info!(
            "system monitor: plugin {} (instance {}) adds its readings to cjm's own",
            inst.plugin,
            inst.id
        );
        // The next decision sees its reading: a sample taken now, not one the
        // monitor thread may have started before the reading was stored.
        self.fresh_snapshot(u64::MAX);
        Ok(inst.id.clone())
    }

    /// Registers `inst` as the system monitor when
    /// [`ManagerOptions::system_monitor`](super::ManagerOptions::system_monitor)
    /// names it (or its plugin) and none is registered yet; one that cannot be
    /// is said, and stays loaded.
    pub(super) fn maybe_monitor(&self, inst: &Instance) {
        let wanted = self.inner.wanted_monitor.as_deref();
        if wanted.is_none_or(|w| w != inst.id && w != inst.plugin)
            || self.inner.sysmon.instance().is_some()
        {
            return;
        }
        if let Err(e) = self.register_system_monitor(&inst.id) {
            let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
            tracing::warn!("{e}{hint}; scheduling on cjm's own readings");
        }
    }

    /// The system monitor's instance id, if one is registered.
    pub fn system_monitor(&self) -> Option<String> {
        self.inner.sysmon.instance()
    }

    fn first_of_plugin(&self, plugin: &str) -> Option<Arc<Instance>> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .find(|i| i.plugin == plugin)
            .cloned()
    }

    /// The system monitor's latest reading, polled first when the last poll
    /// is older than the interval; `None` without a monitor or when its last
    /// poll failed.
    pub(super) fn monitor_reading(&self) -> Option<Arc<Reading>> {
        let sysmon = &self.inner.sysmon;
        let due = |r: &Registered, now: Duration| {
            r.polled_at
                .is_none_or(|t| now.saturating_sub(t) >= self.inner.system_monitor_interval)
        };
        let instance = {
            let state = lock(&sysmon.state);
            let r = state.as_ref()?;
            if !due(r, self.inner.clock.now()) {
                return r.reading.clone();
            }
            r.instance.clone()
        };
        let _turn = lock(&sysmon.polling);
        {
            // Another caller may have polled while this one waited.
            let state = lock(&sysmon.state);
            let r = state.as_ref()?;
            if r.instance != instance || !due(r, self.inner.clock.now()) {
                return r.reading.clone();
            }
        }
        let reading = match self.get(&instance) {
            None => {
                warn_once(&format!(
                    "the system monitor (instance {instance}) was unloaded; \
                     scheduling on cjm's own readings"
                ));
                *lock(&sysmon.state) = None;
                return None;
            }
            Some(inst) => match inst.worker() {
                None => {
                    warn_once(&format!(
                        "the system monitor (instance {instance} of plugin {}) has no running \
                         worker; scheduling on cjm's own readings until it runs again",
                        inst.plugin
                    ));
                    None
                }
                Some(worker) => poll(&inst, &worker)
                    .inspect_err(|e| {
                        warn_once(&format!(
                            "the system monitor (instance {instance} of plugin {}) did not \
                             answer: {e}; scheduling on cjm's own readings until it does",
                            inst.plugin
                        ));
                    })
                    .ok()
                    .map(Arc::new),
            },
        };
        let mut state = lock(&sysmon.state);
        let r = state.as_mut().filter(|r| r.instance == instance)?;
        r.reading.clone_from(&reading);
        r.polled_at = Some(self.inner.clock.now());
        reading
    }
}

/// Asks `inst`'s plugin for its stats and processes.
fn poll(inst: &Instance, worker: &Worker) -> Result<Reading, String> {
    let ask = |method: &str| {
        worker
            .call_blocking(method, vec![], vec![], CallOptions::timeout(POLL_TIMEOUT))
            .map(|v| v.to_json())
            .map_err(|e| format!("{method}() failed: {e}"))
    };
    let status = ask("get_system_status")?;
    // The reference's monitors all have it; one without lists no shares.
    let processes = ask("list_processes")
        .inspect_err(|e| {
            warn_once(&format!(
                "the system monitor (instance {} of plugin {}): {e}; its GPU shows no \
                 per-worker use",
                inst.id, inst.plugin
            ));
        })
        .ok();
    parse(
        format!("plugin {} (instance {})", inst.plugin, inst.id),
        status,
        processes.as_ref(),
    )
}

/// A reading from what the plugin answered. Numbers that are not finite and
/// non-negative are left out (and cjm's own stand in for them); a GPU is one
/// only with a positive total and a free or used amount.
pub(crate) fn parse(
    source: String,
    answer: Value,
    processes: Option<&Value>,
) -> Result<Reading, String> {
    let Value::Object(mut stats) = answer else {
        return Err(format!(
            "get_system_status() returned {}, not a SystemStats (a dict or dataclass)",
            kind(&answer)
        ));
    };
    let mut bad = Vec::new();
    for key in NUMBERS {
        if stats.get(key).is_some_and(|v| amount(v).is_none()) {
            bad.push(key);
            stats.remove(key);
        }
    }
    if !bad.is_empty() {
        warn_once(&format!(
            "the system monitor {source} reports {} that are not non-negative numbers; \
             they are ignored",
            bad.join(", ")
        ));
    }
    let mb = |key: &str| stats.get(key).and_then(amount);
    let bytes = |m: f64| (m * 1_048_576.0) as u64;
    let gpu = mb("gpu_total_memory_mb")
        .filter(|&t| t > 0.0)
        .and_then(|total| {
            let free = mb("gpu_free_memory_mb")
                .or_else(|| mb("gpu_used_memory_mb").map(|used| (total - used).max(0.0)))?;
            Some(GpuDevice {
                index: 0,
                name: stats
                    .get("gpu_type")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty() && *t != "None")
                    .unwrap_or("GPU")
                    .to_owned(),
                total_bytes: bytes(total),
                free_bytes: bytes(free.min(total)),
                utilization_percent: mb("gpu_load_percent").map(|p| p.min(100.0) as u32),
            })
        })
        .map(|device| GpuSample {
            devices: vec![device],
            processes: shares(processes),
        });
    Ok(Reading { source, stats, gpu })
}

/// `list_processes()`'s GPU memory per pid, on the one device; entries without
/// a valid pid or amount are skipped.
fn shares(processes: Option<&Value>) -> Vec<GpuProcess> {
    let Some(Value::Array(list)) = processes else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let pid = u32::try_from(p.get("pid")?.as_u64()?).ok()?;
            let mb = p.get("gpu_memory_mb").and_then(amount)?;
            (pid > 0 && mb > 0.0).then_some(GpuProcess {
                device: 0,
                pid,
                used_bytes: (mb * 1_048_576.0) as u64,
            })
        })
        .collect()
}

/// A finite, non-negative number.
fn amount(v: &Value) -> Option<f64> {
    v.as_f64().filter(|n| n.is_finite() && *n >= 0.0)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "None",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reading(status: Value, processes: &Value) -> Reading {
        parse("plugin m (instance m)".into(), status, Some(processes)).unwrap()
    }

    #[test]
    fn a_gpu_reported_by_the_plugin_is_one_device_with_its_processes_shares() {
        let r = reading(
            json!({"gpu_type": "NVIDIA A10", "gpu_total_memory_mb": 8192,
                   "gpu_free_memory_mb": 2048, "gpu_load_percent": 40,
                   "memory_available_mb": 1024}),
            &json!([{"pid": 42, "gpu_index": 0, "gpu_memory_mb": 6144, "command": "python"},
                   {"pid": 0, "gpu_memory_mb": 5}, {"pid": 43, "gpu_memory_mb": -1},
                   {"gpu_memory_mb": 7}]),
        );
        let gpu = r.gpu.unwrap();
        assert_eq!(gpu.devices.len(), 1);
        let d = &gpu.devices[0];
        assert_eq!(
            (d.name.as_str(), d.total_bytes >> 20, d.free_bytes >> 20),
            ("NVIDIA A10", 8192, 2048)
        );
        assert_eq!(d.utilization_percent, Some(40));
        assert_eq!(
            gpu.processes,
            [GpuProcess {
                device: 0,
                pid: 42,
                used_bytes: 6144 << 20
            }]
        );
        assert_eq!(r.stats["memory_available_mb"], json!(1024));
    }

    #[test]
    fn without_gpu_memory_there_is_no_gpu_and_free_follows_from_used() {
        let none = reading(
            json!({"gpu_type": "None", "gpu_total_memory_mb": 0, "gpu_free_memory_mb": 0}),
            &json!([]),
        );
        assert_eq!(none.gpu, None);
        let unknown_free = reading(json!({"gpu_total_memory_mb": 100}), &json!([]));
        assert_eq!(
            unknown_free.gpu, None,
            "a total alone says nothing of what is free"
        );
        let used = reading(
            json!({"gpu_total_memory_mb": 100, "gpu_used_memory_mb": 30}),
            &json!(null),
        );
        let d = &used.gpu.unwrap().devices[0];
        assert_eq!((d.name.as_str(), d.free_bytes >> 20), ("GPU", 70));
    }

    #[test]
    fn hostile_numbers_are_left_out_and_the_rest_is_kept() {
        let r = reading(
            json!({"memory_available_mb": -5, "gpu_total_memory_mb": "lots",
                   "gpu_free_memory_mb": 1e308, "cpu_percent": 12.5, "details": {"x": 1}}),
            &json!("not a list"),
        );
        assert!(!r.stats.contains_key("memory_available_mb"));
        assert!(!r.stats.contains_key("gpu_total_memory_mb"));
        assert_eq!(r.gpu, None, "no valid total");
        assert_eq!(r.stats["cpu_percent"], json!(12.5));
        assert_eq!(r.stats["details"], json!({"x": 1}));
        let huge = reading(
            json!({"gpu_total_memory_mb": 1e308, "gpu_free_memory_mb": 1e308}),
            &json!([]),
        );
        assert_eq!(
            huge.gpu.unwrap().devices[0].free_bytes,
            u64::MAX,
            "saturates"
        );
    }

    #[test]
    fn an_answer_that_is_not_a_dict_is_refused_with_what_it_was() {
        let e = parse("p".into(), json!([1, 2]), None).unwrap_err();
        assert!(e.contains("returned a list, not a SystemStats"), "{e}");
    }
}
