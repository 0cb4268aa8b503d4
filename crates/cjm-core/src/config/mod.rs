//! `cjm.yaml` and the layered project configuration: defaults < `cjm.yaml` <
//! environment variables < command-line values, as the reference resolves them.
//!
//! The environment and the working directory are passed in, so loading reads no
//! process state but the files it is pointed at.
//!
//! `types.rs` holds what a loaded configuration is, `reader.rs` how a `cjm.yaml` is
//! read into its layer, and `error.rs` what can be wrong with one.

mod error;
mod reader;
mod types;

use std::path::{Component, Path, PathBuf};

pub use self::error::{CjmYamlError, CjmYamlProblem, ConfigWarning, ConfigWarningKind};
use self::reader::{FileLayer, read_file_layer};
pub use self::types::{
    CjmConfig, CondaType, Constraints, InstallConfig, LoadOptions, RuntimeConfig, RuntimeMode,
    SubstrateConfig, UnknownValue, current_platform,
};

/// The file `load_config` looks for in the working directory when no path is given.
pub const CONFIG_FILE_NAME: &str = "cjm.yaml";

/// Environment variable that overrides `data_dir`.
pub const ENV_DATA_DIR: &str = "CJM_DATA_DIR";
/// Environment variable that overrides `runtime.prefix`.
pub const ENV_CONDA_PREFIX: &str = "CJM_CONDA_PREFIX";
/// Environment variable that overrides `runtime.conda_type`.
pub const ENV_CONDA_TYPE: &str = "CJM_CONDA_TYPE";

/// Resolves the configuration: defaults < `cjm.yaml` < environment < `options`.
///
/// `cjm.yaml` is `options.config_path` (an error if missing) or, failing that,
/// `cjm.yaml` in `cwd` if there is one. Relative paths in the file are relative to
/// the file's folder (with symlinks resolved, as the reference does); `~` is not
/// expanded anywhere, as in the reference. `env` is the environment: it supplies
/// [`ENV_DATA_DIR`], [`ENV_CONDA_PREFIX`], [`ENV_CONDA_TYPE`] (an empty value counts
/// as unset) and `HOME` for the default `data_dir`. `cwd` should be absolute.
pub fn load_config(
    options: &LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<CjmConfig, CjmYamlError> {
    let yaml_path = if let Some(given) = &options.config_path {
        let path = cwd.join(given);
        if !exists(&path)? {
            return Err(CjmYamlError::NotFound { path });
        }
        Some(path)
    } else {
        let path = cwd.join(CONFIG_FILE_NAME);
        exists(&path)?.then_some(path)
    };

    let mut file = match &yaml_path {
        Some(path) => read_file_layer(path)?,
        None => FileLayer::default(),
    };

    let set = |var: &str| env(var).filter(|value| !value.is_empty());
    if let Some(dir) = set(ENV_DATA_DIR) {
        file.data_dir = Some(join_lexically(cwd, Path::new(&dir)));
    }
    if let Some(prefix) = set(ENV_CONDA_PREFIX) {
        file.runtime.prefix = Some(join_lexically(cwd, Path::new(&prefix)));
    }
    if let Some(conda_type) = set(ENV_CONDA_TYPE) {
        file.runtime.conda_type =
            conda_type
                .parse()
                .map_err(|err: UnknownValue| CjmYamlError::InvalidEnv {
                    var: ENV_CONDA_TYPE,
                    expected: err.expected,
                    found: err.found,
                })?;
    }

    if let Some(dir) = &options.data_dir {
        file.data_dir = Some(join_lexically(cwd, dir));
    }
    if let Some(prefix) = &options.conda_prefix {
        file.runtime.prefix = Some(join_lexically(cwd, prefix));
    }
    if let Some(conda_type) = options.conda_type {
        file.runtime.conda_type = conda_type;
    }

    let data_dir = if let Some(dir) = file.data_dir {
        dir
    } else {
        let home = set("HOME").ok_or(CjmYamlError::NoHome)?;
        join_lexically(cwd, Path::new(&home)).join(".cjm")
    };
    Ok(CjmConfig {
        runtime: file.runtime,
        data_dir,
        plugins_config: file
            .plugins_config
            .unwrap_or_else(|| cwd.join("plugins.yaml")),
        models_dir: file.models_dir,
        substrate: file.substrate,
        install: file.install,
        source: yaml_path,
        warnings: file.warnings,
    })
}

fn exists(path: &Path) -> Result<bool, CjmYamlError> {
    path.try_exists().map_err(|source| CjmYamlError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `base / path` as pathlib spells it: `path` wins if absolute, `.` components and
/// repeated or trailing separators vanish, `..` stays.
fn join_lexically(base: &Path, path: &Path) -> PathBuf {
    let joined: PathBuf = base
        .join(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if joined.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        joined
    }
}
