//! Installing plugins: environment → introspection inside it → manifest.
//!
//! [`Installer`] holds what every install shares (the store, the manifests folder,
//! the worker wheel, the defaults) and runs the steps; each step lives in its own
//! file:
//! - `request.rs`: what a plugins.yaml entry's environment contains ([`EnvRequest`]);
//! - `conda_env.rs`: the named environment of a `backend: conda` entry;
//! - `introspect.rs`: running the plugin's metadata code inside the environment;
//! - `manifest.rs`: the manifest built from that metadata, and finding it again.

mod conda_env;
mod introspect;
mod manifest;
mod request;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cjm_core::InstallConfig;
use cjm_manifest::{Backend, Manifest, PluginSpec};
use serde_json::Value;

use crate::conda::CondaRuntime;
use crate::error::{EnvError, InstallError};
use crate::key::{EnvKey, EnvRequest};
use crate::store::{Env, EnvStore};

/// Where an install is in its steps, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Building (or finding) the environment.
    Environment,
    /// Running the plugin's metadata code inside the environment.
    Introspecting,
    /// Writing the manifest.
    Writing,
}

impl Stage {
    /// A short present-tense label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Environment => "building environment",
            Self::Introspecting => "introspecting",
            Self::Writing => "writing manifest",
        }
    }
}

/// A plugin that is installed.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The plugins.yaml entry's name.
    pub name: String,
    /// Its manifest file.
    pub manifest_path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its environment.
    pub env_key: EnvKey,
    /// Whether this install built the environment.
    pub env_built: bool,
    /// Whether it was installed already and nothing was done.
    pub unchanged: bool,
    /// What described the plugin: `meta` (the reference's convention) or
    /// `entry_point`; `None` when nothing ran.
    pub source: Option<String>,
    /// Things the operator should know (no config schema, a name that differs
    /// from plugins.yaml's, …).
    pub warnings: Vec<String>,
}

/// Installs plugins into environments of one [`EnvStore`] and registers them with a
/// manifest in one folder.
#[derive(Debug, Clone)]
pub struct Installer {
    store: EnvStore,
    manifests_dir: PathBuf,
    worker_wheel: PathBuf,
    plugin_data_dir: Option<PathBuf>,
    models_dir: Option<PathBuf>,
    base_dir: PathBuf,
    default_python: String,
    timeout: Duration,
    conda: Option<CondaRuntime>,
    plugins_file: Option<PathBuf>,
    defaults: InstallConfig,
}

impl Installer {
    /// Installs into `store`, writes manifests to `manifests_dir`, and puts the
    /// `cjm-worker` wheel at `worker_wheel` into every environment.
    pub fn new(
        store: EnvStore,
        manifests_dir: impl Into<PathBuf>,
        worker_wheel: impl Into<PathBuf>,
    ) -> Self {
        Self {
            store,
            manifests_dir: manifests_dir.into(),
            worker_wheel: absolute(worker_wheel.into()),
            plugin_data_dir: None,
            models_dir: None,
            base_dir: PathBuf::from("."),
            default_python: "3".to_owned(),
            timeout: Duration::from_mins(5),
            conda: None,
            plugins_file: None,
            defaults: InstallConfig::default(),
        }
    }

    /// cjm.yaml's `install:` section: the `ignore_requires_python` an entry without
    /// its own gets, and constraints applied to every entry (a file there is
    /// absolute, as cjm.yaml's paths are once loaded).
    #[must_use]
    pub fn defaults(mut self, defaults: InstallConfig) -> Self {
        self.defaults = defaults;
        self
    }

    /// The conda tool for `backend: conda` entries (without one they fail with a
    /// message saying how to configure it).
    #[must_use]
    pub fn conda(mut self, conda: CondaRuntime) -> Self {
        self.conda = Some(conda);
        self
    }

    /// `CJM_DATA_DIR` for the plugin's code during introspection.
    #[must_use]
    pub fn plugin_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_data_dir = Some(dir.into());
        self
    }

    /// `CJM_MODELS_DIR` for the plugin's code during introspection.
    #[must_use]
    pub fn models_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.models_dir = dir;
        self
    }

    /// The folder relative `find_links` entries are read from (the plugins.yaml's).
    #[must_use]
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = absolute(dir.into());
        self
    }

    /// The plugins.yaml the entries come from, recorded in each manifest
    /// (`install.plugins_yaml`) so that a later `repair` finds the entry again.
    #[must_use]
    pub fn plugins_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.plugins_file = Some(absolute(path.into()));
        self
    }

    /// The Python for entries without a `python_version` (default `3`: any Python 3
    /// uv finds).
    #[must_use]
    pub fn default_python(mut self, python: impl Into<String>) -> Self {
        self.default_python = python.into();
        self
    }

    /// How long a plugin's metadata code may run before it is killed (default 300 s).
    #[must_use]
    pub fn introspection_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The store environments are built in.
    pub fn store(&self) -> &EnvStore {
        &self.store
    }

    /// The folder manifests are written to.
    pub fn manifests_dir(&self) -> &Path {
        &self.manifests_dir
    }

    /// `spec`'s manifest and environment, if it is installed exactly as `spec` asks
    /// (same package, same environment key, the interpreter still there).
    pub fn installed(&self, spec: &PluginSpec) -> Result<Option<Installed>, InstallError> {
        let req = self.request(spec)?;
        let key = self.env_key(spec, &req);
        if req.backend == Backend::Uv && self.store.get(&key).map_err(env(spec))?.is_none() {
            return Ok(None);
        }
        let Some((manifest_path, manifest)) = self.find_manifest(spec, &key, &req.local_sources)
        else {
            return Ok(None);
        };
        if !Path::new(&manifest.install.python_path).exists() {
            return Ok(None);
        }
        Ok(Some(Installed {
            name: spec.name.clone(),
            manifest_path,
            manifest,
            env_key: key,
            env_built: false,
            unchanged: true,
            source: None,
            warnings: Vec::new(),
        }))
    }

    /// The environment's identity: the store's key, or for conda the env's name.
    fn env_key(&self, spec: &PluginSpec, req: &EnvRequest) -> EnvKey {
        if req.backend == Backend::Conda {
            EnvKey(spec.env_name.clone())
        } else {
            self.store.key(req)
        }
    }

    /// Installs `spec`: its environment (built unless it exists), introspection in
    /// it, then its manifest. Does nothing when it is installed already, unless
    /// `force`, which rebuilds the environment and rewrites the manifest. A failure
    /// leaves no manifest and no environment this call built.
    pub fn install(
        &self,
        spec: &PluginSpec,
        force: bool,
        on_stage: &mut dyn FnMut(Stage),
    ) -> Result<Installed, InstallError> {
        if !force && let Some(done) = self.installed(spec)? {
            return Ok(done);
        }
        let req = self.request(spec)?;
        on_stage(Stage::Environment);
        let env = match req.backend {
            Backend::Conda => self.conda_env(spec, &req, force),
            Backend::Uv if force => self.store.repair(&req),
            _ => self.store.ensure(&req),
        }
        .map_err(env(spec))?;
        let result = self.register(spec, &env, Some(&req), None, on_stage);
        if result.is_err() && env.built {
            // Nothing half-registered: an environment only this plugin asked for goes.
            let _ = match req.backend {
                Backend::Conda => self
                    .conda
                    .as_ref()
                    .map_or(Ok(()), |c| c.remove(&spec.env_name)),
                _ => self.store.remove(&env.key),
            };
        }
        result
    }

    /// Installs every entry of `specs`, `jobs` at a time; the outcomes in `specs`'
    /// order. `on_stage` hears each entry's steps (by index) as they start.
    pub fn install_all(
        &self,
        specs: &[PluginSpec],
        force: bool,
        jobs: usize,
        on_stage: &(dyn Fn(usize, Stage) + Sync),
    ) -> Vec<Result<Installed, InstallError>> {
        let next = AtomicUsize::new(0);
        let mut slots: Vec<Option<Result<Installed, InstallError>>> =
            specs.iter().map(|_| None).collect();
        let done = std::sync::Mutex::new(&mut slots);
        std::thread::scope(|s| {
            for _ in 0..jobs.clamp(1, specs.len().max(1)) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(spec) = specs.get(i) else { break };
                        let out = self.install(spec, force, &mut |stage| on_stage(i, stage));
                        if let Ok(mut slots) = done.lock() {
                            slots[i] = Some(out);
                        }
                    }
                });
            }
        });
        slots
            .into_iter()
            .zip(specs)
            .map(|(slot, spec)| {
                slot.unwrap_or_else(|| {
                    Err(InstallError::Introspection {
                        plugin: spec.name.clone(),
                        message: "the install thread stopped without an outcome".into(),
                        detail: Vec::new(),
                    })
                })
            })
            .collect()
    }

    /// Re-runs introspection for an installed plugin and rewrites its manifest,
    /// keeping `installed_at`. `spec` says what was installed (from plugins.yaml, or
    /// rebuilt from the manifest by the caller).
    pub fn regenerate(
        &self,
        spec: &PluginSpec,
        previous: &Manifest,
    ) -> Result<Installed, InstallError> {
        let python = PathBuf::from(&previous.install.python_path);
        if !python.exists() {
            return Err(InstallError::Io {
                plugin: spec.name.clone(),
                what: format!(
                    "finding the environment's interpreter {} (the environment is gone)",
                    python.display()
                ),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let key = previous
            .install
            .extra
            .get("env_key")
            .and_then(Value::as_str)
            .map_or_else(|| EnvKey(String::new()), |k| EnvKey(k.to_owned()));
        let env = Env {
            key,
            dir: python
                .parent()
                .and_then(Path::parent)
                .map_or_else(PathBuf::new, Path::to_path_buf),
            python,
            lock: String::new(),
            built: false,
        };
        self.register(spec, &env, None, Some(previous), &mut |_| {})
    }
}

/// `path` made absolute against the working directory, so that tools run elsewhere
/// find it.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn env(spec: &PluginSpec) -> impl Fn(EnvError) -> InstallError + '_ {
    move |error| InstallError::Env {
        plugin: spec.name.clone(),
        error: Box::new(error),
    }
}
