//! A handle bound to one plugin (the reference's `PluginBinding`).

use cjm_proto::Value;
use serde_json::Map;

use crate::error::ManagerError;
use crate::manager::{LoadSpec, Manager};
use crate::state::InstanceState;

/// One plugin's default instance through a shared [`Manager`]: every method
/// forwards with the plugin's name filled in; `default_config` is used when
/// [`load`](Self::load) gets none.
#[derive(Debug, Clone)]
pub struct PluginBinding {
    manager: Manager,
    plugin: String,
    default_config: Map<String, serde_json::Value>,
}

impl PluginBinding {
    pub(crate) fn new(
        manager: Manager,
        plugin: String,
        default_config: Map<String, serde_json::Value>,
    ) -> Self {
        Self {
            manager,
            plugin,
            default_config,
        }
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Whether the plugin is loaded.
    pub fn is_loaded(&self) -> bool {
        self.manager.state(&self.plugin).is_some()
    }

    /// Whether it is loaded and takes work.
    pub fn is_enabled(&self) -> bool {
        self.manager.info(&self.plugin).is_some_and(|i| i.enabled)
    }

    /// Its state, when loaded.
    pub fn state(&self) -> Option<InstanceState> {
        self.manager.state(&self.plugin)
    }

    /// Loads it with `config`, or the binding's default configuration.
    pub fn load(&self, config: Option<Map<String, serde_json::Value>>) -> Result<(), ManagerError> {
        let config = config.unwrap_or_else(|| self.default_config.clone());
        self.manager
            .load(&LoadSpec::new(&self.plugin).config(config))
            .map(drop)
    }

    /// Unloads it.
    pub fn unload(&self) -> Result<(), ManagerError> {
        self.manager.unload(&self.plugin)
    }

    /// Restarts its worker, with `config` if given.
    pub fn reload(
        &self,
        config: Option<Map<String, serde_json::Value>>,
    ) -> Result<(), ManagerError> {
        self.manager.reload(&self.plugin, config)
    }

    /// Enables it.
    pub fn enable(&self) -> Result<(), ManagerError> {
        self.manager.enable(&self.plugin)
    }

    /// Disables it (the worker stays; calls are refused).
    pub fn disable(&self) -> Result<(), ManagerError> {
        self.manager.disable(&self.plugin)
    }

    /// `execute(*args, **kwargs)`.
    pub fn execute(
        &self,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, ManagerError> {
        self.manager.execute(&self.plugin, args, kwargs)
    }

    /// `execute(*args, **kwargs)`, awaited.
    pub async fn execute_async(
        &self,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, ManagerError> {
        self.manager.execute_async(&self.plugin, args, kwargs).await
    }

    /// Its current configuration.
    pub fn config(&self) -> Option<Map<String, serde_json::Value>> {
        self.manager.config(&self.plugin)
    }

    /// Its configuration schema.
    pub fn config_schema(&self) -> Option<Map<String, serde_json::Value>> {
        self.manager.config_schema(&self.plugin)
    }

    /// Its worker's resource figures.
    pub fn stats(&self) -> Result<cjm_proxy::WorkerStats, ManagerError> {
        self.manager.stats(&self.plugin)
    }
}
