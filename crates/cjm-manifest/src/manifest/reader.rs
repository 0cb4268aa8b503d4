//! Reading a manifest document: every field checked against the reference's rules,
//! every problem collected with its path, unknown keys kept.

//! The typed manifest, read from either layout and written as v2.0.

use cjm_core::{PluginTaxonomy, ResourceRequirements};
use serde_json::{Map, Value};

use super::{
    CURRENT_FORMAT_VERSION, CodeSection, DriftTracking, FormatVersion, InstallSection, Manifest,
};
use crate::{
    error::Problem,
    json::{expected, is_falsy, join},
};

pub(crate) const INSTALL_KEYS: [&str; 7] = [
    "python_path",
    "conda_env",
    "db_path",
    "env_vars",
    "installed_at",
    "installer_version",
    "package_source",
];

/// The `resources` keys the typed block holds; the others stay in its `extra`.
const RESOURCE_KEYS: [&str; 3] = ["requires_gpu", "platforms", "accelerators"];

pub(crate) const CODE_KEYS: [&str; 11] = [
    "name",
    "version",
    "description",
    "module",
    "class",
    "interface",
    "taxonomy",
    "resources",
    "config_schema",
    "regenerated_at",
    "worker_env",
];

/// Reads untyped JSON into the typed manifest, collecting a problem for every
/// field of the wrong type instead of stopping at the first.
#[derive(Default)]
pub(crate) struct Reader {
    pub(crate) problems: Vec<Problem>,
}

impl Reader {
    pub(crate) fn manifest(&mut self, value: &Value) -> Option<Manifest> {
        let Value::Object(root) = value else {
            self.problem("", expected("a JSON object", value));
            return None;
        };
        match root.get("format_version") {
            None | Some(Value::Null) => Some(self.v1(root)),
            Some(Value::String(version)) if version == CURRENT_FORMAT_VERSION => {
                Some(self.v2(root))
            }
            Some(other) => {
                self.problem("format_version", unrecognized_format_version(other));
                None
            }
        }
    }

    fn v2(&mut self, root: &Map<String, Value>) -> Manifest {
        let empty = Map::new();
        let install = self.section(root, "install", "").unwrap_or(&empty);
        let code = self.section(root, "code", "").unwrap_or(&empty);
        let drift = self.section(root, "drift_tracking", "").unwrap_or(&empty);
        let overrides = self.section(root, "overrides", "").cloned();
        Manifest {
            format_version: FormatVersion::V2,
            install: InstallSection {
                extra: unknown(install, &INSTALL_KEYS),
                ..self.install(install, "install")
            },
            code: CodeSection {
                extra: unknown(code, &CODE_KEYS),
                ..self.code(code, "code", true)
            },
            drift_tracking: DriftTracking {
                config_schema_hash: self.optional_string(
                    drift,
                    "config_schema_hash",
                    "drift_tracking",
                ),
                extra: unknown(drift, &["config_schema_hash"]),
            },
            overrides: overrides.unwrap_or_default(),
            extra: unknown(
                root,
                &[
                    "format_version",
                    "install",
                    "code",
                    "drift_tracking",
                    "overrides",
                ],
            ),
            legacy_fields: Map::new(),
        }
    }

    /// The reference's legacy shim: the flat keys map onto the sections;
    /// `regenerated_at`, the drift hash and the overrides start empty whatever
    /// the file holds.
    fn v1(&mut self, root: &Map<String, Value>) -> Manifest {
        let mut known: Vec<&str> = INSTALL_KEYS.to_vec();
        known.extend(CODE_KEYS.iter().filter(|&&key| key != "regenerated_at"));
        known.push("format_version");
        Manifest {
            format_version: FormatVersion::V1,
            install: self.install(root, ""),
            code: self.code(root, "", false),
            drift_tracking: DriftTracking::default(),
            overrides: Map::new(),
            extra: Map::new(),
            legacy_fields: unknown(root, &known),
        }
    }

    fn install(&mut self, map: &Map<String, Value>, path: &str) -> InstallSection {
        let conda_env = self.string(map, "conda_env", path);
        if !conda_env.is_empty() {
            self.path_component(&conda_env, &join(path, "conda_env"), "an environment name");
        }
        // cjm's own install key: the folder under `envs/` that `remove` deletes.
        if let Some(Value::String(key)) = map.get("env_key")
            && !key.is_empty()
        {
            self.path_component(key, &join(path, "env_key"), "an environment key");
        }
        InstallSection {
            python_path: self.string(map, "python_path", path),
            conda_env,
            db_path: self.string(map, "db_path", path),
            env_vars: self.env_vars(map, path),
            installed_at: self.string(map, "installed_at", path),
            installer_version: self.string(map, "installer_version", path),
            package_source: self.string(map, "package_source", path),
            extra: Map::new(),
        }
    }

    fn code(&mut self, map: &Map<String, Value>, path: &str, v2: bool) -> CodeSection {
        let name = self.string(map, "name", path);
        if !name.is_empty() {
            self.path_component(&name, &join(path, "name"), "a plugin name");
        }
        CodeSection {
            name,
            version: self.string(map, "version", path),
            description: self.string(map, "description", path),
            module: self.string(map, "module", path),
            class_name: self.string(map, "class", path),
            interface: self.string(map, "interface", path),
            taxonomy: self.taxonomy(map, path),
            resources: self.resources(map, path),
            config_schema: self.config_schema(map, path),
            regenerated_at: if v2 {
                self.optional_string(map, "regenerated_at", path)
            } else {
                None
            },
            worker_env: self.worker_env(map, path),
            extra: Map::new(),
        }
    }

    fn problem(&mut self, path: &str, message: String) {
        self.problems.push(Problem::new(path, message));
    }

    /// A name cjm joins to one of its folders (`manifests/<name>.json`,
    /// `envs/<key>`) must stay inside it.
    fn path_component(&mut self, name: &str, path: &str, what: &str) {
        if let Some(why) = cjm_core::path_component_problem(name) {
            self.problem(
                path,
                format!("{name:?} cannot be {what}: it {why}, and cjm uses it as a file name"),
            );
        }
    }

    /// `value or ""`, with anything truthy that is not a string refused.
    fn string(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> String {
        match map.get(key) {
            Some(Value::String(text)) => text.clone(),
            Some(value) if !is_falsy(value) => {
                self.problem(&join(path, key), expected("a string", value));
                String::new()
            }
            _ => String::new(),
        }
    }

    /// A string kept as is, or null.
    fn optional_string(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(value) => {
                self.problem(&join(path, key), expected("a string or null", value));
                None
            }
        }
    }

    /// `dict(value or {})`, with anything truthy that is not an object refused.
    fn section<'a>(
        &mut self,
        map: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        match map.get(key) {
            // `if not d: return None`: an empty block is no block.
            Some(Value::Object(section)) if !section.is_empty() => Some(section),
            Some(value) if !is_falsy(value) => {
                self.problem(&join(path, key), expected("an object", value));
                None
            }
            _ => None,
        }
    }

    fn env_vars(&mut self, map: &Map<String, Value>, path: &str) -> Map<String, Value> {
        let Some(env_vars) = self.section(map, "env_vars", path).cloned() else {
            return Map::new();
        };
        let path = join(path, "env_vars");
        for (name, value) in &env_vars {
            if !value.is_string() {
                self.problem(&join(&path, name), expected("a string", value));
            }
        }
        env_vars
    }

    fn taxonomy(&mut self, map: &Map<String, Value>, path: &str) -> Option<PluginTaxonomy> {
        let block = self.section(map, "taxonomy", path)?;
        let path = join(path, "taxonomy");
        Some(PluginTaxonomy {
            domain: self.string(block, "domain", &path),
            role: self.string(block, "role", &path),
            interface_fqcn: self.string(block, "interface_fqcn", &path),
        })
    }

    fn resources(&mut self, map: &Map<String, Value>, path: &str) -> Option<ResourceRequirements> {
        let block = self.section(map, "resources", path)?;
        let path = join(path, "resources");
        Some(ResourceRequirements {
            // `bool(value)`: the reference takes any truthy value for true.
            requires_gpu: block.get("requires_gpu").is_some_and(|v| !is_falsy(v)),
            platforms: self.strings(block, "platforms", &path),
            accelerators: self.strings(block, "accelerators", &path),
            extra: block
                .iter()
                .filter(|(k, _)| !RESOURCE_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// `list(value or [])` of strings.
    fn strings(&mut self, map: &Map<String, Value>, key: &str, path: &str) -> Vec<String> {
        let path = join(path, key);
        match map.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    if let Value::String(text) = item {
                        Some(text.clone())
                    } else {
                        self.problem(&format!("{path}[{index}]"), expected("a string", item));
                        None
                    }
                })
                .collect(),
            Some(value) if !is_falsy(value) => {
                self.problem(&path, expected("a list of strings", value));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn config_schema(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
    ) -> Option<Map<String, Value>> {
        match map.get("config_schema") {
            None | Some(Value::Null) => None,
            Some(Value::Object(schema)) => Some(schema.clone()),
            Some(value) => {
                self.problem(
                    &join(path, "config_schema"),
                    expected("an object or null", value),
                );
                None
            }
        }
    }

    fn worker_env(&mut self, map: &Map<String, Value>, path: &str) -> Option<Vec<Value>> {
        match map.get("worker_env") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(value) => {
                self.problem(&join(path, "worker_env"), expected("a list or null", value));
                None
            }
        }
    }
}

pub(crate) fn unrecognized_format_version(found: &Value) -> String {
    format!(
        "unrecognized format version {}; expected \"2.0\", or no format_version for a legacy v1.0 manifest",
        cjm_core::python_json(found, None)
    )
}

/// The entries of `map` whose keys are not in `known`, in order.
pub(crate) fn unknown(map: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    map.iter()
        .filter(|(key, _)| !known.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}
