//! Installing plugins: environment → introspection inside it → manifest.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use cjm_core::{Constraints, InstallConfig};
use cjm_manifest::{Backend as SpecBackend, Manifest, PluginSpec};
use serde_json::{Map, Value, json};

use crate::conda::{CondaRuntime, CondaSource};
use crate::error::{EnvError, InstallError};
use crate::key::{Backend, EnvKey, EnvRequest, LocalSource};
use crate::source::{source_hash, source_name};
use crate::store::{Env, EnvStore};

/// The introspection script, run with the environment's interpreter.
const INTROSPECT: &str = include_str!("introspect.py");
/// Lines of a failing introspection's output kept for the error.
const TAIL: usize = 15;
/// Lines of a plugin's traceback kept for the error: enough for the whole of a
/// typical import chain, whose cause is often at the top.
const TRACEBACK: usize = 60;

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

    /// What `spec`'s environment contains.
    pub fn request(&self, spec: &PluginSpec) -> Result<EnvRequest, InstallError> {
        let backend = match spec.backend() {
            SpecBackend::Uv => Backend::Uv,
            SpecBackend::Python => Backend::Python,
            SpecBackend::Conda => Backend::Conda,
        };
        let python = match backend {
            Backend::Python => spec.python_path.clone().unwrap_or_default(),
            _ => spec
                .python_version
                .clone()
                .unwrap_or_else(|| self.default_python.clone()),
        };
        let (package, local_sources) = self.package(spec)?;
        let mut requirements = spec.interface_libs.clone();
        requirements.push(package);
        requirements.extend(spec.requirements.iter().cloned());
        let find_links = spec
            .find_links
            .iter()
            .map(|l| {
                if l.contains("://") {
                    PathBuf::from(l)
                } else {
                    self.base_dir.join(l)
                }
            })
            .collect();
        let mut constraints = Vec::new();
        for c in [
            self.defaults.constraints.as_ref(),
            spec.constraints.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            constraints.extend(self.constraint_lines(spec, c)?);
        }
        Ok(EnvRequest {
            backend,
            python,
            requirements,
            wheels: vec![self.worker_wheel.clone()],
            find_links,
            index_url: spec.index_url.clone(),
            extra_index_urls: spec.extra_index_urls.clone(),
            no_index: spec.no_index,
            constraints,
            ignore_requires_python: self.ignores_requires_python(spec),
            local_sources,
        })
    }

    /// Whether `spec` is installed with Requires-Python ignored: its own setting,
    /// else cjm.yaml's.
    fn ignores_requires_python(&self, spec: &PluginSpec) -> bool {
        spec.ignore_requires_python
            .unwrap_or(self.defaults.ignore_requires_python)
    }

    /// The package requirement as the tools get it, and the local source it names,
    /// if any. A local path (`./dir`, `../x.whl`, `/abs/dir`, `-e ./dir`) is
    /// resolved against the plugins.yaml's folder, as `find_links` is; a folder or
    /// file that is not editable is hashed, so editing it reinstalls the plugin.
    fn package(&self, spec: &PluginSpec) -> Result<(String, Vec<LocalSource>), InstallError> {
        let package = spec.package.trim();
        let (editable, path) = match package.strip_prefix("-e ") {
            Some(path) => (true, path.trim()),
            None => (false, package),
        };
        if !is_local_path(path) {
            return Ok((spec.package.clone(), Vec::new()));
        }
        let resolved = self.base_dir.join(path);
        let shown = resolved.to_string_lossy().into_owned();
        if editable {
            // An editable install runs the folder's code as it is: nothing to hash.
            return Ok((format!("-e {shown}"), Vec::new()));
        }
        let hash = source_hash(&resolved).map_err(|source| InstallError::Io {
            plugin: spec.name.clone(),
            what: format!(
                "reading the local package {} (package: {package}, relative to {})",
                resolved.display(),
                self.base_dir.display()
            ),
            source,
        })?;
        let source = LocalSource {
            name: source_name(&resolved),
            path: resolved,
            hash,
        };
        Ok((shown, vec![source]))
    }

    /// The lines of one `constraints` setting: the pins, or a file's lines without
    /// blanks and comments (a relative file is relative to the plugins.yaml's folder).
    fn constraint_lines(
        &self,
        spec: &PluginSpec,
        constraints: &Constraints,
    ) -> Result<Vec<String>, InstallError> {
        match constraints {
            Constraints::Pins(pins) => Ok(pins.iter().map(|p| p.trim().to_owned()).collect()),
            Constraints::File(file) => {
                let path = self.base_dir.join(file);
                let text = fs_err::read_to_string(&path).map_err(|source| InstallError::Io {
                    plugin: spec.name.clone(),
                    what: format!("reading the constraints file {}", path.display()),
                    source,
                })?;
                Ok(text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect())
            }
        }
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

    /// The manifest written for `spec` with environment `key`.
    fn find_manifest(
        &self,
        spec: &PluginSpec,
        key: &EnvKey,
        req_sources: &[LocalSource],
    ) -> Option<(PathBuf, Manifest)> {
        // The file is named after the plugin's own name, which is usually the entry's.
        let by_name = self.manifests_dir.join(format!("{}.json", spec.name));
        let conda = spec.backend() == SpecBackend::Conda;
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

    /// `backend: conda`: the reference's way. The named environment is created (from
    /// `env_file` or `python_version`) unless it exists, removed first with `force`;
    /// then pip installs the requirements and the worker wheel into it.
    fn conda_env(&self, spec: &PluginSpec, req: &EnvRequest, force: bool) -> Result<Env, EnvError> {
        let Some(conda) = &self.conda else {
            return Err(EnvError::Unsupported { backend: "conda" });
        };
        if !conda.available() {
            return Err(EnvError::RuntimeSetup {
                problem: format!(
                    "the conda runtime {} was not found",
                    conda.program().display()
                ),
                fix: conda.missing_hint(),
            });
        }
        let name = &spec.env_name;
        let mut exists = conda.env_exists(name)?;
        if exists && force {
            conda.remove(name)?;
            exists = false;
        }
        if !exists {
            let source = match (&spec.env_file, &spec.python_version) {
                (Some(file), _) if file.contains("://") => CondaSource::EnvFile(file.clone()),
                (Some(file), _) => {
                    CondaSource::EnvFile(self.base_dir.join(file).to_string_lossy().into_owned())
                }
                (None, version) => CondaSource::PythonVersion(
                    version
                        .clone()
                        .unwrap_or_else(|| self.default_python.clone()),
                ),
            };
            conda.create(name, &source)?;
        }
        let mut args = Vec::new();
        if req.ignore_requires_python {
            args.push("--ignore-requires-python".to_owned());
        }
        if !req.constraints.is_empty() {
            // Kept in the environment, beside what it was resolved under.
            let prefix = conda.env_prefix(name)?.unwrap_or_default();
            let file = prefix.join(crate::store::CONDA_CONSTRAINTS);
            fs_err::write(&file, crate::store::constraints_text(&req.constraints)).map_err(
                |source| EnvError::Io {
                    what: "writing the constraints".into(),
                    source,
                },
            )?;
            args.extend(["-c".to_owned(), file.to_string_lossy().into_owned()]);
        }
        if !req.local_sources.is_empty() {
            // pip leaves an installed version alone, even when its folder changed.
            args.push("--force-reinstall".to_owned());
        }
        if req.no_index {
            args.push("--no-index".to_owned());
        }
        if let Some(url) = &req.index_url {
            args.extend(["--index-url".to_owned(), url.clone()]);
        }
        for url in &req.extra_index_urls {
            args.extend(["--extra-index-url".to_owned(), url.clone()]);
        }
        for dir in &req.find_links {
            args.extend([
                "--find-links".to_owned(),
                dir.to_string_lossy().into_owned(),
            ]);
        }
        args.extend(req.requirements.iter().cloned());
        args.extend(req.wheels.iter().map(|w| w.to_string_lossy().into_owned()));
        let installed = conda.pip_install(name, &args);
        let python = installed.and_then(|()| conda.python(name));
        match python {
            Ok(Some(python)) => Ok(Env {
                key: EnvKey(name.clone()),
                dir: conda.env_prefix(name)?.unwrap_or_default(),
                python,
                lock: String::new(),
                built: !exists,
            }),
            failed => {
                if !exists {
                    let _ = conda.remove(name);
                }
                Err(failed.err().unwrap_or_else(|| EnvError::RuntimeSetup {
                    problem: format!("conda environment {name} has no bin/python"),
                    fix: "give the environment a Python (python_version, or python in env_file's dependencies)".into(),
                }))
            }
        }
    }

    /// Introspects the plugin in `env` and writes its manifest; `installed_at` is
    /// kept from `previous` (a regenerate) or set to now.
    fn register(
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

    /// Runs the introspection script with `python`.
    fn introspect(&self, python: &Path, spec: &PluginSpec) -> Result<Introspected, InstallError> {
        let (module, distribution) = module_and_distribution(&spec.package);
        let request = json!({
            "module": module,
            "distribution": distribution,
            "plugin": spec.name,
            "guessed_from": module_guess(&spec.package),
            "allow_missing_interface": spec.allow_missing_interface,
        });
        let out = scratch_file();
        let mut cmd = Command::new(python);
        cmd.arg("-I")
            .arg("-c")
            .arg(INTROSPECT)
            .arg(request.to_string())
            .arg(&out)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(std::env::temp_dir());
        for name in cjm_core::INHERITED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some(dir) = &self.plugin_data_dir {
            cmd.env("CJM_DATA_DIR", dir);
        }
        if let Some(dir) = &self.models_dir {
            cmd.env("CJM_MODELS_DIR", dir);
        }
        cmd.envs(&spec.env_vars);
        let failed = |message: String, detail: Vec<String>| InstallError::Introspection {
            plugin: spec.name.clone(),
            message,
            detail,
        };
        let output = run_with_timeout(cmd, self.timeout)
            .map_err(|e| failed(format!("cannot run {}: {e}", python.display()), Vec::new()))?;
        let text = fs_err::read_to_string(&out).unwrap_or_default();
        let _ = fs_err::remove_file(&out);
        let printed = tail_of(&output.stdout, &output.stderr);
        let Some(output_status) = output.status else {
            return Err(failed(
                format!(
                    "the plugin's code did not finish within {} s and was killed",
                    self.timeout.as_secs()
                ),
                printed,
            ));
        };
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match doc.get("ok").and_then(Value::as_bool) {
            Some(true) => {
                let meta = doc
                    .get("meta")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let warnings = doc
                    .get("warnings")
                    .and_then(Value::as_array)
                    .map(|w| {
                        w.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                let source = doc
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or("meta")
                    .to_owned();
                Ok(Introspected {
                    meta,
                    source,
                    warnings,
                })
            }
            Some(false) => {
                let message = doc
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned();
                let detail = doc.get("detail").and_then(Value::as_str).unwrap_or("");
                let mut lines: Vec<String> = detail.lines().map(str::to_owned).collect();
                if lines.is_empty() {
                    lines = printed;
                }
                let keep = lines.len().saturating_sub(TRACEBACK);
                Err(failed(message, lines.split_off(keep)))
            }
            None => Err(failed(
                format!("the interpreter exited ({output_status}) without a result"),
                printed,
            )),
        }
    }
}

/// What introspection reported.
struct Introspected {
    meta: Map<String, Value>,
    source: String,
    warnings: Vec<String>,
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
    m.install.conda_env = if spec.backend() == SpecBackend::Conda {
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
    if spec.backend() != SpecBackend::Conda {
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

/// The import name and distribution name a package spec suggests: the reference's
/// rules for git URLs and paths (the last path segment, `-` → `_`), and for a pip
/// requirement its name without extras, versions or markers.
pub fn module_and_distribution(package: &str) -> (String, Option<String>) {
    let package = package.trim();
    if let Some(url) = package.strip_prefix("git+") {
        let repo = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
        let repo = repo.split('@').next().unwrap_or(repo);
        let name = repo.trim_end_matches(".git");
        return (name.replace('-', "_"), None);
    }
    if let Some(path) = package.strip_prefix("-e ") {
        let name = Path::new(path.trim())
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        return (name.replace('-', "_"), None);
    }
    if package.contains('/') || package.contains('\\') {
        let name = Path::new(package)
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        // A wheel or sdist file: its distribution name comes before the first `-`.
        let stem = name
            .strip_suffix(".whl")
            .or_else(|| name.strip_suffix(".tar.gz"))
            .map(|s| s.split('-').next().unwrap_or(s).to_owned());
        return match stem {
            Some(dist) => (dist.replace('-', "_"), Some(dist)),
            None => (name.replace('-', "_"), None),
        };
    }
    let end = package
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(package.len());
    let name = &package[..end];
    (
        name.replace(['-', '.'], "_").to_lowercase(),
        Some(name.to_owned()),
    )
}

/// Whether a package spec is a path on this machine rather than a requirement or a
/// URL: it starts with `.` or `/`, or has a path separator (the reference's
/// test for a path too).
fn is_local_path(package: &str) -> bool {
    !package.contains("://")
        && !package.starts_with("git+")
        && !package.contains(" @ ")
        && (package.starts_with(['.', '/']) || package.contains(['/', '\\']))
}

/// Where [`module_and_distribution`]'s import name comes from, for messages.
fn module_guess(package: &str) -> String {
    let package = package.trim();
    if package.starts_with("git+") {
        format!("the repository name in `{package}` (`-` → `_`, as the reference does)")
    } else if package.starts_with("-e ") || is_local_path(package) {
        if source_name(Path::new(package)).is_some() && !Path::new(package).is_dir() {
            format!("the file name of `{package}`")
        } else {
            format!("the folder name of `{package}` (`-` → `_`, as the reference does)")
        }
    } else {
        format!(
            "the requirement `{package}` (its name, lowercased, `-` and `.` → `_`, as the reference does)"
        )
    }
}

/// `path` made absolute against the working directory, so that tools run elsewhere
/// find it.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// A fresh path in the temporary folder for one introspection's result.
fn scratch_file() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "cjm-introspect-{}-{n}-{nanos}.json",
        std::process::id()
    ))
}

/// What a command printed, and how it ended (`None`: killed at the deadline).
struct Finished {
    status: Option<std::process::ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd`, killing it if it outlives `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> std::io::Result<Finished> {
    let child = cmd.spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    if let Ok(out) = rx.recv_timeout(timeout) {
        let out = out?;
        return Ok(Finished {
            status: Some(out.status),
            stdout: out.stdout,
            stderr: out.stderr,
        });
    }
    // Not reaped yet (the waiting thread has not returned), so the pid is still
    // this child's.
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let out = rx
        .recv()
        .map_err(|_| std::io::Error::other("the waiting thread is gone"))??;
    Ok(Finished {
        status: None,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// The last lines of a command's output.
fn tail_of(stdout: &[u8], stderr: &[u8]) -> Vec<String> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(TAIL)..].to_vec()
}

fn env(spec: &PluginSpec) -> impl Fn(crate::EnvError) -> InstallError + '_ {
    move |error| InstallError::Env {
        plugin: spec.name.clone(),
        error: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::module_and_distribution;

    #[test]
    fn module_names_follow_the_reference_and_drop_version_specifiers() {
        let cases = [
            (
                "demo-plugin-one",
                "demo_plugin_one",
                Some("demo-plugin-one"),
            ),
            (
                "demo-plugin-one==0.1.0",
                "demo_plugin_one",
                Some("demo-plugin-one"),
            ),
            (
                "Demo.Plugin[gpu]>=1; python_version>'3'",
                "demo_plugin",
                Some("Demo.Plugin"),
            ),
            (
                "git+https://github.com/cj-mills/cjm-whisper-plugin.git",
                "cjm_whisper_plugin",
                None,
            ),
            (
                "git+https://github.com/o/my-plugin.git@v1.2",
                "my_plugin",
                None,
            ),
            ("-e ./plugins/my-dev-plugin", "my_dev_plugin", None),
            ("./plugins/local-plugin", "local_plugin", None),
            (
                "./wh/demo_plugin_two-0.1.0-py3-none-any.whl",
                "demo_plugin_two",
                Some("demo_plugin_two"),
            ),
        ];
        for (package, module, dist) in cases {
            let (m, d) = module_and_distribution(package);
            assert_eq!((m.as_str(), d.as_deref()), (module, dist), "{package}");
        }
    }
}
