//! The environment store: uv environments under one folder, one per [`EnvKey`].
//!
//! An environment is built once, under a file lock (`<key>.lock`), in a temporary
//! folder (`.<key>.building-<pid>`) that is renamed into place only when complete;
//! a marker written last (`.cjm-env.json`) tells a complete environment from a
//! leftover, and the resolved set is kept beside it (`requirements.lock`). The
//! `python` backend's existing interpreter is handed out as it is, never built.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cjm_manifest::Backend;
use serde::{Deserialize, Serialize};

use crate::error::{EnvError, TOOL_TAIL, output_tail};
use crate::key::{EnvKey, EnvRequest, LocalSource};

/// The marker written last into a complete environment.
const MARKER: &str = ".cjm-env.json";
/// The resolved set, as `uv pip freeze` reports it.
const LOCK: &str = "requirements.lock";
/// The constraints the environment was resolved under, passed with `-c`.
const CONSTRAINTS: &str = "constraints.txt";
/// The same in a conda environment, whose folder is the tool's.
pub(crate) const CONDA_CONSTRAINTS: &str = "cjm-constraints.txt";

/// A built environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// Its key.
    pub key: EnvKey,
    /// Its folder.
    pub dir: PathBuf,
    /// Its interpreter.
    pub python: PathBuf,
    /// The resolved set (`name==version` lines).
    pub lock: String,
    /// Whether this call built it (false: it was there already).
    pub built: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    key: String,
    python: String,
    requirements: Vec<String>,
    worker_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ignore_requires_python: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    local_sources: Vec<LocalSource>,
}

/// Environments under one folder, built with one uv.
#[derive(Debug, Clone)]
pub struct EnvStore {
    root: PathBuf,
    uv: PathBuf,
    cache_dir: Option<PathBuf>,
    worker_version: String,
}

impl EnvStore {
    /// Environments under `root`, built with the uv at `uv`; `worker_version` is part
    /// of every key, so a new cjm-worker gets new environments.
    pub fn new(
        root: impl Into<PathBuf>,
        uv: impl Into<PathBuf>,
        worker_version: impl Into<String>,
    ) -> Self {
        Self {
            root: root.into(),
            uv: uv.into(),
            cache_dir: None,
            worker_version: worker_version.into(),
        }
    }

    /// Uses `dir` as uv's cache instead of the user's.
    #[must_use]
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The folder of environment `key`.
    pub fn dir(&self, key: &EnvKey) -> PathBuf {
        self.root.join(&key.0)
    }

    /// The key `req` would get.
    pub fn key(&self, req: &EnvRequest) -> EnvKey {
        EnvKey::of(req, &self.worker_version)
    }

    /// The environment for `req`, built if it is not there yet. Concurrent calls for
    /// one key (threads or processes) build it once.
    pub fn ensure(&self, req: &EnvRequest) -> Result<Env, EnvError> {
        self.ensure_with(req, false)
    }

    /// [`ensure`](Self::ensure); `refresh` makes uv look at its sources again
    /// instead of trusting its cache (a local wheel rebuilt under the same version).
    fn ensure_with(&self, req: &EnvRequest, refresh: bool) -> Result<Env, EnvError> {
        match req.backend {
            Backend::Uv => {}
            Backend::Conda => return Err(EnvError::Unsupported { backend: "conda" }),
            Backend::Python => return self.existing_interpreter(req),
        }
        let key = self.key(req);
        if let Some(env) = self.existing(&key)? {
            return Ok(env);
        }
        fs_err::create_dir_all(&self.root)
            .map_err(|e| io("creating the environments folder", e))?;
        let lock_path = self.root.join(format!("{key}.lock"));
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("opening the environment's lock file", e))?;
        lock.file()
            .lock()
            .map_err(|e| io(&format!("locking {}", lock_path.display()), e))?;
        // Someone may have built it while we waited for the lock.
        if let Some(env) = self.existing(&key)? {
            return Ok(env);
        }
        let env = self.build(&key, req, refresh);
        // The lock file itself stays: removing it could let a third builder lock a
        // different inode than a second one waiting on this one.
        drop(lock);
        env
    }

    /// `backend: python`: an interpreter the operator manages (development). Nothing is
    /// built or installed; the resolved set is read from it.
    fn existing_interpreter(&self, req: &EnvRequest) -> Result<Env, EnvError> {
        let key = self.key(req);
        let python = PathBuf::from(&req.python);
        let mut freeze = self.uv_cmd();
        freeze.args(["pip", "freeze", "--python"]).arg(&python);
        let lock = self.run("reading the interpreter's packages", &key, freeze)?;
        let dir = python
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| python.clone(), Path::to_path_buf);
        Ok(Env {
            key,
            dir,
            python,
            lock,
            built: false,
        })
    }

    /// The environment `key`, if it is built and complete.
    pub fn get(&self, key: &EnvKey) -> Result<Option<Env>, EnvError> {
        self.existing(key)
    }

    /// The environment `key`, if it is complete.
    fn existing(&self, key: &EnvKey) -> Result<Option<Env>, EnvError> {
        let dir = self.dir(key);
        if !dir.join(MARKER).is_file() {
            return Ok(None);
        }
        let lock = fs_err::read_to_string(dir.join(LOCK))
            .map_err(|e| io("reading the resolved set", e))?;
        Ok(Some(Env {
            key: key.clone(),
            python: dir.join("bin").join("python"),
            dir,
            lock,
            built: false,
        }))
    }

    fn build(&self, key: &EnvKey, req: &EnvRequest, refresh: bool) -> Result<Env, EnvError> {
        let dir = self.dir(key);
        let tmp = self
            .root
            .join(format!(".{key}.building-{}", std::process::id()));
        remove_dir_if_exists(&tmp)?;
        if dir.exists() {
            // An incomplete leftover (no marker): rebuild it from scratch.
            remove_dir_if_exists(&dir)?;
        }
        if let Err(e) = self.build_in(key, req, &tmp, refresh) {
            let _ = remove_dir_if_exists(&tmp);
            return Err(e);
        }
        fs_err::rename(&tmp, &dir).map_err(|e| io("moving the environment into place", e))?;
        let mut env = self.existing(key)?.ok_or_else(|| {
            io(
                "reading the new environment",
                std::io::Error::other("marker missing"),
            )
        })?;
        env.built = true;
        Ok(env)
    }

    fn build_in(
        &self,
        key: &EnvKey,
        req: &EnvRequest,
        tmp: &Path,
        refresh: bool,
    ) -> Result<(), EnvError> {
        // Relocatable: the environment is built under a temporary name and renamed.
        let mut venv = self.uv_cmd();
        venv.args([
            "venv",
            "--quiet",
            "--relocatable",
            "--no-project",
            "--python",
        ])
        .arg(&req.python)
        .arg(tmp);
        self.run("creating the environment", key, venv)
            .map_err(|e| self.python_not_found(&req.python, e))?;

        let python = tmp.join("bin").join("python");
        let constraints = tmp.join(CONSTRAINTS);
        if !req.constraints.is_empty() {
            fs_err::write(&constraints, constraints_text(&req.constraints))
                .map_err(|e| io("writing the constraints", e))?;
        }
        if !req.requirements.is_empty() || !req.wheels.is_empty() {
            if req.ignore_requires_python {
                self.pip_install_ignoring_requires_python(key, req, &python, &constraints)?;
            } else {
                let mut install = self.uv_cmd();
                install
                    .args(["pip", "install", "--quiet", "--python"])
                    .arg(&python);
                index_options(&mut install, req);
                if refresh {
                    install.arg("--refresh");
                }
                if !req.constraints.is_empty() {
                    install.arg("--constraint").arg(&constraints);
                }
                reread_local_sources(&mut install, &req.local_sources);
                install.args(&req.requirements).args(&req.wheels);
                self.run("installing the requirements", key, install)?;
            }
        }

        let mut freeze = self.uv_cmd();
        freeze.args(["pip", "freeze", "--python"]).arg(&python);
        let lock = self.run("recording the resolved set", key, freeze)?;
        fs_err::write(tmp.join(LOCK), lock).map_err(|e| io("writing the resolved set", e))?;
        let marker = Marker {
            key: key.0.clone(),
            python: req.python.clone(),
            requirements: req.requirements.clone(),
            worker_version: self.worker_version.clone(),
            constraints: req.constraints.clone(),
            ignore_requires_python: req.ignore_requires_python,
            local_sources: req.local_sources.clone(),
        };
        let text = serde_json::to_string_pretty(&marker).unwrap_or_default();
        fs_err::write(tmp.join(MARKER), text).map_err(|e| io("marking the environment complete", e))
    }

    /// `ignore_requires_python` on the uv backend. uv has no
    /// `--ignore-requires-python`; its `--python-version` would resolve as if for
    /// another interpreter, which evaluates `python_version` markers wrongly (a
    /// dependency meant for 3.11 only is left out). So uv installs pip into the
    /// environment, from the same indexes, and that pip installs the requirements
    /// with `--ignore-requires-python`, evaluating markers for the real interpreter.
    fn pip_install_ignoring_requires_python(
        &self,
        key: &EnvKey,
        req: &EnvRequest,
        python: &Path,
        constraints: &Path,
    ) -> Result<(), EnvError> {
        let mut bootstrap = self.uv_cmd();
        bootstrap
            .args(["pip", "install", "--quiet", "--python"])
            .arg(python);
        index_options(&mut bootstrap, req);
        bootstrap.arg("pip");
        self.run(
            "installing pip (for ignore_requires_python)",
            key,
            bootstrap,
        )?;

        let mut pip = Command::new(python);
        pip.args(["-m", "pip", "install", "--quiet", "--no-input"])
            .args(["--disable-pip-version-check", "--ignore-requires-python"])
            .env_remove("VIRTUAL_ENV")
            .env("PIP_REQUIRE_VIRTUALENV", "0")
            .stdin(Stdio::null());
        index_options(&mut pip, req);
        if !req.constraints.is_empty() {
            pip.arg("--constraint").arg(constraints);
        }
        if !req.local_sources.is_empty() {
            // pip keeps no cache of built local packages under their version.
            pip.arg("--no-cache-dir");
        }
        pip.args(&req.requirements).args(&req.wheels);
        self.run("installing the requirements with pip", key, pip)
            .map(drop)
    }

    /// A failed `uv venv` because the interpreter asked for is not here (and could
    /// not be downloaded) becomes a message naming the interpreters that are.
    fn python_not_found(&self, requested: &str, error: EnvError) -> EnvError {
        let EnvError::Tool { output_tail, .. } = &error else {
            return error;
        };
        let missing = output_tail.iter().any(|l| {
            l.contains("No interpreter found")
                || l.contains("Failed to download")
                || l.contains("No download found")
        });
        if !missing {
            return error;
        }
        EnvError::PythonNotFound {
            requested: requested.to_owned(),
            found: self.installed_pythons(),
            output_tail: output_tail.clone(),
        }
    }

    /// `VERSION (PATH)` for each interpreter uv finds without downloading, one per
    /// version.
    fn installed_pythons(&self) -> Vec<String> {
        let mut list = self.uv_cmd();
        list.args([
            "python",
            "list",
            "--only-installed",
            "--output-format",
            "json",
        ]);
        let Ok(out) = list.output() else {
            return Vec::new();
        };
        let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut seen = Vec::new();
        let mut shown = Vec::new();
        for p in &found {
            let (Some(version), Some(path)) = (
                p.get("version").and_then(serde_json::Value::as_str),
                p.get("path").and_then(serde_json::Value::as_str),
            ) else {
                continue;
            };
            if !seen.contains(&version) {
                seen.push(version);
                shown.push(format!("{version} ({path})"));
            }
        }
        shown
    }

    fn uv_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.uv);
        if let Some(cache) = &self.cache_dir {
            cmd.env("UV_CACHE_DIR", cache);
        }
        // Never pick up an activated environment or a project of the caller's.
        cmd.env_remove("VIRTUAL_ENV").env("UV_NO_CONFIG", "1");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs a tool step; its stdout on success, its last lines in the error.
    fn run(&self, step: &'static str, key: &EnvKey, mut cmd: Command) -> Result<String, EnvError> {
        let command = format!(
            "{} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = cmd.output().map_err(|source| EnvError::ToolMissing {
            tool: self.uv.clone(),
            source,
        })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(EnvError::Tool {
            step,
            key: key.0.clone(),
            command,
            status: out.status.to_string(),
            output_tail: output_tail(&out.stdout, &out.stderr, TOOL_TAIL),
        })
    }

    /// Every complete environment.
    pub fn list(&self) -> Result<Vec<EnvKey>, EnvError> {
        let Ok(entries) = fs_err::read_dir(&self.root) else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<EnvKey> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(MARKER).is_file())
            .map(|e| EnvKey(e.file_name().to_string_lossy().into_owned()))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes environment `key` (its next `ensure` rebuilds it).
    pub fn remove(&self, key: &EnvKey) -> Result<(), EnvError> {
        if let Some(why) = cjm_core::path_component_problem(&key.0) {
            return Err(EnvError::UnsafeKey {
                key: key.0.clone(),
                why,
            });
        }
        remove_dir_if_exists(&self.dir(key))
    }

    /// Removes every environment not in `keep`; returns what it removed.
    pub fn gc(&self, keep: &[EnvKey]) -> Result<Vec<EnvKey>, EnvError> {
        let mut removed = Vec::new();
        for key in self.list()? {
            if !keep.contains(&key) {
                self.remove(&key)?;
                removed.push(key);
            }
        }
        Ok(removed)
    }

    /// Rebuilds the environment for `req` from scratch, with uv's cache refreshed
    /// (so a local wheel rebuilt under the same version is read anew).
    pub fn repair(&self, req: &EnvRequest) -> Result<Env, EnvError> {
        self.remove(&self.key(req))?;
        self.ensure_with(req, true)
    }
}

/// The index options of `req`, for uv and pip alike.
fn index_options(cmd: &mut Command, req: &EnvRequest) {
    cmd.args(req.index_args());
}

/// Makes uv read each local source again: a package rebuilt under the same
/// version would otherwise come from uv's cache, which for a folder only looks
/// at `pyproject.toml`, `setup.py` and `setup.cfg`.
fn reread_local_sources(cmd: &mut Command, sources: &[LocalSource]) {
    if sources.iter().any(|s| s.name.is_none()) {
        cmd.arg("--refresh");
    }
    for name in sources.iter().filter_map(|s| s.name.as_deref()) {
        cmd.args(["--reinstall-package", name]);
    }
}

/// Constraint lines as a file.
pub(crate) fn constraints_text(lines: &[String]) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(line.trim());
        text.push('\n');
    }
    text
}

fn io(what: &str, source: std::io::Error) -> EnvError {
    EnvError::Io {
        what: what.to_owned(),
        source,
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), EnvError> {
    match fs_err::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing an environment folder", e)),
    }
}
