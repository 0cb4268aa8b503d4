//! One call from nothing to loaded plugins and a started job queue (the
//! reference's `create_pipeline`).

use std::collections::BTreeMap;

use cjm_core::{CjmConfig, CjmYamlError, LoadOptions};
use cjm_manager::{LoadSpec, Manager, ManagerError, ManagerOptions, PluginBinding};
use cjm_queue::{JobQueue, QueueError, QueueOptions};

/// A manager, its started job queue, and a bound handle per plugin that
/// loaded (the reference's `Pipeline`).
#[derive(Debug)]
pub struct Pipeline {
    /// The manager everything goes through.
    pub manager: Manager,
    /// The durable job queue on it, started: submitted jobs run.
    pub queue: JobQueue,
    /// A handle per loaded instance, keyed by instance id (the plugin's name for
    /// its default instance).
    pub bindings: BTreeMap<String, PluginBinding>,
    /// The specs that did not load, with why: reported, not fatal.
    pub failed: Vec<(LoadSpec, ManagerError)>,
}

/// Why a pipeline could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// `cjm.yaml` or the `CJM_*` variables are wrong.
    #[error(transparent)]
    Config(#[from] CjmYamlError),
    /// The job queue could not be opened (another host holds it, or its
    /// folder is not writable).
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Reads `cjm.yaml` (from the current folder, or `CJM_*` variables),
/// discovers the installed plugins, loads `plugins` concurrently and opens
/// and starts the job queue in `<data_dir>/queue.db`.
pub async fn create_pipeline(
    plugins: impl IntoIterator<Item = impl Into<LoadSpec>>,
) -> Result<Pipeline, PipelineError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let cfg = cjm_core::load_config(&LoadOptions::default(), &|k| std::env::var(k).ok(), &cwd)?;
    let queue = QueueOptions::new(cfg.data_dir.join("queue.db"));
    create_pipeline_with(cfg, ManagerOptions::default(), queue, plugins).await
}

/// [`create_pipeline`] with a given configuration, manager and queue options:
/// the reference's `scheduler` is [`ManagerOptions::scheduling`], its
/// `system_monitor` is [`ManagerOptions::system_monitor`] (one of `plugins`,
/// registered as it loads), its `queue_kwargs` are `queue`.
pub async fn create_pipeline_with(
    cfg: CjmConfig,
    options: ManagerOptions,
    queue: QueueOptions,
    plugins: impl IntoIterator<Item = impl Into<LoadSpec>>,
) -> Result<Pipeline, PipelineError> {
    let wanted_monitor = options.system_monitor.clone();
    let manager = Manager::new(cfg, options);
    let specs: Vec<LoadSpec> = plugins.into_iter().map(Into::into).collect();
    // Loads start workers and wait for them: off the async runtime.
    let loaded = {
        let (manager, specs) = (manager.clone(), specs.clone());
        match tokio::task::spawn_blocking(move || manager.load_many(&specs)).await {
            Ok(loaded) => loaded,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: nothing loaded.
            Err(_) => Vec::new(),
        }
    };
    let mut bindings = BTreeMap::new();
    let mut failed = Vec::new();
    for (spec, outcome) in specs.iter().zip(loaded) {
        match outcome {
            Ok(id) => {
                let config = manager.config(&id).unwrap_or_default();
                bindings.insert(id, manager.bind(spec.plugin.clone(), config));
            }
            Err(e) => {
                tracing::warn!("plugin {} did not load: {e}", spec.plugin);
                failed.push((spec.clone(), e));
            }
        }
    }
    if let Some(wanted) = wanted_monitor
        && manager.system_monitor().is_none()
    {
        tracing::warn!(
            "the system monitor {wanted} is not a loaded system-monitor plugin (list it among \
             the plugins, and see the warnings above); scheduling on cjm's own readings"
        );
    }
    let queue = JobQueue::open(manager.clone(), queue).await?;
    queue.start();
    Ok(Pipeline {
        manager,
        queue,
        bindings,
        failed,
    })
}
