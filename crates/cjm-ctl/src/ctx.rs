//! What every verb starts from: the layered configuration and the tools it names.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cjm::core::{CjmConfig, CondaType, LoadOptions};
use cjm_env::{CondaRuntime, EnvStore, Installer};
use cjm_manifest::{Discovery, PluginsFile};

/// The options every verb takes (the reference's, before the verb or after it).
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct Global {
    /// The cjm.yaml to read (default: cjm.yaml in the current folder, if any).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) cjm_config: Option<PathBuf>,
    /// The data folder: manifests, environments, logs, plugin data
    /// (default: $CJM_DATA_DIR, cjm.yaml's data_dir, ~/.cjm).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The conda/micromamba prefix (default: $CJM_CONDA_PREFIX, cjm.yaml's).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) conda_prefix: Option<PathBuf>,
    /// The conda implementation: micromamba, miniforge or conda.
    #[arg(long, global = true, value_name = "TYPE", value_parser = parse_conda_type)]
    pub(crate) conda_type: Option<CondaType>,
    /// More detail on stderr: -v what cjm does, -vv everything (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,
    /// Errors only on stderr: no warnings, no progress.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
}

impl Global {
    /// Sends cjm's own log records (the manager's, the workers' lifecycle) to
    /// stderr at the level -v/-q ask for: warnings by default.
    pub(crate) fn init_logging(&self) {
        use tracing_subscriber::EnvFilter;
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, _) => "debug",
        };
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .try_init();
    }
}

fn parse_conda_type(s: &str) -> Result<CondaType, String> {
    CondaType::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| format!("expected one of micromamba, miniforge, conda; got {s:?}"))
}

/// The resolved configuration and where things are.
pub(crate) struct Ctx {
    pub(crate) cfg: CjmConfig,
    pub(crate) cwd: PathBuf,
    /// `-q`: no warnings and no progress on stderr.
    pub(crate) quiet: bool,
}

impl Ctx {
    /// Loads cjm.yaml and the environment, with `global`'s flags on top.
    pub(crate) fn load(global: &Global) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current folder")?;
        let options = LoadOptions {
            config_path: global.cjm_config.clone(),
            data_dir: global.data_dir.clone(),
            conda_prefix: global.conda_prefix.clone(),
            conda_type: global.conda_type,
        };
        let cfg = cjm::core::load_config(&options, &|k| std::env::var(k).ok(), &cwd)
            .map_err(|e| crate::Usage(crate::with_causes(&e)))?;
        if !global.quiet {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
        }
        Ok(Self {
            cfg,
            cwd,
            quiet: global.quiet,
        })
    }

    /// `<data_dir>/envs`: one folder per environment key.
    pub(crate) fn envs_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("envs")
    }

    /// The uv to build environments with.
    pub(crate) fn uv(&self) -> anyhow::Result<PathBuf> {
        cjm_env::find_uv(&self.cfg, &env_os).with_context(|| {
            format!(
                "uv not found (looked at $CJM_UV, {}, and PATH): run `cjm-ctl setup-runtime` to install it",
                cjm_env::runtime_dir(&self.cfg).join("bin/uv").display()
            )
        })
    }

    /// The `cjm-worker` wheel of this build, which goes into every environment.
    #[expect(clippy::unused_self, reason = "one day from the configuration, too")]
    pub(crate) fn worker_wheel(&self) -> anyhow::Result<PathBuf> {
        find_worker_wheel().with_context(|| {
            format!(
                "no cjm-worker {} wheel found (looked at $CJM_WORKER_WHEEL and next to cjm-ctl): build it with `cargo xtask wheel`, or set CJM_WORKER_WHEEL",
                env!("CARGO_PKG_VERSION")
            )
        })
    }

    /// The uv for `install-all` and `repair`: `--uv`, else [`Ctx::uv`]'s, else the
    /// pinned uv installed into the runtime folder now, by python3's pip (with a
    /// line on stderr), so that no separate set-up step is needed.
    pub(crate) fn uv_or_install(&self, given: Option<&Path>) -> anyhow::Result<PathBuf> {
        if let Some(uv) = given {
            let uv = self.cwd.join(uv);
            if !uv.is_file() {
                usage!(
                    "--uv {} is not a file: pass the path of a uv binary",
                    uv.display()
                );
            }
            return Ok(uv);
        }
        if let Some(uv) = cjm_env::find_uv(&self.cfg, &env_os) {
            return Ok(uv);
        }
        let dest = cjm_env::runtime_dir(&self.cfg).join("bin/uv");
        let looked = format!("looked at $CJM_UV, {}, and PATH", dest.display());
        let provide = "offline, put a uv binary on this machine and pass --uv PATH or set CJM_UV \
            (pip's own settings, such as PIP_INDEX_URL or PIP_FIND_LINKS with a uv wheel, apply to the automatic install)";
        let Some(python) = cjm_env::find_on_path("python3", std::env::var_os("PATH").as_deref())
        else {
            return Err(crate::Failure(format!(
                "uv not found ({looked}), and there is no python3 on PATH to install it with\nhint: {provide}"
            ))
            .into());
        };
        eprintln!(
            "uv not found ({looked}): installing uv {} into {} with {}'s pip",
            cjm_env::UV_VERSION,
            dest.display(),
            python.display()
        );
        cjm_env::setup_uv(&self.cfg, &python, false).map_err(|e| {
            crate::Failure(format!(
                "uv not found ({looked}), and installing uv {} with {}'s pip failed: {}\nhint: {provide}",
                cjm_env::UV_VERSION,
                python.display(),
                crate::with_causes(&e)
            ))
            .into()
        })
    }

    /// The environment store, keyed with this build's worker wheel, building with
    /// `uv`.
    fn store_with(&self, uv: PathBuf) -> anyhow::Result<EnvStore> {
        let wheel = self.worker_wheel()?;
        Ok(EnvStore::new(self.envs_dir(), uv, worker_version(&wheel)?))
    }

    /// The store without the tools, for verbs that only read or delete.
    pub(crate) fn store_for_reading(&self) -> EnvStore {
        EnvStore::new(self.envs_dir(), "uv", env!("CARGO_PKG_VERSION"))
    }

    /// An installer writing to the data dir's manifests, reading relative paths of
    /// `plugins_yaml`'s entries against its folder.
    pub(crate) fn installer(&self, plugins_yaml: &Path) -> anyhow::Result<Installer> {
        self.installer_with_uv(plugins_yaml, self.uv()?)
    }

    /// [`Ctx::installer`], building environments with `uv`.
    pub(crate) fn installer_with_uv(
        &self,
        plugins_yaml: &Path,
        uv: PathBuf,
    ) -> anyhow::Result<Installer> {
        let base = plugins_yaml
            .parent()
            .map_or_else(|| self.cwd.clone(), |p| self.cwd.join(p));
        Ok(Installer::new(
            self.store_with(uv)?,
            self.cfg.manifests_dir(),
            self.worker_wheel()?,
        )
        .plugin_data_dir(self.cfg.plugin_data_dir())
        .models_dir(self.cfg.models_dir.clone())
        .base_dir(base)
        .plugins_file(self.cwd.join(plugins_yaml))
        .defaults(self.cfg.install.clone())
        .conda(CondaRuntime::from_config(&self.cfg)))
    }

    /// The plugins.yaml to use: `--plugins`, else the configuration's.
    pub(crate) fn plugins_path(&self, given: Option<&Path>) -> PathBuf {
        given.map_or_else(|| self.cfg.plugins_config.clone(), |p| self.cwd.join(p))
    }

    /// Reads and checks a plugins.yaml.
    pub(crate) fn plugins_file(
        &self,
        given: Option<&Path>,
    ) -> anyhow::Result<(PathBuf, PluginsFile)> {
        let path = self.plugins_path(given);
        if !path.is_file() {
            usage!(
                "plugins file not found: {} (pass --plugins PATH, or set plugins_config in cjm.yaml)",
                path.display()
            );
        }
        let file = PluginsFile::load(&path).map_err(|e| crate::Usage(crate::with_causes(&e)))?;
        for w in file.warnings.iter().filter(|_| !self.quiet) {
            eprintln!("warning: {}: {w}", path.display());
        }
        Ok((path, file))
    }

    /// The installed plugins: the project's `.cjm/manifests`, then the data dir's.
    pub(crate) fn discover(&self) -> Discovery {
        cjm_manifest::discover(&cjm_manifest::default_search_paths(
            &self.cwd,
            &self.cfg.manifests_dir(),
        ))
    }
}

fn env_os(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// `CJM_WORKER_WHEEL`, else this version's wheel in `share/cjm/wheels` beside the
/// binary's folder (an install), else in the Cargo target's `wheels` folder (a
/// build in the workspace: `target/debug/cjm-ctl` → `target/wheels`).
fn find_worker_wheel() -> Option<PathBuf> {
    if let Some(w) = std::env::var_os("CJM_WORKER_WHEEL").filter(|w| !w.is_empty()) {
        return Some(PathBuf::from(w));
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    let prefix = format!("cjm_worker-{}-", env!("CARGO_PKG_VERSION"));
    [
        bin.join("../share/cjm/wheels"),
        bin.join("../wheels"),
        bin.join("../../wheels"),
    ]
    .iter()
    .find_map(|dir| {
        let mut wheels: Vec<PathBuf> = fs_err::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
                    && p.extension().is_some_and(|x| x == "whl")
            })
            .collect();
        wheels.sort();
        wheels.pop()
    })
}

/// The worker version environments are keyed with: the crate version and a hash of
/// the wheel, so a rebuilt wheel gets fresh environments.
fn worker_version(wheel: &Path) -> anyhow::Result<String> {
    let hash = cjm::core::hash_file(wheel)
        .with_context(|| format!("cannot read the cjm-worker wheel {}", wheel.display()))?;
    let hex = hash.strip_prefix("sha256:").unwrap_or(&hash);
    Ok(format!(
        "{}+{}",
        env!("CARGO_PKG_VERSION"),
        &hex[..12.min(hex.len())]
    ))
}

/// clap's parser for a plugin name: refused (a usage error) when it could not be a
/// manifest's file name, so no verb ever joins `../x` to one of cjm's folders.
pub(crate) fn plugin_name(s: &str) -> Result<String, String> {
    match cjm::core::path_component_problem(s) {
        None => Ok(s.to_owned()),
        Some(why) => Err(format!(
            "a plugin name {why}; plugin names are file names (`cjm-ctl list` shows the installed ones)"
        )),
    }
}

/// clap's parser for a duration in seconds: a finite number above zero and at
/// most a year, so that NaN, infinities, negatives and `1e300` are usage errors
/// rather than a panic in `Duration`.
pub(crate) fn seconds(s: &str) -> Result<std::time::Duration, String> {
    const MAX: f64 = 365.0 * 24.0 * 3600.0;
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds, like 30 or 0.5; got {s:?}"))?;
    if !value.is_finite() || value <= 0.0 || value > MAX {
        return Err(format!(
            "expected a number of seconds above 0 and at most {MAX} (a year); got {s:?}"
        ));
    }
    std::time::Duration::try_from_secs_f64(value).map_err(|e| format!("{s:?}: {e}"))
}

/// "plugin X is not installed", with what is, and the manifests that were skipped
/// because they could not be read (one of them may be the plugin's).
pub(crate) fn not_installed(name: &str, discovery: &cjm_manifest::Discovery) -> anyhow::Error {
    let installed: Vec<&str> = discovery
        .found
        .iter()
        .map(|d| d.manifest.code.name.as_str())
        .collect();
    let mut text = format!(
        "plugin {name} is not installed (installed: {})",
        if installed.is_empty() {
            "none".to_owned()
        } else {
            installed.join(", ")
        }
    );
    for e in &discovery.errors {
        text.push_str("\n  skipped a manifest that cannot be read: ");
        text.push_str(&crate::with_causes(e));
    }
    text.push_str("\nhint: add it to plugins.yaml and run `cjm-ctl install-all`; `cjm-ctl list` shows what is installed");
    anyhow::Error::new(crate::Usage(text))
}
