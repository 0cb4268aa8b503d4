//! What can go wrong managing plugins. Every message names the plugin or instance.

use cjm_core::PluginError;
use cjm_proxy::WorkerError;

/// A manager operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// No manifest for this plugin in the search paths.
    #[error(
        "plugin {plugin} is not installed (no manifest for it in {searched}; installed: {installed})"
    )]
    NotInstalled {
        /// The plugin asked for.
        plugin: String,
        /// The search paths, joined.
        searched: String,
        /// What is installed, joined.
        installed: String,
    },
    /// No instance with this id is loaded.
    #[error("instance {instance_id:?} is not loaded (loaded: {loaded})")]
    NotLoaded {
        /// The id asked for.
        instance_id: String,
        /// The loaded instances, joined.
        loaded: String,
        /// Whether an installed plugin has this name (so loading it would help).
        installed: bool,
    },
    /// An explicit instance id that breaks the rules.
    #[error("instance id {id:?} is not valid: use 1 to 64 letters, digits, `_` or `-`")]
    InvalidInstanceId {
        /// The id given.
        id: String,
    },
    /// A typed plugin error: disabled, not loaded, bad configuration, or one the
    /// plugin raised.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The worker could not be started, or failed a call.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A configuration that does not fit the plugin's schema: every problem.
    #[error("{}{error}", if *persisted { "the persisted configuration no longer fits: " } else { "" })]
    Config {
        /// The problems.
        error: cjm_schema::ConfigError,
        /// Whether it was the configuration persisted from an earlier session.
        persisted: bool,
    },
    /// The plugin's own config schema is not a usable JSON Schema.
    #[error(transparent)]
    Schema(#[from] cjm_schema::SchemaError),
    /// A secret the plugin declares required is not in the secret store.
    #[error(
        "plugin {plugin} needs the secret {key}{}, which is not set",
        describe(description)
    )]
    MissingSecret {
        /// The plugin.
        plugin: String,
        /// The secret's name (the variable its worker reads).
        key: String,
        /// What the plugin says it is for.
        description: String,
    },
    /// A variable the plugin declares required has no value and no default.
    #[error(
        "plugin {plugin} needs the variable {key}{}, which has no value",
        describe(description)
    )]
    MissingVariable {
        /// The plugin.
        plugin: String,
        /// The variable.
        key: String,
        /// What the plugin says it is for.
        description: String,
    },
    /// A store (configuration, secrets) could not be read or written.
    #[error(transparent)]
    Store(#[from] cjm_stores::StoreError),
    /// A thread the manager needs for an instance could not be started: the
    /// process is out of threads or memory.
    #[error("cannot start the {role} thread for instance {instance_id} of plugin {plugin}")]
    Thread {
        /// The plugin.
        plugin: String,
        /// The instance (empty for a generated id not chosen yet).
        instance_id: String,
        /// What the thread is for: `supervisor`, `idle reaper`, `loader`.
        role: &'static str,
        /// Why the OS refused it.
        #[source]
        source: std::io::Error,
    },
    /// A call waited for memory, a GPU or a worker longer than the admission
    /// timeout.
    #[error(
        "a call to instance {instance_id} of plugin {plugin} gave up after waiting {:.1} s: {wait}",
        waited.as_secs_f64()
    )]
    Waited {
        /// The plugin.
        plugin: String,
        /// The instance.
        instance_id: String,
        /// How long it waited.
        waited: std::time::Duration,
        /// What it was waiting for, when it gave up.
        wait: Box<cjm_sched::fit::Wait>,
    },
    /// A call that could never fit this machine: refused at once, nothing
    /// evicted.
    #[error("plugin {plugin}: {never}")]
    Never {
        /// The plugin.
        plugin: String,
        /// Why, with the numbers.
        never: Box<cjm_sched::fit::Never>,
    },
    /// The `safety` or `queue` policy refused the call, and evicting idle
    /// instances did not make room.
    #[error(
        "the {policy} scheduler blocked the call to instance {instance_id}: {blocked}{}",
        if evicted.is_empty() { " (no idle instance to evict)".to_owned() } else { format!(" (after evicting {})", evicted.join(", ")) }
    )]
    Blocked {
        /// The instance.
        instance_id: String,
        /// `safety` or `queue`.
        policy: &'static str,
        /// What it declared and what is free.
        blocked: cjm_sched::policy::Blocked,
        /// The instances evicted on the way.
        evicted: Vec<String>,
    },
    /// A call ran out of memory on every try.
    #[error(
        "instance {instance_id} of plugin {plugin} ran out of memory on all {tries} tries \
         (an idle worker evicted and its own restarted between them): {last}"
    )]
    OutOfMemory {
        /// The plugin.
        plugin: String,
        /// The instance.
        instance_id: String,
        /// How many tries were made.
        tries: usize,
        /// The last try's error.
        #[source]
        last: Box<ManagerError>,
    },
    /// A plugin's manifest declares an amount that is not a number of MB.
    #[error(
        "plugin {plugin} declares resources.{key} = {value} in its manifest, which is not {}",
        if *key == "max_system_ram_mb" { "a number of MB above zero" } else { "a number of MB (0 or more)" }
    )]
    BadResources {
        /// The plugin.
        plugin: String,
        /// The key (`min_system_ram_mb`, `min_gpu_vram_mb`, `max_system_ram_mb`).
        key: &'static str,
        /// What it holds.
        value: serde_json::Value,
    },
    /// The instance named as the system monitor does not answer the
    /// reference's system-monitor contract.
    #[error(
        "instance {instance_id} of plugin {plugin} cannot be the system monitor: {reason}; \
         a system-monitor plugin answers get_system_status() with the reference's SystemStats \
         (memory_available_mb, gpu_total_memory_mb, gpu_free_memory_mb, …) and list_processes() \
         with its ProcessStats (pid, gpu_memory_mb)"
    )]
    NotAMonitor {
        /// The plugin.
        plugin: String,
        /// The instance.
        instance_id: String,
        /// What it answered.
        reason: String,
    },
    /// The instance crashed too often and is quarantined.
    #[error(
        "instance {instance_id} of plugin {plugin} is crash-looping and will not be restarted: {reason}"
    )]
    CrashLooping {
        /// The plugin.
        plugin: String,
        /// The instance.
        instance_id: String,
        /// The crashes that led to it.
        reason: String,
    },
}

fn describe(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!(" ({description})")
    }
}

impl ManagerError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::NotInstalled { .. } => Some(
                "add the plugin to plugins.yaml and run `cjm-ctl install-all`, or check the search paths".into(),
            ),
            Self::NotLoaded {
                instance_id,
                installed: true,
                ..
            } => Some(format!(
                "load it first: `manager.load(&LoadSpec::new(\"{instance_id}\"))`, or call the id `load` returned"
            )),
            Self::NotLoaded { instance_id, .. } => Some(format!(
                "load an instance under this id first: `manager.load(&LoadSpec::new(PLUGIN).instance(\"{instance_id}\"))`; `Manager::instance_ids` lists the loaded ones"
            )),
            Self::InvalidInstanceId { .. } | Self::Never { .. } => None,
            Self::Plugin(e) => e.hint(),
            Self::Worker(e) => e.hint(),
            Self::Config { error, persisted } => Some(if *persisted {
                format!(
                    "{}; or replace the stored one with `cjm-ctl config set {} ...`",
                    error.hint(),
                    error.plugin
                )
            } else {
                error.hint()
            }),
            Self::Schema(e) => Some(e.hint()),
            Self::MissingSecret { plugin, key, .. } => Some(format!(
                "set it with `cjm-ctl set-secret {plugin} {key}` (it is stored in the secret store, never in a config file)"
            )),
            Self::MissingVariable { plugin, key, .. } => Some(format!(
                "give {key} a value in the `env_vars` of {plugin}'s plugins.yaml entry and run `cjm-ctl install-all --force -p {plugin}`"
            )),
            Self::Store(_) => Some("check that the data directory is readable and writable".into()),
            Self::Thread { .. } => Some(
                "the process cannot start more threads: check its limits (`ulimit -u`, `/proc/sys/kernel/threads-max`, the cgroup's `pids.max`) and free memory, or unload instances it does not need, then try again".into(),
            ),
            Self::Waited { .. } => Some(
                "`cjm-ctl resources` shows what holds the memory: stop or unload instances that are not needed, or raise `ManagerOptions::admission_timeout`".into(),
            ),
            Self::BadResources { plugin, key, .. } => Some(format!(
                "fix resources.{key} in {plugin}'s manifest (`cjm-ctl info {plugin}` shows where it is), or remove it to have the scheduler measure the plugin"
            )),
            Self::NotAMonitor { .. } => Some(
                "register an instance of a system-monitor plugin (one that implements the reference's SystemMonitorPlugin), or fix what its get_system_status() returns".into(),
            ),
            Self::Blocked { .. } => Some(
                "free memory (unload instances that are not needed), or use the `fit` policy, which waits for memory and says why".into(),
            ),
            Self::OutOfMemory { plugin, .. } => Some(format!(
                "declare what {plugin} needs in its manifest (`resources.min_gpu_vram_mb`, `min_system_ram_mb`) so that room is made before the call, or give it a smaller configuration (model, batch size); `cjm-ctl resources` shows what holds the memory"
            )),
            Self::CrashLooping {
                plugin,
                instance_id,
                ..
            } => Some(format!(
                "read the plugin's log (`Manager::logs(\"{plugin}\", 50)`, or `<data_dir>/logs/{plugin}.log`), fix the cause, then reset the instance (`Manager::reset(\"{instance_id}\")`)"
            )),
        }
    }
}
