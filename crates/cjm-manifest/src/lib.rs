//! cjm's plugin files: manifests (v2.0, and legacy v1.0 read and upgraded) and
//! plugins.yaml, read and written exactly as the Python reference
//! (`cjm-plugin-system` 0.0.34) reads and writes them, and checked by its rules.
//!
//! This crate owns the shapes of those files, their validation with every
//! problem named by file, field path and (for YAML) line, and the config schema
//! hash a manifest carries for drift detection. A manifest it writes is byte
//! for byte what the reference writes for the same data; unknown keys survive
//! a read and write. It never touches environments, processes or the network:
//! it reads and writes files, nothing more.
//!
//! ```
//! use cjm_manifest::{FormatVersion, Manifest};
//!
//! let legacy = r#"{"name": "whisper", "version": "1.0.0", "description": "Speech to text",
//!     "module": "whisper_plugin.plugin", "class": "WhisperPlugin",
//!     "interface": "cjm_transcription_plugin_system.TranscriptionPlugin",
//!     "python_path": "/envs/whisper/bin/python"}"#;
//! let mut manifest = Manifest::from_json_str(legacy, "whisper.json")?;
//! assert_eq!(manifest.format_version, FormatVersion::V1);
//! assert_eq!(manifest.code.class_name, "WhisperPlugin");
//!
//! manifest.refresh_config_schema_hash();
//! let upgraded = manifest.to_json_string();
//! assert!(upgraded.starts_with("{\n  \"format_version\": \"2.0\",\n  \"install\": {"));
//! # Ok::<(), cjm_manifest::ManifestError>(())
//! ```

mod discover;
mod error;
mod json;
mod manifest;
mod plugins;
mod validate;
mod worker_env;

pub use crate::{
    discover::{Discovered, Discovery, default_search_paths, discover},
    error::{FileKind, ManifestError, Problem, Problems},
    manifest::{
        CURRENT_FORMAT_VERSION, CodeSection, DriftTracking, FormatVersion, InstallSection,
        Manifest, compute_config_schema_hash,
    },
    plugins::{Backend, Constraints, DeclaredResources, PluginSpec, PluginsFile},
    validate::validate_manifest,
    worker_env::WorkerEnvVar,
};
