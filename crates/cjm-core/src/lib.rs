//! cjm's shared vocabulary: the error taxonomy and [`JobError`], content hashing,
//! plugin metadata and the layered `cjm.yaml` configuration, each faithful to the
//! Python reference (`cjm-plugin-system` 0.0.34) down to the bytes it writes.
//!
//! This crate owns the shapes every other crate agrees on: how a failure is
//! categorised and recorded, how a Python exception reported by a worker becomes a
//! [`JobError`], how configs and files are hashed, what a plugin's metadata says, and
//! where cjm keeps its files ([`load_config`]), and how a YAML file is typed and located
//! ([`yaml`], for cjm.yaml and plugins.yaml alike). It never touches processes, channels,
//! environments or the system's clocks: callers pass the time (and the environment) in,
//! through the one injectable [`Clock`] every other crate shares.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use cjm_core::{ErrorCategory, JobErrorContext, RaisedException, hash_dict_canonical};
//!
//! let raised = RaisedException::new("builtins.KeyError", "'model'", "KeyError('model')");
//! let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_791_600);
//! let job_error = raised.to_job_error(&JobErrorContext::new(at).with_plugin("whisper"));
//! assert_eq!(job_error.category, ErrorCategory::UserInput);
//! assert_eq!(job_error.occurred_at.as_deref(), Some("2026-11-27T15:00:00+00:00"));
//!
//! let config = serde_json::json!({"model": "tiny", "beam_size": 5});
//! assert!(hash_dict_canonical(&config).starts_with("sha256:"));
//! ```

mod clock;
mod config;
mod errors;
mod files;
mod hashing;
mod inherit;
mod metadata;
mod spelling;
mod timestamp;
pub mod yaml;

pub use crate::{
    clock::{Clock, ManualClock, SharedClock, SystemClock},
    config::{
        CONFIG_FILE_NAME, CjmConfig, CjmYamlError, CjmYamlProblem, CondaType, ConfigWarning,
        ConfigWarningKind, Constraints, ENV_CONDA_PREFIX, ENV_CONDA_TYPE, ENV_DATA_DIR,
        InstallConfig, LoadOptions, RuntimeConfig, RuntimeMode, SubstrateConfig, UnknownValue,
        current_platform, load_config,
    },
    errors::{
        CancelPhase, ErrorCategory, JobError, JobErrorContext, PluginError, PluginErrorKind,
        PluginRef, RaisedException, ResourceShortfall, ShortfallResource, TracebackPolicy,
        UnknownCategory, WorkerExit,
    },
    files::{MAX_CONFIG_FILE_BYTES, path_component_problem, read_capped, read_capped_bytes},
    hashing::{
        HashError, canonical_json, hash_bytes, hash_dict_canonical, hash_file, is_python_falsy,
        json_loads, python_json, verify_hash,
    },
    inherit::INHERITED_ENV,
    metadata::{PluginInstance, PluginMeta, PluginTaxonomy, ResourceRequirements},
    spelling::did_you_mean,
    timestamp::isoformat_utc,
};
