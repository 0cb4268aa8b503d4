//! The manager: installed plugins, their loaded instances, and everything done to
//! them. [`Manager`] and its shared state live here; each concern has a file:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `options.rs` | [`ManagerOptions`], [`LoadSpec`], [`InstanceInfo`] |
//! | `discovery.rs` | installed plugins and the queries over them |
//! | `hub.rs` | the event fan-out |
//! | `config.rs` | effective configuration, the schema cache, validation, updates, persistence |
//! | `worker_env.rs` | `WORKER_ENV`: secrets, visible variables, overrides |
//! | `lifecycle.rs` | load, start, stop, unload, reload, reset, enable, disable, hooks |
//! | `calls.rs` | calls, the concurrency gate, the in-flight guard |
//! | `cancel.rs` | [`CallCancel`]: a call stopped from outside, before or while it runs |
//! | `streams.rs` | [`ExecuteStream`]: streamed calls, admitted and counted as calls are |
//! | `admission.rs` | whether a call may start: the policy, eviction, waiting with a reason |
//! | `record.rs` | each call's empirical sample, recorded off the call path |
//! | `recovery.rs` | out-of-memory: evict, restart, try again, bounded |
//! | `resources.rs` | [`Resources`]: what the scheduler sees, for `cjm-ctl resources` |
//! | `monitor.rs` | the latest sample of memory, GPUs and workers, and the thread that takes it |
//! | `sysmon.rs` | the reference's system-monitor plugin as a further source of readings |
//! | `supervise.rs` | crash supervision and the idle reaper |
//! | `threads.rs` | the supervisor and reaper threads, owned and joined, and their shutdown signal |

mod admission;
mod calls;
mod cancel;
mod config;
mod discovery;
mod hub;
mod lifecycle;
mod monitor;
mod options;
mod record;
mod recovery;
mod resources;
mod streams;
mod supervise;
mod sysmon;
mod threads;
mod worker_env;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cjm_core::{CjmConfig, PluginError, PluginRef, SharedClock};
use cjm_manifest::Discovery;
use cjm_proxy::{StartMethod, Worker, WorkerStats};
use cjm_sched::{Policy, Scheduler};
use cjm_schema::ConfigSchema;
use serde_json::Map;

pub use self::cancel::{CallCancel, CallReport};
use self::hub::Hub;
pub use self::options::{InstanceInfo, LoadSpec, ManagerOptions};
pub use self::resources::{
    DeviceResources, ForkserverResources, InstanceResources, Resources, WaitingCall,
};
pub use self::streams::ExecuteStream;
use self::threads::Threads;
use crate::error::ManagerError;
use crate::instance::{Gate, Hook, Instance, lock};
use crate::persist::Stores;
use crate::state::{InstanceState, ManagerEvent, RestartPolicy};

/// What every clone of a [`Manager`] shares.
struct Inner {
    cfg: CjmConfig,
    search_paths: Vec<PathBuf>,
    discovery: RwLock<Discovery>,
    instances: RwLock<BTreeMap<String, Arc<Instance>>>,
    hub: Hub,
    clock: SharedClock,
    policy: RestartPolicy,
    start_method: StartMethod,
    /// How often the reaper looks for idle instances; `None`: no reaper.
    reap_interval: Option<Duration>,
    /// The supervisors and the reaper, joined on drop.
    threads: Threads,
    stores: Stores,
    schemas: Mutex<BTreeMap<String, Arc<ConfigSchema>>>,
    /// Operator overrides of visible `WORKER_ENV` variables, by plugin.
    env_overrides: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// How calls are admitted.
    scheduling: Policy,
    /// The `fit` policy's scheduler (with `fit` only).
    fit: Option<Scheduler>,
    /// How long a `fit` call may wait.
    admission_timeout: Duration,
    /// The most workers at once.
    max_workers: Option<usize>,
    /// How much a measured peak is raised.
    footprint_margin: f64,
    /// The latest samples.
    monitor: monitor::Monitor,
    /// How often the monitor thread samples; `None`: no thread.
    monitor_interval: Option<Duration>,
    /// The system-monitor plugin, if one is registered.
    sysmon: sysmon::SystemMonitor,
    /// The least time between two polls of it.
    system_monitor_interval: Duration,
    /// The plugin or instance that becomes the system monitor once loaded.
    wanted_monitor: Option<String>,
    /// The calls waiting for admission now, with their reasons.
    waits: resources::Waits,
    /// How many times a call that ran out of memory is tried again.
    oom_retries: usize,
    /// The queue of ended calls' samples.
    recorder: record::Recorder,
}

impl Drop for Inner {
    /// Stops every worker, then joins the manager's threads: told to stop first,
    /// so none is left waiting out a backoff or a reaper period.
    fn drop(&mut self) {
        self.recorder.close();
        self.threads.close();
        let instances = std::mem::take(
            &mut *self
                .instances
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        std::thread::scope(|s| {
            for inst in instances.values() {
                let Some(w) = lock(&inst.worker).take() else {
                    continue;
                };
                let stopper = std::thread::Builder::new()
                    .name(format!("cjm-stop-{}", inst.id))
                    .spawn_scoped(s, {
                        let w = w.clone();
                        move || w.stop_blocking()
                    });
                if let Err(e) = stopper {
                    tracing::warn!(
                        "cannot start a thread to stop instance {} of plugin {} ({e}); stopping it here",
                        inst.id,
                        inst.plugin
                    );
                    w.stop_blocking();
                }
            }
        });
        // Every worker has been stopped, so each supervisor is returning.
        self.threads.join();
    }
}

/// Installed plugins and their running instances, behind one handle.
///
/// Cheap to clone; every clone is the same manager. Dropping the last one stops
/// every worker.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("search_paths", &self.inner.search_paths)
            .field("instances", &self.instance_ids())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager for the configuration `cfg`, with the installed plugins discovered.
    pub fn new(cfg: CjmConfig, options: ManagerOptions) -> Self {
        let search_paths = options.search_paths.unwrap_or_else(|| {
            let cwd = std::env::current_dir().unwrap_or_default();
            cjm_manifest::default_search_paths(&cwd, &cfg.manifests_dir())
        });
        let cfg_data_dir = cfg.data_dir.clone();
        let discovery = cjm_manifest::discover(&search_paths);
        for e in &discovery.errors {
            tracing::warn!("skipping a manifest: {e}");
        }
        let inner = Arc::new(Inner {
            cfg,
            search_paths,
            discovery: RwLock::new(discovery),
            instances: RwLock::new(BTreeMap::new()),
            hub: Hub::default(),
            clock: options.clock.clone(),
            policy: options.restart,
            start_method: options.start_method,
            reap_interval: options.reap_interval,
            threads: Threads::default(),
            stores: Stores::new(&cfg_data_dir, options.persist, &options.clock),
            schemas: Mutex::new(BTreeMap::new()),
            env_overrides: Mutex::new(BTreeMap::new()),
            fit: match options.scheduling {
                Policy::Fit(fit) => Some(Scheduler::new(options.clock.clone(), fit)),
                _ => None,
            },
            monitor_interval: options
                .monitor_interval
                .filter(|_| options.scheduling != Policy::Permissive),
            scheduling: options.scheduling,
            admission_timeout: options.admission_timeout,
            max_workers: options.max_workers,
            footprint_margin: options.footprint_margin,
            monitor: monitor::Monitor::new(options.gpus),
            sysmon: sysmon::SystemMonitor::default(),
            system_monitor_interval: options.system_monitor_interval,
            wanted_monitor: options.system_monitor,
            waits: resources::Waits::default(),
            oom_retries: options.oom_retries,
            recorder: record::Recorder::default(),
        });
        Self { inner }
    }

    /// The configuration it runs with.
    pub fn cjm_config(&self) -> &CjmConfig {
        &self.inner.cfg
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<Instance>> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    pub(super) fn instance(&self, id: &str) -> Result<Arc<Instance>, ManagerError> {
        self.get(id).ok_or_else(|| {
            let mut loaded = self.instance_ids();
            loaded.sort();
            ManagerError::NotLoaded {
                instance_id: id.to_owned(),
                loaded: if loaded.is_empty() {
                    "none".to_owned()
                } else {
                    loaded.join(", ")
                },
                installed: self.manifest(id).is_some(),
            }
        })
    }

    pub(super) fn remove(&self, id: &str) -> Option<Arc<Instance>> {
        self.inner
            .instances
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id)
    }

    /// The ids of every loaded instance.
    pub fn instance_ids(&self) -> Vec<String> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// A snapshot of instance `id`.
    pub fn info(&self, id: &str) -> Option<InstanceInfo> {
        let inst = self.get(id)?;
        let status = lock(&inst.status);
        Some(InstanceInfo {
            id: inst.id.clone(),
            plugin: inst.plugin.clone(),
            state: if status.state == InstanceState::Ready
                && inst.in_flight.load(Ordering::Acquire) > 0
            {
                InstanceState::Busy
            } else {
                status.state
            },
            enabled: inst.enabled.load(Ordering::Acquire),
            pid: inst.worker().map(|w| w.pid()),
            in_flight: inst.in_flight.load(Ordering::Acquire),
            waiting: inst.gate.as_ref().map_or(0, Gate::waiting),
            pending_hook: status.pending_hook.map(Hook::method),
            config: lock(&inst.config).clone(),
            last_crash: status.last_crash.clone(),
            quarantine: status.quarantine.clone(),
        })
    }

    /// Every loaded instance, or those of `plugin`.
    pub fn instances(&self, plugin: Option<&str>) -> Vec<InstanceInfo> {
        self.instance_ids()
            .iter()
            .filter_map(|id| self.info(id))
            .filter(|i| plugin.is_none_or(|p| i.plugin == p))
            .collect()
    }

    /// Instance `id`'s worker, when one runs: for what the manager does not wrap
    /// (streams, shared-memory buffers, events). Calls made on it bypass the
    /// manager's gates (enabled flag, concurrency cap, in-flight count).
    pub fn worker(&self, id: &str) -> Option<Worker> {
        self.get(id).and_then(|i| i.worker())
    }

    /// Instance `id`'s state.
    pub fn state(&self, id: &str) -> Option<InstanceState> {
        self.get(id).map(|i| i.state())
    }

    pub(super) fn set_state(&self, inst: &Instance, to: InstanceState) {
        let from = {
            let mut status = lock(&inst.status);
            std::mem::replace(&mut status.state, to)
        };
        if from != to {
            self.inner.hub.emit(&ManagerEvent::State {
                instance_id: inst.id.clone(),
                plugin: inst.plugin.clone(),
                from,
                to,
            });
        }
    }

    /// The last `lines` lines of plugin `plugin`'s log file.
    pub fn logs(&self, plugin: &str, lines: usize) -> String {
        let path = crate::launch::log_file(&self.inner.cfg, plugin);
        let text = fs_err::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Resource figures of instance `id`'s worker.
    pub fn stats(&self, id: &str) -> Result<WorkerStats, ManagerError> {
        let inst = self.instance(id)?;
        let worker = inst.worker().ok_or_else(|| {
            ManagerError::Plugin(PluginError::NotLoaded {
                plugin: plugin_ref(&inst),
            })
        })?;
        Ok(worker.stats()?)
    }

    /// A handle bound to plugin `plugin` (its default instance).
    pub fn bind(
        &self,
        plugin: impl Into<String>,
        default_config: Map<String, serde_json::Value>,
    ) -> crate::binding::PluginBinding {
        crate::binding::PluginBinding::new(self.clone(), plugin.into(), default_config)
    }

    pub(super) fn emit(&self, e: &ManagerEvent) {
        self.inner.hub.emit(e);
    }
}

fn plugin_ref(inst: &Instance) -> PluginRef {
    if inst.id == inst.plugin {
        PluginRef::new(&inst.plugin)
    } else {
        PluginRef::instance(&inst.plugin, &inst.id)
    }
}
