//! What a loaded configuration is: the sections of `cjm.yaml`, their enums, and the
//! command-line layer.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr};

use serde::Serialize;

use super::ConfigWarning;

/// Whether the conda runtime and data live in the project or system-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeMode {
    /// Project-local runtime under `runtime.prefix`.
    Local,
    /// The system's conda and `~/.cjm` (the default).
    #[default]
    System,
}

/// Which conda implementation drives environments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CondaType {
    /// A `micromamba` binary, possibly project-local.
    Micromamba,
    /// Miniforge's `mamba`.
    Miniforge,
    /// Plain `conda` (the default).
    #[default]
    Conda,
}

/// A string that names no variant of a config enum.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found:?}")]
pub struct UnknownValue {
    /// The accepted spellings, e.g. `one of local, system`.
    pub expected: &'static str,
    /// The string as given.
    pub found: String,
}

/// An enum a `cjm.yaml` key takes as one of a few exact spellings.
pub(super) trait ConfigEnum: FromStr<Err = UnknownValue> {
    /// The accepted spellings, for messages.
    const EXPECTED: &'static str;
}

macro_rules! config_enum {
    ($ty:ident, $expected:literal, $($variant:ident => $text:literal),+) => {
        impl $ty {
            /// Every variant, in the reference's order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The spelling `cjm.yaml` and the reference use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl ConfigEnum for $ty {
            const EXPECTED: &'static str = $expected;
        }

        impl FromStr for $ty {
            type Err = UnknownValue;

            /// Parses the exact lowercase spelling, as the reference's enum does.
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(UnknownValue { expected: Self::EXPECTED, found: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum!(RuntimeMode, "one of local, system", Local => "local", System => "system");
config_enum!(
    CondaType,
    "one of micromamba, miniforge, conda",
    Micromamba => "micromamba",
    Miniforge => "miniforge",
    Conda => "conda"
);

/// The `runtime:` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeConfig {
    /// Local or system runtime.
    pub mode: RuntimeMode,
    /// The conda implementation.
    pub conda_type: CondaType,
    /// The runtime directory (used by local mode).
    pub prefix: Option<PathBuf>,
    /// Binary paths by platform key, e.g. `linux-x64`.
    pub binaries: BTreeMap<String, PathBuf>,
}

/// The `substrate:` section: toggles for host-wide behaviours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SubstrateConfig {
    /// Compare each plugin's live config schema hash with its manifest's on load.
    pub drift_detection: bool,
    /// Record a resource sample after every execution.
    pub empirical_tracking: bool,
}

impl Default for SubstrateConfig {
    fn default() -> Self {
        Self {
            drift_detection: true,
            empirical_tracking: true,
        }
    }
}

/// Version pins that limit what an environment's resolver may pick, without asking
/// for anything to be installed (pip's and uv's `--constraint`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraints {
    /// A constraints file (`requirements.txt` syntax), read when an environment is
    /// built; its content, not its name, decides the environment.
    File(PathBuf),
    /// Pins written inline, like `libdemo<2`.
    Pins(Vec<String>),
}

/// The `install:` section: defaults for every plugins.yaml entry (cjm's own; the
/// reference has no such section).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InstallConfig {
    /// Install packages whose `Requires-Python` excludes the environment's
    /// interpreter; an entry's own `ignore_requires_python` wins.
    pub ignore_requires_python: bool,
    /// Constraints applied to every environment, on top of an entry's own. A file
    /// is relative to `cjm.yaml`'s folder.
    pub constraints: Option<Constraints>,
}

/// The resolved project configuration.
///
/// Every path in it is absolute: the reference leaves environment, command-line and
/// default paths relative to the process's working directory; here they are
/// anchored at the `cwd` given to [`load_config`](super::load_config), which means the same thing and
/// stays true if the process changes directory or hands a path to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CjmConfig {
    /// The `runtime:` section.
    pub runtime: RuntimeConfig,
    /// Base directory for manifests, logs and plugin data (default `~/.cjm`).
    pub data_dir: PathBuf,
    /// The `plugins.yaml` file (default `plugins.yaml` in the working directory).
    pub plugins_config: PathBuf,
    /// Where models are downloaded, if set.
    pub models_dir: Option<PathBuf>,
    /// The `substrate:` section.
    pub substrate: SubstrateConfig,
    /// The `install:` section.
    pub install: InstallConfig,
    /// The `cjm.yaml` that was read, if any.
    pub source: Option<PathBuf>,
    /// What was ignored in `cjm.yaml`: unknown keys and repeated ones.
    #[serde(skip)]
    pub warnings: Vec<ConfigWarning>,
}

impl CjmConfig {
    /// `data_dir/manifests`: one JSON manifest per plugin.
    pub fn manifests_dir(&self) -> PathBuf {
        self.data_dir.join("manifests")
    }

    /// `data_dir/data`: plugin runtime data (databases, caches).
    pub fn plugin_data_dir(&self) -> PathBuf {
        self.data_dir.join("data")
    }

    /// `data_dir/logs`: plugin logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The conda binary for this machine's [`current_platform`].
    pub fn conda_binary_path(&self) -> Option<PathBuf> {
        self.conda_binary_path_for(&current_platform())
    }

    /// The conda binary for `platform` (e.g. `linux-x64`): `runtime.binaries[platform]`
    /// if set, else `prefix/bin/micromamba` (`micromamba.exe` on `win-*`), else none.
    pub fn conda_binary_path_for(&self, platform: &str) -> Option<PathBuf> {
        if let Some(binary) = self.runtime.binaries.get(platform) {
            return Some(binary.clone());
        }
        let prefix = self.runtime.prefix.as_ref()?;
        let name = if platform.starts_with("win-") {
            "micromamba.exe"
        } else {
            "micromamba"
        };
        Some(prefix.join("bin").join(name))
    }
}

/// This build's platform key as the reference spells it: `linux-x64`,
/// `darwin-arm64`, `win-x64`, ...
///
/// The reference asks `uname` at run time; this uses the target the binary was
/// built for, which agrees except for a 32-bit build on a 64-bit kernel (and for
/// architectures whose Rust and `uname` names differ, e.g. `x86` vs `i686`).
pub fn current_platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{os}-{arch}")
}

/// The command-line values, the top layer of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--cjm-config`: the `cjm.yaml` to read; it must exist. Relative to `cwd`.
    pub config_path: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--conda-prefix`.
    pub conda_prefix: Option<PathBuf>,
    /// `--conda-type`.
    pub conda_type: Option<CondaType>,
}
