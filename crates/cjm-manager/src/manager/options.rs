//! What a manager is told: how it is set up ([`ManagerOptions`]), what to load
//! ([`LoadSpec`]), and what it answers about an instance ([`InstanceInfo`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cjm_core::{SharedClock, SystemClock};
use cjm_proxy::StartMethod;
use cjm_sched::{Gpus, Policy};
use serde_json::Map;

use crate::state::{CrashRecord, InstanceState, RestartPolicy};

/// How a manager is set up.
#[derive(Clone)]
pub struct ManagerOptions {
    /// Where manifests are looked for, in order (default: the project's
    /// `.cjm/manifests`, then the data dir's `manifests`, as the reference does).
    pub search_paths: Option<Vec<PathBuf>>,
    /// How crashed workers are restarted.
    pub restart: RestartPolicy,
    /// Every time the manager reads or waits on: restart backoff, crash windows
    /// and crash stamps ([`CrashRecord::at`]), idle times, and the config store's
    /// `updated_at` stamps. A [`ManualClock`](cjm_core::ManualClock) makes
    /// backoffs instant and idleness a matter of advancing it.
    pub clock: SharedClock,
    /// How often a reaper thread looks for idle instances; `None`: only when
    /// [`Manager::reap_idle`](super::Manager::reap_idle) is called. The thread
    /// starts with the first instance that has an `idle_ttl`. This period is real
    /// time, so a manual clock does not make the reaper spin; whether an instance
    /// is idle is judged on `clock`.
    pub reap_interval: Option<Duration>,
    /// Read and write the config store and read the secret store (the
    /// reference's files in the data dir). Off: nothing is persisted, no secrets.
    pub persist: bool,
    /// How worker processes are started. The default forks them from a warm
    /// interpreter per environment (a forkserver): a start then costs about 4 ms
    /// of CPU, against 15–20 ms for an executed one (`bench/RESULTS.md`);
    /// `StartMethod::Spawn` executes a fresh interpreter for each.
    pub start_method: StartMethod,
    /// How calls are admitted: `fit` (the default: measured footprints,
    /// reservations, eviction of idle workers, reasons for every wait) or one of
    /// the reference's `permissive`, `safety` and `queue`.
    pub scheduling: Policy,
    /// How long a call admitted by `fit` may wait for memory, a slot or a
    /// worker before it fails with the reason it waited (default 5 min, the
    /// reference's `QueueScheduler` timeout).
    pub admission_timeout: Duration,
    /// The most workers running at once; `None`: no limit. A call that needs
    /// another evicts an idle one, or waits.
    pub max_workers: Option<usize>,
    /// How much a measured peak is raised to give a call's expected footprint.
    pub footprint_margin: f64,
    /// How often the monitor thread samples memory, GPUs and every worker (real
    /// time); `None`: only when a decision needs one. The thread starts with
    /// the first loaded instance, unless the policy is `permissive`.
    pub monitor_interval: Option<Duration>,
    /// Where GPU readings come from; `None`: detected (the fake GPU where
    /// `CJM_FAKE_GPU` names one, else NVML, else none).
    pub gpus: Option<Arc<Gpus>>,
    /// The plugin (or instance id) that becomes the system monitor as soon as
    /// it is loaded, as the reference's `create_pipeline(system_monitor=…)`
    /// registers it ([`Manager::register_system_monitor`](super::Manager::register_system_monitor)).
    pub system_monitor: Option<String>,
    /// The least time between two polls of the system-monitor plugin
    /// ([`Manager::register_system_monitor`](super::Manager::register_system_monitor));
    /// a sample taken sooner reuses its last answer (default 1 s).
    pub system_monitor_interval: Duration,
    /// How many times a call (or its worker's start) that ran out of memory is
    /// tried again, after evicting an idle worker beside it and restarting its
    /// own (default 1, the reference's `max_retries`).
    pub oom_retries: usize,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            search_paths: None,
            restart: RestartPolicy::default(),
            clock: SystemClock::shared(),
            reap_interval: Some(Duration::from_secs(1)),
            persist: true,
            start_method: StartMethod::Forkserver,
            scheduling: Policy::default(),
            admission_timeout: Duration::from_mins(5),
            max_workers: None,
            footprint_margin: cjm_sched::footprint::DEFAULT_MARGIN,
            monitor_interval: Some(Duration::from_millis(100)),
            gpus: None,
            system_monitor: None,
            system_monitor_interval: Duration::from_secs(1),
            oom_retries: 1,
        }
    }
}

/// What to load: a plugin, and how.
#[derive(Debug, Clone, Default)]
pub struct LoadSpec {
    /// The plugin's name.
    pub plugin: String,
    /// Its configuration; `None`: the persisted one, else the schema's defaults.
    pub config: Option<Map<String, serde_json::Value>>,
    /// An explicit instance id (`[A-Za-z0-9_-]{1,64}`); `None`: the plugin's name,
    /// or a generated `{name}-{6 hex}` with `new_instance`.
    pub instance_id: Option<String>,
    /// Load another instance under a generated id.
    pub new_instance: bool,
    /// Accept unknown configuration keys (dropped, with a warning).
    pub lenient: bool,
    /// Start the worker on first use instead of now.
    pub lazy: bool,
    /// At most this many calls at once on this instance.
    pub max_concurrent: Option<usize>,
    /// Stop the worker after this long without a call; it restarts on demand.
    pub idle_ttl: Option<Duration>,
    /// More variables for this instance's worker, on top of the manifest's
    /// `install.env_vars` (never secrets: those come from the secret store). A
    /// variable the plugin declares in `WORKER_ENV` is resolved as declared and
    /// wins; override one with
    /// [`Manager::set_env_override`](super::Manager::set_env_override).
    pub env: Vec<(String, String)>,
    /// A hard memory limit for this instance's worker and what it starts (its
    /// cgroup's `memory.max`); `None`: the manifest's
    /// `resources.max_system_ram_mb`, if any. Where the machine delegates no
    /// cgroup v2 memory controller to cjm (`cjm-ctl doctor` says), it runs
    /// without one, with a warning.
    pub memory_limit_bytes: Option<u64>,
}

impl LoadSpec {
    /// The default instance of `plugin`, started now, default configuration.
    pub fn new(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            ..Self::default()
        }
    }

    /// With this configuration.
    #[must_use]
    pub fn config(mut self, config: Map<String, serde_json::Value>) -> Self {
        self.config = Some(config);
        self
    }

    /// Under this instance id.
    #[must_use]
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// As a new instance with a generated id.
    #[must_use]
    pub fn new_instance(mut self) -> Self {
        self.new_instance = true;
        self
    }

    /// Starting the worker on first use.
    #[must_use]
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// With a hard memory limit of `bytes` for its worker (see
    /// [`memory_limit_bytes`](Self::memory_limit_bytes)).
    #[must_use]
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    /// With at most `n` calls at once.
    #[must_use]
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Stopping the worker after `ttl` without a call.
    #[must_use]
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = Some(ttl);
        self
    }
}

impl From<&str> for LoadSpec {
    /// The default instance of plugin `name`.
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for LoadSpec {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl<S: Into<String>> From<(S, Map<String, serde_json::Value>)> for LoadSpec {
    /// The default instance of a plugin, with a configuration.
    fn from((name, config): (S, Map<String, serde_json::Value>)) -> Self {
        Self::new(name).config(config)
    }
}

/// A snapshot of one instance.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// Its id.
    pub id: String,
    /// Its plugin.
    pub plugin: String,
    /// Its state.
    pub state: InstanceState,
    /// Whether it accepts work.
    pub enabled: bool,
    /// Its worker's pid, when one runs.
    pub pid: Option<u32>,
    /// Calls running now.
    pub in_flight: usize,
    /// Calls waiting for a turn under its concurrency cap (`max_concurrent`).
    pub waiting: usize,
    /// The `on_disable` or `on_enable` hook that runs once the calls in flight
    /// are done, if one is pending.
    pub pending_hook: Option<&'static str>,
    /// Its configuration.
    pub config: Map<String, serde_json::Value>,
    /// The last crash, if any.
    pub last_crash: Option<CrashRecord>,
    /// Why it is crash-looping, if it is.
    pub quarantine: Option<String>,
}
