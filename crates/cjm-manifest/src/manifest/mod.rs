//! The typed manifest, read from either layout and written as v2.0.

mod reader;

pub(crate) use self::reader::*;

use std::path::{Path, PathBuf};

use cjm_core::{PluginMeta, PluginTaxonomy, ResourceRequirements};
use serde_json::{Map, Value};

use crate::{
    error::{FileKind, ManifestError, Problem, Problems},
    validate::validate_manifest,
};

/// The format version every manifest is written with.
pub const CURRENT_FORMAT_VERSION: &str = "2.0";

/// The layout a manifest was read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FormatVersion {
    /// The legacy flat layout, which has no `format_version` key (or a null
    /// one).
    V1,
    /// The nested layout, `"format_version": "2.0"`.
    #[default]
    V2,
}

impl FormatVersion {
    /// `"1.0"` or `"2.0"`: what the reference's `ManifestV2.format_version`
    /// holds after a load.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => CURRENT_FORMAT_VERSION,
        }
    }
}

/// Deployment facts written at install time (`install`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstallSection {
    /// The plugin environment's Python interpreter.
    pub python_path: String,
    /// The conda environment's name (the reference's only kind of environment).
    pub conda_env: String,
    /// The plugin's own database file, if it has one.
    pub db_path: String,
    /// Environment variables for the worker, in file order; every value is a
    /// string when read by this crate.
    pub env_vars: Map<String, Value>,
    /// When the plugin was installed (ISO 8601, UTC).
    pub installed_at: String,
    /// `cjm-ctl <version>` that wrote the manifest.
    pub installer_version: String,
    /// What was installed: a pip spec or a git URL.
    pub package_source: String,
    /// Keys this crate does not know, in file order; written back after the
    /// known ones.
    pub extra: Map<String, Value>,
}

/// Facts derived from the plugin's code (`code`), refreshed by
/// `regenerate-manifest`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodeSection {
    /// The plugin's unique name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// A short description.
    pub description: String,
    /// The module holding the plugin class.
    pub module: String,
    /// The plugin class's name (the JSON key `class`).
    pub class_name: String,
    /// The fully qualified interface class name.
    pub interface: String,
    /// The derived domain/role/interface triple, when known.
    pub taxonomy: Option<PluginTaxonomy>,
    /// Binary hard facts about what the plugin needs, when known.
    pub resources: Option<ResourceRequirements>,
    /// The JSON Schema of the plugin's configuration, in file order.
    pub config_schema: Option<Map<String, Value>>,
    /// When the code section was last refreshed (ISO 8601, UTC).
    pub regenerated_at: Option<String>,
    /// The worker environment contract: one object per declared variable.
    pub worker_env: Option<Vec<Value>>,
    /// Keys this crate does not know, in file order; written back after the
    /// known ones.
    pub extra: Map<String, Value>,
}

/// Witness hashes for drift detection (`drift_tracking`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriftTracking {
    /// [`compute_config_schema_hash`] of the code section's schema when the
    /// manifest was written; `None` after a legacy load.
    pub config_schema_hash: Option<String>,
    /// Keys this crate does not know, in file order; written back after the
    /// known ones.
    pub extra: Map<String, Value>,
}

/// A plugin manifest in the v2.0 shape, whichever layout it was read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// The layout it was read from; always written as v2.0.
    pub format_version: FormatVersion,
    /// Deployment facts.
    pub install: InstallSection,
    /// Code-derived facts.
    pub code: CodeSection,
    /// Drift witness.
    pub drift_tracking: DriftTracking,
    /// The operator's overlay, free-form.
    pub overrides: Map<String, Value>,
    /// Unknown top-level keys of a v2.0 manifest, in file order; written back
    /// after the known ones.
    pub extra: Map<String, Value>,
    /// The keys of a legacy v1.0 manifest that have no place in v2.0
    /// (`category`, `type`, …). Readable, but never written: the reference's
    /// upgrade drops them.
    pub legacy_fields: Map<String, Value>,
}

/// The reference's `compute_config_schema_hash`: the SHA-256 of the schema's
/// canonical JSON, with no schema (or an empty one) hashed as `{}`.
pub fn compute_config_schema_hash(schema: Option<&Map<String, Value>>) -> String {
    let value = schema.map_or(Value::Null, |schema| Value::Object(schema.clone()));
    cjm_core::hash_dict_canonical(&value)
}

impl Manifest {
    /// Reads a manifest file in either layout, checking that every field it
    /// knows has the right type; the reference's other rules (required fields,
    /// dotted interface names, …) are [`Manifest::load_validated`]'s.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let path = path.as_ref();
        let text = read(path)?;
        Self::from_json_str(&text, path)
    }

    /// [`Manifest::load`], then every rule of the reference's `cjm-ctl
    /// validate`; fails with all the problems found.
    pub fn load_validated(path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let path = path.as_ref();
        let text = read(path)?;
        let value = parse_json(&text, path)?;
        let problems = validate_manifest(&value);
        if !problems.is_empty() {
            return Err(invalid(path, problems));
        }
        Self::from_json_value(&value, path)
    }

    /// Parses manifest text; `path` names it in errors.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let path = path.as_ref();
        Self::from_json_value(&parse_json(text, path)?, path)
    }

    /// Reads an already parsed manifest; `path` names it in errors.
    ///
    /// As in the reference, a `format_version` of `"2.0"` means the nested
    /// layout, none (or null) the legacy flat one, anything else is refused;
    /// a falsy value (`null`, `""`, `0`, `false`, `[]`, `{}`) where a string
    /// belongs reads as `""`, and an empty `taxonomy` or `resources` block as
    /// none.
    pub fn from_json_value(value: &Value, path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let mut reader = Reader::default();
        let manifest = reader.manifest(value);
        match manifest {
            Some(manifest) if reader.problems.is_empty() => Ok(manifest),
            _ => Err(invalid(path.as_ref(), reader.problems)),
        }
    }

    /// The manifest as the reference's `manifest_to_dict` builds it, in its
    /// key order, with unknown keys after the known ones of their section.
    /// `format_version` is always `"2.0"`: writing is the upgrade.
    pub fn to_json_value(&self) -> Value {
        let mut root = Map::new();
        root.insert("format_version".into(), CURRENT_FORMAT_VERSION.into());
        root.insert("install".into(), self.install.to_json_value());
        root.insert("code".into(), self.code.to_json_value());
        let mut drift = Map::new();
        drift.insert(
            "config_schema_hash".into(),
            self.drift_tracking.config_schema_hash.clone().into(),
        );
        extend_unknown(&mut drift, &self.drift_tracking.extra);
        root.insert("drift_tracking".into(), drift.into());
        root.insert("overrides".into(), self.overrides.clone().into());
        extend_unknown(&mut root, &self.extra);
        Value::Object(root)
    }

    /// The file text the reference's `write_manifest` writes for this
    /// manifest: `json.dump(…, indent=2)`, ASCII only, no final newline.
    pub fn to_json_string(&self) -> String {
        cjm_core::python_json(&self.to_json_value(), Some(2))
    }

    /// Writes the manifest to `path` as v2.0, replacing the file in one step
    /// so a reader never sees half a manifest.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), ManifestError> {
        let path = path.as_ref();
        let write_error = |source| ManifestError::Write {
            path: path.to_owned(),
            source,
        };
        let file_name = path.file_name().map_or_else(
            || "manifest".into(),
            |name| name.to_string_lossy().into_owned(),
        );
        let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        fs_err::write(&temporary, self.to_json_string()).map_err(write_error)?;
        fs_err::rename(&temporary, path).map_err(|error| {
            _ = fs_err::remove_file(&temporary);
            write_error(error)
        })
    }

    /// Sets `drift_tracking.config_schema_hash` from the code section's
    /// schema, as the reference does whenever it writes a fresh manifest.
    pub fn refresh_config_schema_hash(&mut self) {
        self.drift_tracking.config_schema_hash =
            Some(compute_config_schema_hash(self.code.config_schema.as_ref()));
    }

    /// The plugin's metadata as the reference's discovery builds it from a
    /// manifest: version `0.0.0` when empty, and the category derived from
    /// the taxonomy's domain (`speech_to_text` → `Speech To Text`).
    pub fn to_plugin_meta(&self) -> PluginMeta {
        let version = if self.code.version.is_empty() {
            "0.0.0"
        } else {
            &self.code.version
        };
        let mut meta = PluginMeta::new(self.code.name.clone(), version);
        meta.description.clone_from(&self.code.description);
        meta.category = self
            .code
            .taxonomy
            .as_ref()
            .filter(|taxonomy| !taxonomy.domain.is_empty())
            .map(|taxonomy| python_title(&taxonomy.domain.replace('_', " ")))
            .unwrap_or_default();
        meta.interface.clone_from(&self.code.interface);
        meta.taxonomy.clone_from(&self.code.taxonomy);
        meta.resources.clone_from(&self.code.resources);
        meta.config_schema.clone_from(&self.code.config_schema);
        meta
    }
}

impl InstallSection {
    fn to_json_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("python_path".into(), self.python_path.clone().into());
        map.insert("conda_env".into(), self.conda_env.clone().into());
        map.insert("db_path".into(), self.db_path.clone().into());
        map.insert("env_vars".into(), self.env_vars.clone().into());
        map.insert("installed_at".into(), self.installed_at.clone().into());
        map.insert(
            "installer_version".into(),
            self.installer_version.clone().into(),
        );
        map.insert("package_source".into(), self.package_source.clone().into());
        extend_unknown(&mut map, &self.extra);
        Value::Object(map)
    }
}

impl CodeSection {
    fn to_json_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("name".into(), self.name.clone().into());
        map.insert("version".into(), self.version.clone().into());
        map.insert("description".into(), self.description.clone().into());
        map.insert("module".into(), self.module.clone().into());
        map.insert("class".into(), self.class_name.clone().into());
        map.insert("interface".into(), self.interface.clone().into());
        // The reference writes the optional fields only when set, in this
        // order (worker_env before regenerated_at, unlike the dataclass).
        if let Some(taxonomy) = &self.taxonomy {
            let mut block = Map::new();
            block.insert("domain".into(), taxonomy.domain.clone().into());
            block.insert("role".into(), taxonomy.role.clone().into());
            block.insert(
                "interface_fqcn".into(),
                taxonomy.interface_fqcn.clone().into(),
            );
            map.insert("taxonomy".into(), block.into());
        }
        if let Some(resources) = &self.resources {
            let mut block = Map::new();
            block.insert("requires_gpu".into(), resources.requires_gpu.into());
            block.insert("platforms".into(), resources.platforms.clone().into());
            block.insert("accelerators".into(), resources.accelerators.clone().into());
            extend_unknown(&mut block, &resources.extra);
            map.insert("resources".into(), block.into());
        }
        if let Some(schema) = &self.config_schema {
            map.insert("config_schema".into(), schema.clone().into());
        }
        if let Some(worker_env) = &self.worker_env {
            map.insert("worker_env".into(), worker_env.clone().into());
        }
        if let Some(regenerated_at) = &self.regenerated_at {
            map.insert("regenerated_at".into(), regenerated_at.clone().into());
        }
        extend_unknown(&mut map, &self.extra);
        Value::Object(map)
    }
}

/// Appends unknown keys, never letting one replace a known key's value.
fn extend_unknown(map: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (key, value) in extra {
        if !map.contains_key(key) {
            map.insert(key.clone(), value.clone());
        }
    }
}

/// Python's `str.title()`: each run of letters starts upper case and goes on
/// lower case.
fn python_title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_letter = false;
    for c in text.chars() {
        if after_letter {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        after_letter = c.is_alphabetic();
    }
    out
}

fn read(path: &Path) -> Result<String, ManifestError> {
    cjm_core::read_capped(path, cjm_core::MAX_CONFIG_FILE_BYTES).map_err(|source| {
        ManifestError::Read {
            path: path.to_owned(),
            source,
        }
    })
}

fn parse_json(text: &str, path: &Path) -> Result<Value, ManifestError> {
    cjm_core::json_loads(text).map_err(|source| ManifestError::Json {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, problems: Vec<Problem>) -> ManifestError {
    ManifestError::Invalid {
        kind: FileKind::Manifest,
        path: PathBuf::from(path),
        problems: Problems(problems),
    }
}
