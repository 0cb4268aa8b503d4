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

impl ManagerError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::NotInstalled { .. } => Some(
                "add the plugin to plugins.yaml and run `cjm-ctl install-all`, or check the search paths".into(),
            ),
            Self::InvalidInstanceId { .. } => None,
            Self::Plugin(e) => e.hint(),
            Self::Worker(e) => e.hint(),
            Self::CrashLooping { instance_id, .. } => Some(format!(
                "read the plugin's log (`get_plugin_logs`), fix the cause, then reset the instance (`Manager::reset(\"{instance_id}\")`)"
            )),
        }
    }
}
