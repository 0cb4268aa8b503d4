//! `cjm.yaml` and the layered project configuration: defaults < `cjm.yaml` <
//! environment variables < command-line values, as the reference resolves them.
//!
//! The environment and the working directory are passed in, so loading reads no
//! process state but the files it is pointed at.

use std::{
    collections::BTreeMap,
    fmt, io,
    path::{Component, Path, PathBuf},
    str::FromStr,
};

use serde::Serialize;

use crate::yaml::{self, DuplicateKeys, Node, Value};

/// The file `load_config` looks for in the working directory when no path is given.
pub const CONFIG_FILE_NAME: &str = "cjm.yaml";

/// Environment variable that overrides `data_dir`.
pub const ENV_DATA_DIR: &str = "CJM_DATA_DIR";
/// Environment variable that overrides `runtime.prefix`.
pub const ENV_CONDA_PREFIX: &str = "CJM_CONDA_PREFIX";
/// Environment variable that overrides `runtime.conda_type`.
pub const ENV_CONDA_TYPE: &str = "CJM_CONDA_TYPE";

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
trait ConfigEnum: FromStr<Err = UnknownValue> {
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
/// anchored at the `cwd` given to [`load_config`], which means the same thing and
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

/// A problem with one value in `cjm.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key path, e.g. `runtime.conda_type`; empty for the document itself.
    pub key: String,
    /// 1-based line of the offending value.
    pub line: u32,
    /// 1-based column of the offending value.
    pub column: u32,
    /// What the key takes, e.g. `one of local, system`.
    pub expected: String,
    /// What the file has, e.g. `"mamba"`, `5`, `a list`.
    pub found: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "expected {}, found {}", self.expected, self.found)
    }
}

/// Something in `cjm.yaml` that was ignored rather than refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file.
    pub path: PathBuf,
    /// The dotted key path of the ignored key.
    pub key: String,
    /// 1-based line of the key.
    pub line: u32,
    /// 1-based column of the key.
    pub column: u32,
    /// Why it was ignored.
    pub kind: ConfigWarningKind,
}

/// Why a key in `cjm.yaml` was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarningKind {
    /// The key means nothing to this version (the reference ignores it too).
    UnknownKey,
    /// The key appears again later in the same map; the later value is used.
    DuplicateKey,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            path,
            key,
            line,
            column,
            kind,
        } = self;
        let path = path.display();
        match kind {
            ConfigWarningKind::UnknownKey => {
                write!(f, "{path}:{line}:{column}: unknown key `{key}` ignored")
            }
            ConfigWarningKind::DuplicateKey => write!(
                f,
                "{path}:{line}:{column}: key `{key}` repeated; this later value wins"
            ),
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `cjm.yaml` named on the command line does not exist.
    #[error("config file `{}` does not exist", path.display())]
    NotFound {
        /// The path, joined to the working directory.
        path: PathBuf,
    },
    /// The file or its folder could not be read.
    #[error("failed to read config file `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8.
    #[error("{}:{line}:{column}: not valid UTF-8 (byte 0x{byte:02x})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first bad byte.
        line: u32,
        /// 1-based column of the first bad byte.
        column: u32,
        /// The first bad byte.
        byte: u8,
    },
    /// The file is not a YAML document.
    #[error("{}: invalid YAML: {message}", located(path, *line, *column))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line, when the parser knows it.
        line: Option<u32>,
        /// 1-based column, when the parser knows it.
        column: Option<u32>,
        /// The parser's description.
        message: String,
    },
    /// The file is YAML but some values are wrong; each problem is on its own line.
    #[error("{}", problem_lines(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in document order.
        problems: Vec<ConfigProblem>,
    },
    /// An environment variable holds a value its setting does not take.
    #[error("environment variable {var}: expected {expected}, found {found:?}")]
    InvalidEnv {
        /// The variable, e.g. `CJM_CONDA_TYPE`.
        var: &'static str,
        /// What it takes.
        expected: &'static str,
        /// What it holds.
        found: String,
    },
    /// No layer sets `data_dir` and there is no home directory for the default.
    #[error("no home directory for the default data_dir `~/.cjm`: HOME is not set")]
    NoHome,
}

fn located(path: &Path, line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{}:{line}:{column}", path.display()),
        _ => path.display().to_string(),
    }
}

fn problem_lines(path: &Path, problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| format!("{}:{problem}", path.display()))
        .collect();
    lines.join("\n")
}

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
) -> Result<CjmConfig, ConfigError> {
    let yaml_path = if let Some(given) = &options.config_path {
        let path = cwd.join(given);
        if !exists(&path)? {
            return Err(ConfigError::NotFound { path });
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
                .map_err(|err: UnknownValue| ConfigError::InvalidEnv {
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
        let home = set("HOME").ok_or(ConfigError::NoHome)?;
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

fn exists(path: &Path) -> Result<bool, ConfigError> {
    path.try_exists().map_err(|source| ConfigError::Read {
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

/// What `cjm.yaml` sets; `data_dir` stays `None` when the file leaves it to the default.
#[derive(Default)]
struct FileLayer {
    runtime: RuntimeConfig,
    data_dir: Option<PathBuf>,
    plugins_config: Option<PathBuf>,
    models_dir: Option<PathBuf>,
    substrate: SubstrateConfig,
    install: InstallConfig,
    warnings: Vec<ConfigWarning>,
}

fn read_file_layer(path: &Path) -> Result<FileLayer, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = crate::read_capped_bytes(path, crate::MAX_CONFIG_FILE_BYTES).map_err(read_error)?;
    // The reference joins relative paths to the file's folder after `resolve()`.
    let folder = path.parent().unwrap_or(Path::new("."));
    let base = fs_err::canonicalize(folder).map_err(read_error)?;

    let text = std::str::from_utf8(&bytes).map_err(|err| not_utf8(path, &bytes, &err))?;
    // PyYAML lets the last of two equal keys win; `Reader::entries` sees both and warns.
    let root = yaml::parse(text, DuplicateKeys::Keep)
        .map_err(|err| syntax_error(path, &err))?
        // An empty or null document sets nothing.
        .filter(|node| !matches!(node.value, Value::Null));

    let mut reader = Reader {
        path,
        base: &base,
        problems: Vec::new(),
        layer: FileLayer::default(),
    };
    if let Some(root) = &root {
        reader.read_root(root);
    }
    if reader.problems.is_empty() {
        Ok(reader.layer)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: reader.problems,
        })
    }
}

/// Walks the document, filling the layer and collecting every problem.
struct Reader<'a> {
    path: &'a Path,
    base: &'a Path,
    problems: Vec<ConfigProblem>,
    layer: FileLayer,
}

impl Reader<'_> {
    fn problem(&mut self, key: &str, node: &Node, expected: &str) {
        self.problems.push(ConfigProblem {
            key: key.to_owned(),
            line: node.line,
            column: node.column,
            expected: expected.to_owned(),
            found: describe(&node.value),
        });
    }

    fn warn(&mut self, key: String, node: &Node, kind: ConfigWarningKind) {
        self.layer.warnings.push(ConfigWarning {
            path: self.path.to_owned(),
            key,
            line: node.line,
            column: node.column,
            kind,
        });
    }

    /// The entries of a map section, the last of equal keys winning (as in
    /// `PyYAML`); a null section is empty.
    fn entries<'n>(&mut self, prefix: &str, node: &'n Node) -> Vec<(&'n Node, &'n Node)> {
        let map = match &node.value {
            Value::Map(map) => map,
            Value::Null => return Vec::new(),
            _ => {
                let key = prefix.trim_end_matches('.');
                self.problem(key, node, "a map");
                return Vec::new();
            }
        };
        let mut out: Vec<(&Node, &Node)> = Vec::with_capacity(map.len());
        for (key, value) in map {
            let text = key_text(&key.value);
            if let Some(slot) = out.iter_mut().find(|(k, _)| same_key(&k.value, &key.value)) {
                self.warn(
                    format!("{prefix}{text}"),
                    key,
                    ConfigWarningKind::DuplicateKey,
                );
                *slot = (key, value);
            } else {
                out.push((key, value));
            }
        }
        out
    }

    fn read_root(&mut self, root: &Node) {
        if !matches!(root.value, Value::Map(_)) {
            self.problem("", root, "a map of settings");
            return;
        }
        for (key, value) in self.entries("", root) {
            match string_key(key) {
                Some("runtime") => self.read_runtime(value),
                Some("substrate") => self.read_substrate(value),
                Some("install") => self.read_install(value),
                Some("data_dir") => self.layer.data_dir = self.path_value("data_dir", value),
                Some("plugins_config") => {
                    self.layer.plugins_config = self.path_value("plugins_config", value);
                }
                Some("models_dir") => self.layer.models_dir = self.path_value("models_dir", value),
                _ => self.unknown("", key),
            }
        }
    }

    fn read_runtime(&mut self, node: &Node) {
        for (key, value) in self.entries("runtime.", node) {
            match string_key(key) {
                Some("mode") => {
                    if let Some(mode) = self.enum_value("runtime.mode", value) {
                        self.layer.runtime.mode = mode;
                    }
                }
                Some("conda_type") => {
                    if let Some(conda_type) = self.enum_value("runtime.conda_type", value) {
                        self.layer.runtime.conda_type = conda_type;
                    }
                }
                Some("prefix") => {
                    // The reference treats an empty or null prefix as unset.
                    self.layer.runtime.prefix = match &value.value {
                        Value::Null => None,
                        Value::Str(s) if s.is_empty() => None,
                        _ => self.path_value("runtime.prefix", value),
                    };
                }
                Some("binaries") => self.read_binaries(value),
                _ => self.unknown("runtime.", key),
            }
        }
    }

    fn read_binaries(&mut self, node: &Node) {
        for (key, value) in self.entries("runtime.binaries.", node) {
            let Some(platform) = string_key(key) else {
                self.problem("runtime.binaries", key, "a platform key such as linux-x64");
                continue;
            };
            let key_path = format!("runtime.binaries.{platform}");
            if let Some(path) = self.path_value(&key_path, value) {
                self.layer
                    .runtime
                    .binaries
                    .insert(platform.to_owned(), path);
            }
        }
    }

    fn read_substrate(&mut self, node: &Node) {
        for (key, value) in self.entries("substrate.", node) {
            let slot = match string_key(key) {
                Some("drift_detection") => &mut self.layer.substrate.drift_detection,
                Some("empirical_tracking") => &mut self.layer.substrate.empirical_tracking,
                // Unknown toggles are ignored silently, so newer flags can land
                // without older hosts complaining, as the reference intends.
                _ => continue,
            };
            if let Value::Bool(b) = value.value {
                *slot = b;
            } else {
                // The reference applies Python's `bool()`, so `"false"` would mean
                // true there; refusing it is kinder than reproducing that.
                let key_path = format!("substrate.{}", key_text(&key.value));
                self.problem(&key_path, value, "true or false");
            }
        }
    }

    fn read_install(&mut self, node: &Node) {
        for (key, value) in self.entries("install.", node) {
            match string_key(key) {
                Some("ignore_requires_python") => {
                    if let Value::Bool(b) = value.value {
                        self.layer.install.ignore_requires_python = b;
                    } else {
                        self.problem("install.ignore_requires_python", value, "true or false");
                    }
                }
                Some("constraints") => self.read_constraints(value),
                _ => self.unknown("install.", key),
            }
        }
    }

    /// `install.constraints`: a file path (relative to this file) or a list of pins.
    fn read_constraints(&mut self, node: &Node) {
        const EXPECTED: &str = "a constraints file path or a list of pins";
        let key = "install.constraints";
        match &node.value {
            Value::Null => self.layer.install.constraints = None,
            Value::Str(s) if !s.is_empty() => {
                self.layer.install.constraints = self.path_value(key, node).map(Constraints::File);
            }
            Value::Seq(items) => {
                let mut pins = Vec::with_capacity(items.len());
                for item in items {
                    match &item.value {
                        Value::Str(pin) if !pin.trim().is_empty() => pins.push(pin.clone()),
                        _ => self.problem(key, item, "a pin such as \"libdemo<2\""),
                    }
                }
                self.layer.install.constraints = Some(Constraints::Pins(pins));
            }
            _ => self.problem(key, node, EXPECTED),
        }
    }

    fn unknown(&mut self, prefix: &str, key: &Node) {
        let text = key_text(&key.value);
        self.warn(
            format!("{prefix}{text}"),
            key,
            ConfigWarningKind::UnknownKey,
        );
    }

    fn path_value(&mut self, key: &str, node: &Node) -> Option<PathBuf> {
        if let Value::Str(s) = &node.value {
            Some(join_lexically(self.base, Path::new(s)))
        } else {
            self.problem(key, node, "a path string");
            None
        }
    }

    fn enum_value<T: ConfigEnum>(&mut self, key: &str, node: &Node) -> Option<T> {
        if let Value::Str(s) = &node.value
            && let Ok(value) = s.parse()
        {
            return Some(value);
        }
        self.problem(key, node, T::EXPECTED);
        None
    }
}

/// The error for a file that is not UTF-8, at its first bad byte.
fn not_utf8(path: &Path, bytes: &[u8], err: &std::str::Utf8Error) -> ConfigError {
    let good = &bytes[..err.valid_up_to()];
    let line = good.split(|&b| b == b'\n').count();
    let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // The column counts characters, like the parser's columns do.
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
    ConfigError::NotUtf8 {
        path: path.to_owned(),
        line: line as u32,
        column: column as u32,
        byte: bytes[err.valid_up_to()],
    }
}

/// The error for a file that is not one YAML document.
fn syntax_error(path: &Path, err: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = match err.location() {
        Some(loc) if loc.line() > 0 => (Some(loc.line() as u32), Some(loc.column() as u32)),
        _ => (None, None),
    };
    let message = if let serde_saphyr::Error::MultipleDocuments { .. } = err {
        // The library's own text recommends one of its APIs to the developer.
        "found a second YAML document; the file must hold exactly one".to_owned()
    } else {
        let text = err.to_string();
        match (line, column) {
            (Some(l), Some(c)) => text
                .strip_suffix(&format!(" at line {l}, column {c}"))
                .map_or_else(|| text.clone(), str::to_owned),
            _ => text,
        }
    };
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// How a problem report shows a value after "found".
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("{s:?}"),
        Value::Seq(_) => "a list".to_owned(),
        Value::Map(_) => "a map".to_owned(),
    }
}

/// How a value reads as a mapping key in a key path.
fn key_text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Seq(_) => "<list>".to_owned(),
        Value::Map(_) => "<map>".to_owned(),
        other => describe(other),
    }
}

fn string_key(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// Key equality as Python dicts see it, for the scalar keys a config can have.
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}
