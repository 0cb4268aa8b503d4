//! plugins.yaml: the operator's list of plugins to install.

mod reader;

pub(crate) use self::reader::*;

use std::{collections::BTreeMap, fmt, path::Path, str::FromStr};

pub use cjm_core::Constraints;
use cjm_core::yaml::{self, DuplicateKeys, Node, Value};

use crate::error::{FileKind, ManifestError, Problem, Problems};

/// A plugins.yaml file: the reference's format (a top-level `plugins` list of
/// entries with `name`, `env_name`, `package`, `env_file` or `python_version`,
/// and `interface_libs`), plus cjm's optional keys per entry: `backend`,
/// `python_path`, `requirements`, `index_url`, `extra_index_urls`,
/// `find_links`, `no_index`, `env_vars` and `resources`, and the install
/// overrides `ignore_requires_python`, `constraints` and
/// `allow_missing_interface`.
///
/// ```
/// use cjm_manifest::{Backend, PluginsFile};
///
/// let file = PluginsFile::from_yaml_str(
///     r#"
/// plugins:
///   - name: whisper
///     env_name: cjm-whisper
///     package: cjm-transcription-plugin-whisper
///     python_version: "3.11"
///     resources: {vram_mb: 2048, gpu: true}
/// "#,
///     "plugins.yaml",
/// )?;
/// let whisper = file.get("whisper").unwrap();
/// assert_eq!(whisper.backend(), Backend::Uv);
/// assert_eq!(whisper.resources.vram_mb, Some(2048));
/// # Ok::<(), cjm_manifest::ManifestError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginsFile {
    /// The entries, in file order; their names are unique.
    pub plugins: Vec<PluginSpec>,
    /// Keys this version does not know, each with its path, line and the key
    /// likely meant; they are ignored (as the reference ignores them), and the
    /// CLI prints them as warnings.
    pub warnings: Vec<Problem>,
}

/// One plugin to install.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSpec {
    /// The plugin's name, unique in the file.
    pub name: String,
    /// The environment's name.
    pub env_name: String,
    /// What to install: a pip requirement or a git URL.
    pub package: String,
    /// A conda environment file (path or http(s) URL); for conda the
    /// reference prefers it over `python_version`.
    pub env_file: Option<String>,
    /// The Python to create the environment with, like `3.11`.
    pub python_version: Option<String>,
    /// Interface libraries installed before the package (and on the host by
    /// `setup-host`).
    pub interface_libs: Vec<String>,
    /// The environment backend as written; see [`PluginSpec::backend`].
    pub explicit_backend: Option<Backend>,
    /// The existing interpreter the `python` backend runs.
    pub python_path: Option<String>,
    /// Extra requirements installed with the package.
    pub requirements: Vec<String>,
    /// The package index to install from instead of the default.
    pub index_url: Option<String>,
    /// More package indexes.
    pub extra_index_urls: Vec<String>,
    /// Local directories or pages of links to find packages in; a relative
    /// directory is relative to the plugins.yaml's folder.
    pub find_links: Vec<String>,
    /// Install from `find_links` only, never from a package index (offline
    /// installs from a wheelhouse).
    pub no_index: bool,
    /// Environment variables visible to the worker (never secrets).
    pub env_vars: BTreeMap<String, String>,
    /// What the plugin is declared to need, the scheduler's prior.
    pub resources: DeclaredResources,
    /// Install packages whose `Requires-Python` excludes the environment's
    /// interpreter; `None` leaves it to cjm.yaml's `install.ignore_requires_python`.
    pub ignore_requires_python: Option<bool>,
    /// Version pins for the environment's resolver: a file (relative to the
    /// plugins.yaml's folder) or a list; applied with cjm.yaml's own.
    pub constraints: Option<Constraints>,
    /// Install the plugin even when the interface module its metadata names
    /// does not import in its environment (the manifest records a warning).
    pub allow_missing_interface: bool,
    /// The line the entry starts on.
    pub line: Option<usize>,
}

impl PluginSpec {
    /// The backend that builds this plugin's environment: the one written, or
    /// conda for an entry with an `env_file` (only conda reads one, and the
    /// reference always used conda), or uv.
    pub fn backend(&self) -> Backend {
        self.explicit_backend.unwrap_or(if self.env_file.is_some() {
            Backend::Conda
        } else {
            Backend::Uv
        })
    }
}

/// What builds a plugin's environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A uv virtual environment.
    #[default]
    Uv,
    /// A conda or micromamba environment, as the reference makes.
    Conda,
    /// An existing interpreter, used as it is.
    Python,
}

impl Backend {
    /// The name written in plugins.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uv => "uv",
            Self::Conda => "conda",
            Self::Python => "python",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "uv" => Ok(Self::Uv),
            "conda" => Ok(Self::Conda),
            "python" => Ok(Self::Python),
            _ => Err(()),
        }
    }
}

/// Resources a plugin's entry declares it needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DeclaredResources {
    /// Resident memory, in MiB.
    pub ram_mb: Option<u64>,
    /// GPU memory, in MiB.
    pub vram_mb: Option<u64>,
    /// Whether it needs a GPU at all.
    pub gpu: bool,
}

impl PluginsFile {
    /// Reads and checks a plugins.yaml file, failing with every problem found.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let path = path.as_ref();
        let text =
            cjm_core::read_capped(path, cjm_core::MAX_CONFIG_FILE_BYTES).map_err(|source| {
                ManifestError::Read {
                    path: path.to_owned(),
                    source,
                }
            })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and checks plugins.yaml text; `path` names it in errors.
    pub fn from_yaml_str(text: &str, path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let path = path.as_ref();
        // PyYAML would let the last of two equal keys win; an entry that says
        // two things is rejected instead.
        let root = yaml::parse(text, DuplicateKeys::Reject)
            .map_err(|source| ManifestError::Yaml {
                path: path.to_owned(),
                source: Box::new(source),
            })?
            // `yaml.safe_load` reads an empty file as `None`.
            .unwrap_or(Node {
                value: Value::Null,
                line: 0,
                column: 0,
            });
        let mut reader = Reader::default();
        let mut file = reader.file(&root);
        if reader.problems.is_empty() {
            file.warnings = reader.warnings;
            Ok(file)
        } else {
            Err(ManifestError::Invalid {
                kind: FileKind::PluginsYaml,
                path: path.to_owned(),
                problems: Problems(reader.problems),
            })
        }
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&PluginSpec> {
        self.plugins.iter().find(|plugin| plugin.name == name)
    }
}

fn render(out: &mut String, value: &Value) {
    use fmt::Write as _;
    // Writing to a String cannot fail.
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => _ = write!(out, "{b}"),
        Value::Int(i) => _ = write!(out, "{i}"),
        Value::Float(x) => {
            out.push_str(&cjm_core::python_json(&serde_json::Value::from(*x), None));
        }
        Value::Str(s) => _ = write!(out, "{s:?}"),
        Value::Seq(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render(out, &item.value);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render(out, &key.value);
                out.push_str(": ");
                render(out, &item.value);
            }
            out.push('}');
        }
    }
}
