//! What a worker is started from: [`WorkerSpec`] (interpreter, plugin module and
//! class, environment, log file, timeouts) and [`StartMethod`] (executed or forked).

use std::path::PathBuf;
use std::time::Duration;

use cjm_core::{SharedClock, SystemClock};

/// How a worker's process is started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartMethod {
    /// A fresh interpreter per worker (`python -m cjm_worker`): 15–20 ms of CPU
    /// each, nothing shared.
    #[default]
    Spawn,
    /// Forked from a warm interpreter that has already imported the worker
    /// runtime, one such forkserver per interpreter and startup environment: about
    /// 4 ms of CPU each, most of it copy-on-write page faults (bench/RESULTS.md).
    /// The worker gets the same environment, working
    /// directory, `sys.path`, process group and output pipes as with `Spawn`.
    /// Falls back to `Spawn` (with a warning in the log) when the environment's
    /// cjm-worker has no forkserver or it cannot start.
    Forkserver,
}

/// How to start one worker.
///
/// Its `Debug` output names the variables in `env` but never shows their values:
/// they may be secrets.
#[derive(Clone)]
pub struct WorkerSpec {
    /// The plugin's name, used in errors, logs and the log file's name.
    pub plugin: String,
    /// The instance id, when a plugin has several.
    pub instance_id: Option<String>,
    /// The interpreter of the plugin's environment.
    pub python: PathBuf,
    /// The module that defines the plugin class.
    pub module: String,
    /// The plugin class.
    pub class: String,
    /// Variables passed to the worker on top of the allow-list (manifest
    /// `env_vars`, `WORKER_ENV`, secrets).
    pub env: Vec<(String, String)>,
    /// Directories prepended to the worker's `PYTHONPATH`.
    pub python_path: Vec<PathBuf>,
    /// `CJM_DATA_DIR` for the plugin.
    pub data_dir: Option<PathBuf>,
    /// `CJM_MODELS_DIR` for the plugin.
    pub models_dir: Option<PathBuf>,
    /// Where the worker's stdout and stderr are appended (the reference's
    /// `<data_dir>/logs/<plugin>.log`).
    pub log_file: Option<PathBuf>,
    /// Working directory of the worker.
    pub cwd: Option<PathBuf>,
    /// How long the worker may take to load the plugin.
    pub start_timeout: Duration,
    /// How long `cleanup()` may take when stopping.
    pub cleanup_timeout: Duration,
    /// How long each stop phase (request, SIGTERM) waits before the next.
    pub stop_grace: Duration,
    /// Whether the process is executed or forked from a forkserver.
    pub start_method: StartMethod,
    /// A hard memory limit for the worker and everything it starts (its
    /// cgroup's `memory.max`), where the machine delegates a cgroup v2 memory
    /// controller to cjm ([`memory_accounting`](crate::memory_accounting));
    /// elsewhere it runs without one, and a warning says so once per plugin.
    pub memory_limit_bytes: Option<u64>,
    /// Where the worker's wall stamps (an error's `occurred_at`, the log's
    /// headers) and the deadlines the proxy sets itself come from: the start
    /// timeout, the cleanup timeout and stop grace of a stop, and
    /// [`CancelPolicy::grace`](crate::CancelPolicy::grace). With a `ManualClock`
    /// those deadlines pass only when the clock is moved past them (the waits
    /// block in real time and look at the clock every 50 ms). A caller's own
    /// timeouts (`CallOptions`, pings, stats, `Worker::wait_exit_blocking`) and the
    /// proxy's safety bounds after a kill are on the system's clock.
    pub clock: SharedClock,
}

impl WorkerSpec {
    /// A spec with defaults: 30 s to start, 5 s for cleanup, 2 s per stop phase.
    pub fn new(
        plugin: impl Into<String>,
        python: impl Into<PathBuf>,
        module: impl Into<String>,
        class: impl Into<String>,
    ) -> Self {
        Self {
            plugin: plugin.into(),
            instance_id: None,
            python: python.into(),
            module: module.into(),
            class: class.into(),
            env: Vec::new(),
            python_path: Vec::new(),
            data_dir: None,
            models_dir: None,
            log_file: None,
            cwd: None,
            start_timeout: Duration::from_secs(30),
            cleanup_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(2),
            start_method: StartMethod::Spawn,
            memory_limit_bytes: None,
            clock: SystemClock::shared(),
        }
    }

    /// Adds a variable for the worker.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Prepends a directory to the worker's `PYTHONPATH`.
    #[must_use]
    pub fn python_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.python_path.push(dir.into());
        self
    }

    /// Sets how the process is started.
    #[must_use]
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = method;
        self
    }

    /// Sets the clock (the system's by default).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the log file.
    #[must_use]
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("WorkerSpec")
            .field("plugin", &self.plugin)
            .field("instance_id", &self.instance_id)
            .field("python", &self.python)
            .field("module", &self.module)
            .field("class", &self.class)
            .field("env (names only)", &env)
            .field("python_path", &self.python_path)
            .field("data_dir", &self.data_dir)
            .field("models_dir", &self.models_dir)
            .field("log_file", &self.log_file)
            .field("cwd", &self.cwd)
            .field("start_timeout", &self.start_timeout)
            .field("cleanup_timeout", &self.cleanup_timeout)
            .field("stop_grace", &self.stop_grace)
            .field("start_method", &self.start_method)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("clock", &self.clock)
            .finish()
    }
}
