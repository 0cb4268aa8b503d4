//! The conda backend: environments made and driven by micromamba, mamba or conda with
//! the command lines the reference uses, so an environment the reference made is
//! found, reused and removed here, and the other way round.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use cjm_core::{CjmConfig, CondaType, RuntimeMode, current_platform};
use serde::Deserialize;

use crate::error::EnvError;
use crate::runtime::{Captured, capture, download, is_executable, search_path};

/// Where a new conda environment's packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CondaSource {
    /// An environment file (`environment.yml`): a local path, or an `http(s)://` URL
    /// downloaded first.
    EnvFile(String),
    /// Just an interpreter: `python=VERSION`.
    PythonVersion(String),
}

/// The conda tool the configuration names, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CondaRuntime {
    kind: CondaType,
    program: PathBuf,
    /// micromamba's `-r`: set in local mode, where environments live under the prefix.
    root_prefix: Option<PathBuf>,
}

/// `conda env list --json`, the part of it we read.
#[derive(Deserialize)]
struct EnvList {
    #[serde(default)]
    envs: Vec<PathBuf>,
}

impl CondaRuntime {
    /// The tool `cfg` names, as the reference picks it:
    ///
    /// - micromamba: `runtime.binaries[platform]` if set; else `<prefix>/bin/micromamba`
    ///   (where `cjm-ctl setup-runtime` puts it) if it is there; else `micromamba` on
    ///   `PATH` (the reference's fallback); else the prefix's path, so the error names
    ///   where it is missing. In local mode with a prefix it runs as
    ///   `micromamba -r <prefix>`, as the reference does; in system mode micromamba
    ///   uses its own root.
    /// - miniforge: `mamba` on `PATH`.
    /// - conda: `conda` on `PATH`.
    pub fn from_config(cfg: &CjmConfig) -> Self {
        Self::from_config_with_path(cfg, std::env::var_os("PATH").as_deref())
    }

    /// [`CondaRuntime::from_config`] with `path` as the `PATH` searched (for tests).
    #[doc(hidden)]
    pub fn from_config_with_path(cfg: &CjmConfig, path: Option<&OsStr>) -> Self {
        let kind = cfg.runtime.conda_type;
        let on_path = |name: &str| search_path(name, path).unwrap_or_else(|| PathBuf::from(name));
        let (program, root_prefix) = match kind {
            CondaType::Micromamba => {
                let root = match cfg.runtime.mode {
                    RuntimeMode::Local => cfg.runtime.prefix.clone(),
                    RuntimeMode::System => None,
                };
                (micromamba_program(cfg, path), root)
            }
            CondaType::Miniforge => (on_path("mamba"), None),
            CondaType::Conda => (on_path("conda"), None),
        };
        Self {
            kind,
            program,
            root_prefix,
        }
    }

    /// Which implementation this is.
    pub fn kind(&self) -> CondaType {
        self.kind
    }

    /// The binary that is run: a path, or a bare name when it was not found on `PATH`.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The root prefix passed as `-r` (micromamba in local mode), if any.
    pub fn root_prefix(&self) -> Option<&Path> {
        self.root_prefix.as_deref()
    }

    /// Whether the binary can be run: it exists and is executable. A bare name (not
    /// found on `PATH` when this was made) cannot. Unlike the reference, which runs
    /// `--version`, this only looks, so it costs nothing.
    pub fn available(&self) -> bool {
        self.program.components().count() > 1 && is_executable(&self.program)
    }

    /// What to tell the user when [`CondaRuntime::available`] is false.
    pub fn missing_hint(&self) -> String {
        match self.kind {
            CondaType::Micromamba if self.program.components().count() > 1 => format!(
                "micromamba is not at {}: run `cjm-ctl setup-runtime` to download it, \
                 or set runtime.binaries.{} in cjm.yaml",
                self.program.display(),
                current_platform()
            ),
            CondaType::Micromamba => "micromamba is not on PATH: set runtime.prefix in cjm.yaml \
                 and run `cjm-ctl setup-runtime` to download it"
                .to_owned(),
            CondaType::Miniforge => "mamba is not on PATH: install Miniforge, \
                 or set runtime.conda_type in cjm.yaml"
                .to_owned(),
            CondaType::Conda => "conda is not on PATH: install conda (e.g. Miniforge), \
                 or set runtime.conda_type in cjm.yaml"
                .to_owned(),
        }
    }

    /// The base command: the program, with `-r <prefix>` when there is a root prefix.
    /// It reads nothing from stdin, so a tool that would prompt fails instead of hanging.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        if let Some(root) = &self.root_prefix {
            cmd.arg("-r").arg(root);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The names of the existing environments (each one's folder name). With a root
    /// prefix only environments under it count: `micromamba -r` lists every
    /// environment it knows of, wherever it lives. Unlike the reference, which compares
    /// text, "under" compares path components (`<prefix>-old/envs/x` is not under
    /// `<prefix>`), and the root itself (the base environment) is left out.
    pub fn env_names(&self) -> Result<BTreeSet<String>, EnvError> {
        let envs = self.list("(all)")?;
        Ok(envs.iter().filter_map(|p| env_name(p)).collect())
    }

    /// Whether environment `name` exists.
    pub fn env_exists(&self, name: &str) -> Result<bool, EnvError> {
        Ok(self.env_prefix(name)?.is_some())
    }

    /// The folder of environment `name`, as the tool reports it; `None` if there is
    /// no such environment.
    pub fn env_prefix(&self, name: &str) -> Result<Option<PathBuf>, EnvError> {
        let envs = self.list(name)?;
        Ok(envs
            .into_iter()
            .find(|p| env_name(p).as_deref() == Some(name)))
    }

    /// The interpreter of environment `name` (`<prefix>/bin/python`); `None` if there
    /// is no such environment or it has no Python.
    pub fn python(&self, name: &str) -> Result<Option<PathBuf>, EnvError> {
        let python = self
            .env_prefix(name)?
            .map(|prefix| prefix.join("bin").join("python"));
        Ok(python.filter(|p| p.is_file()))
    }

    /// Creates environment `name`. An environment file is passed with `-f`
    /// (micromamba: `create -f FILE -n NAME -y`; conda and mamba:
    /// `env create -f FILE -n NAME`); an `http(s)` one is downloaded to a temporary
    /// file first, removed afterwards. A Python version gives
    /// `create -n NAME python=VERSION -y`.
    pub fn create(&self, name: &str, source: &CondaSource) -> Result<(), EnvError> {
        let step = "creating the conda environment";
        match source {
            CondaSource::PythonVersion(version) => {
                let mut cmd = self.command();
                cmd.args(["create", "-n", name])
                    .arg(format!("python={version}"))
                    .arg("-y");
                run(step, name, cmd).map(drop)
            }
            CondaSource::EnvFile(file) if is_url(file) => {
                let local = temp_env_file(file);
                download(file, &local)?;
                let result = run(step, name, self.create_from_file(name, &local));
                // A leftover temporary file is harmless; the creation's outcome matters.
                let _ = fs_err::remove_file(&local);
                result.map(drop)
            }
            CondaSource::EnvFile(file) => {
                run(step, name, self.create_from_file(name, Path::new(file))).map(drop)
            }
        }
    }

    fn create_from_file(&self, name: &str, file: &Path) -> Command {
        let mut cmd = self.command();
        if self.kind == CondaType::Micromamba {
            cmd.args(["create", "-f"])
                .arg(file)
                .args(["-n", name, "-y"]);
        } else {
            cmd.args(["env", "create", "-f"])
                .arg(file)
                .args(["-n", name]);
        }
        cmd
    }

    /// Installs `args` (requirements and pip options) into environment `name` with
    /// `run -n NAME python -m pip install ARGS`.
    ///
    /// The reference runs `run -n NAME pip install`; going through the environment's
    /// own `python -m pip` keeps the activation `run` does (conda compilers set their
    /// variables there) but can never reach another `pip` further along `PATH` when
    /// the environment has none, which would install into the wrong interpreter.
    pub fn pip_install(&self, name: &str, args: &[String]) -> Result<(), EnvError> {
        if args.is_empty() {
            return Ok(());
        }
        let mut cmd = self.command();
        cmd.args(["run", "-n", name, "python", "-m", "pip", "install"])
            .args(args);
        run("installing the requirements", name, cmd).map(drop)
    }

    /// Removes environment `name` (`env remove -n NAME -y`).
    pub fn remove(&self, name: &str) -> Result<(), EnvError> {
        let mut cmd = self.command();
        cmd.args(["env", "remove", "-n", name, "-y"]);
        run("removing the conda environment", name, cmd).map(drop)
    }

    /// The environment folders the tool reports, limited to the root prefix if any.
    /// `key` names the environment in a failure.
    fn list(&self, key: &str) -> Result<Vec<PathBuf>, EnvError> {
        let step = "listing the conda environments";
        let mut cmd = self.command();
        cmd.args(["env", "list", "--json"]);
        let captured = capture(cmd)?;
        if !captured.success {
            return Err(tool_error(step, key, captured));
        }
        let list: EnvList = match serde_json::from_str(&captured.stdout) {
            Ok(list) => list,
            Err(e) => {
                let mut failure = captured;
                failure.status = format!("printed no environment list ({e})");
                return Err(tool_error(step, key, failure));
            }
        };
        let Some(root) = &self.root_prefix else {
            return Ok(list.envs);
        };
        // The tool may report the prefix resolved or as given; either is under it.
        let resolved = fs_err::canonicalize(root).unwrap_or_else(|_| root.clone());
        let under_root = |p: &Path| {
            // The root itself is the base environment, not one of ours.
            p != root && p != resolved && (p.starts_with(root) || p.starts_with(&resolved))
        };
        Ok(list.envs.into_iter().filter(|p| under_root(p)).collect())
    }
}

/// The micromamba binary `cfg` names; see [`CondaRuntime::from_config`].
fn micromamba_program(cfg: &CjmConfig, path: Option<&OsStr>) -> PathBuf {
    if let Some(explicit) = cfg.runtime.binaries.get(&current_platform()) {
        return explicit.clone();
    }
    let setup = cfg.conda_binary_path();
    if let Some(binary) = &setup
        && is_executable(binary)
    {
        return binary.clone();
    }
    search_path("micromamba", path)
        .or(setup)
        .unwrap_or_else(|| PathBuf::from("micromamba"))
}

/// An environment's name: its folder's name, as the reference reads it.
fn env_name(prefix: &Path) -> Option<String> {
    prefix
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
}

fn is_url(file: &str) -> bool {
    file.starts_with("http://") || file.starts_with("https://")
}

/// A fresh temporary path for a downloaded environment file. The URL's extension is
/// kept when it is one the tools read differently (`.txt` is a spec list, not YAML).
fn temp_env_file(url: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = match path.rsplit_once('.') {
        Some((_, ext @ ("yml" | "yaml" | "txt"))) => ext,
        _ => "yml",
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("cjm-env-file-{}-{n}.{ext}", std::process::id()))
}

/// Runs one step of the tool; its stdout on success.
fn run(step: &'static str, key: &str, cmd: Command) -> Result<String, EnvError> {
    let captured = capture(cmd)?;
    if captured.success {
        Ok(captured.stdout)
    } else {
        Err(tool_error(step, key, captured))
    }
}

fn tool_error(step: &'static str, key: &str, captured: Captured) -> EnvError {
    EnvError::Tool {
        step,
        key: key.to_owned(),
        command: captured.command,
        status: captured.status,
        output_tail: captured.tail,
    }
}
