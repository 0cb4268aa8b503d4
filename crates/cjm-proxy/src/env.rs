//! The environment a worker starts with: nothing of the host's but the allow-list
//! (`cjm_core::INHERITED_ENV`), then what cjm sets, then the spec's own variables.

use std::ffi::OsString;

use crate::spec::WorkerSpec;

/// The worker's whole environment: the allow-list, then what cjm sets, then the
/// spec's variables; a later value of a name replaces an earlier one.
pub(crate) fn worker_env(spec: &WorkerSpec) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: &str, v: OsString| {
        let k = OsString::from(k);
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for key in cjm_core::INHERITED_ENV {
        if let Some(v) = std::env::var_os(key) {
            set(key, v);
        }
    }
    // Prints must reach the log as they happen, not when a buffer fills.
    set("PYTHONUNBUFFERED", "1".into());
    if !spec.python_path.is_empty() {
        set(
            "PYTHONPATH",
            std::env::join_paths(&spec.python_path).unwrap_or_default(),
        );
    }
    if let Some(d) = &spec.data_dir {
        set("CJM_DATA_DIR", d.into());
    }
    if let Some(d) = &spec.models_dir {
        set("CJM_MODELS_DIR", d.into());
    }
    for (k, v) in &spec.env {
        set(k, v.into());
    }
    env
}
