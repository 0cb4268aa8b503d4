//! The manifest an install writes: built from the introspected metadata as the
//! reference builds it, plus what the install decided and, on a regenerate, what
//! the operator set; validated, then written last, so a failed install registers
//! nothing. Also how an installed plugin's manifest is found again.

use std::path::PathBuf;
use std::time::SystemTime;

use cjm_manifest::{Backend, Manifest, PluginSpec};
use serde_json::{Map, Value, json};

use super::{Installed, Installer, Stage};
use crate::error::InstallError;
use crate::key::{EnvKey, EnvRequest, LocalSource};
use crate::store::Env;

impl Installer {
    /// The manifest written for `spec` with environment `key`.
    pub(super) fn find_manifest(
        &self,
        spec: &PluginSpec,
        key: &EnvKey,
        req_sources: &[LocalSource],
    ) -> Option<(PathBuf, Manifest)> {
        // The file is named after the plugin's own name, which is usually the entry's.
        let by_name = self.manifests_dir.join(format!("{}.json", spec.name));
        let conda = spec.backend() == Backend::Conda;
        let hash = source_hash_of(req_sources);
        let matches = |m: &Manifest| {
            m.install.package_source == spec.package
                && m.install.extra.get("source_hash").and_then(Value::as_str) == hash.as_deref()
                && if conda {
                    m.install.conda_env == key.0
                } else {
                    m.install.extra.get("env_key").and_then(Value::as_str) == Some(&key.0)
                }
        };
        if let Ok(m) = Manifest::load(&by_name)
            && matches(&m)
        {
            return Some((by_name, m));
        }
        let entries = fs_err::read_dir(&self.manifests_dir).ok()?;
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && *p != by_name)
            .find_map(|p| Manifest::load(&p).ok().filter(matches).map(|m| (p, m)))
    }

    /// Introspects the plugin in `env` and writes its manifest; `installed_at` is
    /// kept from `previous` (a regenerate) or set to now.
    pub(super) fn register(
        &self,
        spec: &PluginSpec,
        env: &Env,
        req: Option<&EnvRequest>,
        previous: Option<&Manifest>,
        on_stage: &mut dyn FnMut(Stage),
    ) -> Result<Installed, InstallError> {
        on_stage(Stage::Introspecting);
        let found = self.introspect(&env.python, spec)?;
        let mut warnings = found.warnings;
        let now = cjm_core::isoformat_utc(SystemTime::now());
        let mut manifest = manifest_from_meta(&found.meta, spec, env, &now);
        record_install_choices(&mut manifest, spec, req, &warnings);
        if let Some(file) = &self.plugins_file {
            manifest
                .install
                .extra
                .insert("plugins_yaml".into(), json!(file));
        }
        if let Some(prev) = previous {
            keep_operator_facts(&mut manifest, prev);
        }
        let problems = cjm_manifest::validate_manifest(&manifest.to_json_value());
        if !problems.is_empty() {
            return Err(InstallError::InvalidMetadata {
                plugin: spec.name.clone(),
                problems: problems.iter().map(ToString::to_string).collect(),
            });
        }
        if manifest.code.name != spec.name {
            warnings.push(format!(
                "plugins.yaml calls it {:?} but the plugin calls itself {:?}; its manifest is {}.json",
                spec.name, manifest.code.name, manifest.code.name
            ));
        }
        on_stage(Stage::Writing);
        fs_err::create_dir_all(&self.manifests_dir).map_err(|source| InstallError::Io {
            plugin: spec.name.clone(),
            what: format!("creating {}", self.manifests_dir.display()),
            source,
        })?;
        let manifest_path = self
            .manifests_dir
            .join(format!("{}.json", manifest.code.name));
        manifest
            .write(&manifest_path)
            .map_err(|source| InstallError::Manifest {
                plugin: spec.name.clone(),
                source: Box::new(source),
            })?;
        Ok(Installed {
            name: spec.name.clone(),
            manifest_path,
            manifest,
            env_key: env.key.clone(),
            env_built: env.built,
            unchanged: false,
            source: Some(found.source),
            warnings,
        })
    }
}

/// The combined hash of local sources, as a manifest records it.
fn source_hash_of(sources: &[LocalSource]) -> Option<String> {
    match sources {
        [] => None,
        [one] => Some(one.hash.clone()),
        many => Some(cjm_core::hash_dict_canonical(&json!(
            many.iter().map(|s| &s.hash).collect::<Vec<_>>()
        ))),
    }
}

/// What the install decided beyond the plugin's own metadata, as extra install
/// keys: the local source's hash (how `install-all` sees an edit), the overrides
/// used, the constraints, and the warnings the operator was shown.
fn record_install_choices(
    manifest: &mut Manifest,
    spec: &PluginSpec,
    req: Option<&EnvRequest>,
    warnings: &[String],
) {
    let extra = &mut manifest.install.extra;
    if let Some(req) = req {
        if let Some(hash) = source_hash_of(&req.local_sources) {
            extra.insert("source_hash".into(), json!(hash));
        }
        if req.ignore_requires_python {
            extra.insert("ignore_requires_python".into(), json!(true));
        }
        if !req.constraints.is_empty() {
            extra.insert("constraints".into(), json!(req.constraints));
        }
    }
    if spec.allow_missing_interface {
        extra.insert("allow_missing_interface".into(), json!(true));
    }
    if !warnings.is_empty() {
        extra.insert("install_warnings".into(), json!(warnings));
    }
}

/// What a regenerate keeps from the manifest it replaces: the install time (as the
/// reference does), the operator's `overrides`, and install facts the new
/// introspection did not set (variables and keys from the original plugins.yaml).
fn keep_operator_facts(manifest: &mut Manifest, prev: &Manifest) {
    if !prev.install.installed_at.is_empty() {
        manifest
            .install
            .installed_at
            .clone_from(&prev.install.installed_at);
    }
    manifest.overrides.clone_from(&prev.overrides);
    for (k, v) in &prev.install.env_vars {
        manifest
            .install
            .env_vars
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    for (k, v) in &prev.install.extra {
        manifest
            .install
            .extra
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
}

/// The v2.0 manifest for introspected `meta`, as the reference builds it, plus
/// cjm's install facts (`backend`, `env_key`, declared resources) as extra keys.
fn manifest_from_meta(
    meta: &Map<String, Value>,
    spec: &PluginSpec,
    env: &Env,
    now: &str,
) -> Manifest {
    let text = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut m = Manifest::default();
    m.install.python_path = env.python.to_string_lossy().into_owned();
    m.install.conda_env = if spec.backend() == Backend::Conda {
        spec.env_name.clone()
    } else {
        String::new()
    };
    m.install.db_path = text("db_path");
    if let Some(vars) = meta.get("env_vars").and_then(Value::as_object) {
        m.install.env_vars.clone_from(vars);
    }
    for (k, v) in &spec.env_vars {
        m.install
            .env_vars
            .insert(k.clone(), Value::String(v.clone()));
    }
    now.clone_into(&mut m.install.installed_at);
    m.install.installer_version = format!("cjm-ctl {}", env!("CARGO_PKG_VERSION"));
    m.install.package_source.clone_from(&spec.package);
    let extra = &mut m.install.extra;
    extra.insert("backend".into(), json!(spec.backend().as_str()));
    if spec.backend() != Backend::Conda {
        extra.insert("env_key".into(), json!(env.key.0));
    }
    extra.insert("env_name".into(), json!(spec.env_name));
    let r = &spec.resources;
    if r.ram_mb.is_some() || r.vram_mb.is_some() || r.gpu {
        extra.insert(
            "declared_resources".into(),
            json!({"ram_mb": r.ram_mb, "vram_mb": r.vram_mb, "gpu": r.gpu}),
        );
    }

    m.code.name = text("name");
    m.code.version = text("version");
    m.code.description = text("description");
    m.code.module = text("module");
    m.code.class_name = text("class");
    m.code.interface = text("interface");
    m.code.taxonomy = meta
        .get("taxonomy")
        .and_then(|t| serde_json::from_value(t.clone()).ok());
    m.code.resources = meta.get("resources").and_then(Value::as_object).map(|r| {
        let strings = |key: &str| -> Vec<String> {
            r.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        cjm_core::ResourceRequirements {
            requires_gpu: r
                .get("requires_gpu")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            platforms: strings("platforms"),
            accelerators: strings("accelerators"),
            extra: r
                .iter()
                .filter(|(k, _)| {
                    !["requires_gpu", "platforms", "accelerators"].contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    });
    m.code.config_schema = meta
        .get("config_schema")
        .and_then(Value::as_object)
        .cloned();
    m.code.regenerated_at = Some(now.to_owned());
    m.code.worker_env = meta.get("worker_env").and_then(Value::as_array).cloned();
    m.refresh_config_schema_hash();
    m
}
