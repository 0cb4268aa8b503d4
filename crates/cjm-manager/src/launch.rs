//! Starting an installed plugin from its manifest, and checking it for drift.

use std::fmt;
use std::path::PathBuf;

use cjm_core::CjmConfig;
use cjm_manifest::{Manifest, compute_config_schema_hash};
use cjm_proxy::{CallOptions, Worker, WorkerError, WorkerSpec};
use serde_json::Value;

/// The worker for a plugin as its manifest describes it: the environment's
/// interpreter, the module and class, the manifest's `install.env_vars`, and the
/// configuration's data, models and log folders (`<data_dir>/logs/<plugin>.log`).
/// Nothing of the plugin is imported into the host.
pub fn worker_spec(manifest: &Manifest, cfg: &CjmConfig) -> WorkerSpec {
    let code = &manifest.code;
    let mut spec = WorkerSpec::new(
        &code.name,
        &manifest.install.python_path,
        &code.module,
        &code.class_name,
    );
    spec.env = manifest
        .install
        .env_vars
        .iter()
        .map(|(k, v)| {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (k.clone(), text)
        })
        .collect();
    spec.data_dir = Some(cfg.plugin_data_dir());
    spec.models_dir.clone_from(&cfg.models_dir);
    spec.log_file = Some(log_file(cfg, &code.name));
    spec
}

/// Plugin `plugin`'s log file, which its workers write: `<logs_dir>/<plugin>.log`.
pub fn log_file(cfg: &CjmConfig, plugin: &str) -> PathBuf {
    cfg.logs_dir().join(format!("{plugin}.log"))
}

/// A plugin whose code no longer matches its manifest: the config schema it
/// reports now hashes differently from the one recorded at install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The plugin.
    pub plugin: String,
    /// The hash in the manifest (`drift_tracking.config_schema_hash`).
    pub stored: String,
    /// The hash of the schema the running plugin reports.
    pub live: String,
    /// The manifest file, when known.
    pub manifest_path: Option<PathBuf>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {} has drifted: its config schema now hashes to {} but its manifest{} records {}; run `cjm-ctl regenerate-manifest {}` to refresh the manifest",
            self.plugin,
            self.live,
            self.manifest_path
                .as_ref()
                .map_or_else(String::new, |p| format!(" ({})", p.display())),
            self.stored,
            self.plugin
        )
    }
}

/// Asks the running plugin for its config schema and compares its hash with the
/// manifest's. `None`: no drift, or nothing to compare (a manifest upgraded from
/// v1.0 records no hash until it is regenerated).
pub fn check_drift(worker: &Worker, manifest: &Manifest) -> Result<Option<Drift>, WorkerError> {
    let Some(stored) = manifest.drift_tracking.config_schema_hash.clone() else {
        return Ok(None);
    };
    let schema =
        worker.call_blocking("get_config_schema", vec![], vec![], CallOptions::default())?;
    let live = match schema.to_json() {
        Value::Object(map) => compute_config_schema_hash(Some(&map)),
        _ => compute_config_schema_hash(None),
    };
    Ok((live != stored).then(|| Drift {
        plugin: manifest.code.name.clone(),
        stored,
        live,
        manifest_path: None,
    }))
}
