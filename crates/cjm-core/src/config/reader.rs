//! Reading one `cjm.yaml` into its layer: every value checked, every problem
//! collected with its key path and place, unknown keys kept as warnings.

use std::path::{Path, PathBuf};

use super::error::{not_utf8, syntax_error};
use super::types::ConfigEnum;
use super::{
    CjmYamlError, CjmYamlProblem, ConfigWarning, ConfigWarningKind, Constraints, InstallConfig,
    RuntimeConfig, SubstrateConfig, join_lexically,
};
use crate::yaml::{self, DuplicateKeys, Node, Value};

/// What `cjm.yaml` sets; `data_dir` stays `None` when the file leaves it to the default.
#[derive(Default)]
pub(super) struct FileLayer {
    pub(super) runtime: RuntimeConfig,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) plugins_config: Option<PathBuf>,
    pub(super) models_dir: Option<PathBuf>,
    pub(super) substrate: SubstrateConfig,
    pub(super) install: InstallConfig,
    pub(super) warnings: Vec<ConfigWarning>,
}

pub(super) fn read_file_layer(path: &Path) -> Result<FileLayer, CjmYamlError> {
    let read_error = |source| CjmYamlError::Read {
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
        Err(CjmYamlError::Invalid {
            path: path.to_owned(),
            problems: reader.problems,
        })
    }
}

/// Walks the document, filling the layer and collecting every problem.
struct Reader<'a> {
    path: &'a Path,
    base: &'a Path,
    problems: Vec<CjmYamlProblem>,
    layer: FileLayer,
}

impl Reader<'_> {
    fn problem(&mut self, key: &str, node: &Node, expected: &str) {
        self.problems.push(CjmYamlProblem {
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
