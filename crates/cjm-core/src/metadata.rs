//! What a plugin is, as discovery and the manager describe it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::timestamp::isoformat_utc;

/// A plugin's classification, derived at install time from the interface class it
/// implements (the reference's `PluginTaxonomy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PluginTaxonomy {
    /// The area, from the interface library's `cjm-<domain>-plugin-system` name,
    /// e.g. `transcription`.
    pub domain: String,
    /// The interface class's name, e.g. `TranscriptionPlugin`.
    pub role: String,
    /// The interface class's full dotted path, verbatim.
    pub interface_fqcn: String,
}

/// What a plugin needs to run at all, for filtering at discovery (the reference's
/// `ResourceRequirements`). How much memory it uses is measured; a declared amount
/// in `extra` is only the prior.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceRequirements {
    /// Whether it needs a GPU.
    pub requires_gpu: bool,
    /// The platforms it runs on, e.g. `linux-x64`; empty means any.
    pub platforms: Vec<String>,
    /// The accelerators it can use, e.g. `cuda`, `cpu`; informational.
    pub accelerators: Vec<String>,
    /// The block's other keys, in file order, kept and written back: notably the
    /// amounts the reference's `SafetyScheduler` and `QueueScheduler` read from
    /// the raw manifest (`min_system_ram_mb`, `min_gpu_vram_mb`), which cjm's
    /// scheduler takes as the prior of a plugin's footprint.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What is known about a discovered plugin (the reference's `PluginMeta`), with its
/// JSON field names and defaults.
///
/// The reference's `instance` field holds the live plugin object and has no JSON
/// form; it is left out, and ignored when present in input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginMeta {
    /// The plugin's unique name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// What the plugin does.
    #[serde(default)]
    pub description: String,
    /// A display label, from the taxonomy's domain or a legacy manifest.
    #[serde(default)]
    pub category: String,
    /// The interface class's full dotted path.
    #[serde(default)]
    pub interface: String,
    /// The derived classification; absent in legacy manifests.
    #[serde(default)]
    pub taxonomy: Option<PluginTaxonomy>,
    /// What the plugin needs to run; absent in legacy manifests.
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    /// The JSON Schema of the plugin's configuration.
    #[serde(default)]
    pub config_schema: Option<Map<String, Value>>,
    /// Whether the plugin is enabled.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// When the plugin last ran, in seconds since the Unix epoch; 0 if never.
    #[serde(default)]
    pub last_executed: f64,
    /// Whether the running worker's config schema differs from the manifest's.
    #[serde(default)]
    pub config_schema_drift: bool,
    /// The schema the running worker reported, when it drifted.
    #[serde(default)]
    pub live_config_schema: Option<Map<String, Value>>,
}

fn enabled_by_default() -> bool {
    true
}

impl PluginMeta {
    /// A plugin known only by name and version, every other field at its default.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            category: String::new(),
            interface: String::new(),
            taxonomy: None,
            resources: None,
            config_schema: None,
            enabled: true,
            last_executed: 0.0,
            config_schema_drift: false,
            live_config_schema: None,
        }
    }
}

/// The state of one loaded instance of a plugin (the reference's
/// `PluginInstance`), with its JSON field names and defaults.
///
/// The reference's `proxy` field holds the live connection to the worker and has
/// no JSON form; it is left out, and ignored when present in input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInstance {
    /// The instance's unique id; the plugin's name for its default instance.
    pub instance_id: String,
    /// The plugin this is an instance of.
    pub plugin_name: String,
    /// The configuration the instance was initialised with.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// Whether the instance is enabled.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// When the instance last ran, in seconds since the Unix epoch; 0 if never.
    #[serde(default)]
    pub last_executed: f64,
    /// When the instance was created, as [`isoformat_utc`] writes it.
    pub created_at: String,
    /// The canonical hash of `config`, keying its resource measurements; empty
    /// until computed.
    #[serde(default)]
    pub config_hash: String,
    /// How many calls may run on the instance at once; `None` for no limit.
    #[serde(default)]
    pub max_concurrent_requests: Option<usize>,
}

impl PluginInstance {
    /// An instance created at `created_at`, every other field at its default.
    pub fn new(
        instance_id: impl Into<String>,
        plugin_name: impl Into<String>,
        created_at: SystemTime,
    ) -> Self {
        Self {
            instance_id: instance_id.into(),
            plugin_name: plugin_name.into(),
            config: Map::new(),
            enabled: true,
            last_executed: 0.0,
            created_at: isoformat_utc(created_at),
            config_hash: String::new(),
            max_concurrent_requests: None,
        }
    }
}
