//! One call from nothing to loaded plugins (the reference's `create_pipeline`).

use std::collections::BTreeMap;

use cjm_core::{CjmConfig, CjmYamlError, LoadOptions};
use cjm_manager::{LoadSpec, Manager, ManagerError, ManagerOptions, PluginBinding};

/// A manager with a bound handle per plugin that loaded.
///
/// The reference's `Pipeline` also holds its job queue; cjm's durable queue
/// comes with the scheduler and will be added here.
#[derive(Debug)]
pub struct Pipeline {
    /// The manager everything goes through.
    pub manager: Manager,
    /// A handle per loaded instance, keyed by instance id (the plugin's name for
    /// its default instance).
    pub bindings: BTreeMap<String, PluginBinding>,
    /// The specs that did not load, with why: reported, not fatal.
    pub failed: Vec<(LoadSpec, ManagerError)>,
}

/// Reads `cjm.yaml` (from the current folder, or `CJM_*` variables), discovers the
/// installed plugins and loads `plugins` concurrently.
pub fn create_pipeline(
    plugins: impl IntoIterator<Item = impl Into<LoadSpec>>,
) -> Result<Pipeline, CjmYamlError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let cfg = cjm_core::load_config(&LoadOptions::default(), &|k| std::env::var(k).ok(), &cwd)?;
    Ok(create_pipeline_with(
        cfg,
        ManagerOptions::default(),
        plugins,
    ))
}

/// [`create_pipeline`] with a given configuration and manager options: the
/// reference's `scheduler` is [`ManagerOptions::scheduling`], its
/// `system_monitor` is [`ManagerOptions::system_monitor`] (one of `plugins`,
/// registered as it loads).
pub fn create_pipeline_with(
    cfg: CjmConfig,
    options: ManagerOptions,
    plugins: impl IntoIterator<Item = impl Into<LoadSpec>>,
) -> Pipeline {
    let wanted_monitor = options.system_monitor.clone();
    let manager = Manager::new(cfg, options);
    let specs: Vec<LoadSpec> = plugins.into_iter().map(Into::into).collect();
    let mut bindings = BTreeMap::new();
    let mut failed = Vec::new();
    for (spec, outcome) in specs.iter().zip(manager.load_many(&specs)) {
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
    Pipeline {
        manager,
        bindings,
        failed,
    }
}
