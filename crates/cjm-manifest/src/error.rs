//! The one error type of this crate, and the problems a check collects.

use std::{fmt, io, path::PathBuf};

/// A manifest or plugins.yaml that could not be read, written or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("failed to read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The file could not be written.
    #[error("failed to write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The manifest is not JSON.
    #[error("`{}` is not valid JSON", path.display())]
    Json {
        /// The manifest.
        path: PathBuf,
        /// Where and why parsing stopped.
        #[source]
        source: serde_json::Error,
    },
    /// The plugins file is not YAML.
    #[error("`{}` is not valid YAML", path.display())]
    Yaml {
        /// The plugins file.
        path: PathBuf,
        /// Where and why parsing stopped.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// The file parsed but its content breaks the format's rules; every
    /// problem found is listed.
    #[error("invalid {kind} `{}`:{problems}", path.display())]
    Invalid {
        /// Which format the file was read as.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// Everything wrong with it, in the order it was found.
        problems: Problems,
    },
}

impl ManifestError {
    /// A next step for whoever reads the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Invalid {
                kind: FileKind::Manifest,
                ..
            } => Some(
                "manifests are written by `cjm-ctl install-all` and `cjm-ctl regenerate-manifest`; \
                 regenerating rewrites a broken one"
                    .to_owned(),
            ),
            Self::Invalid {
                kind: FileKind::PluginsYaml,
                ..
            } => Some(
                "each entry of `plugins` needs `name`, `env_name`, `package` and either \
                 `env_file` or `python_version` (quoted, like \"3.11\")"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// The problems listed by an [`Invalid`](Self::Invalid) error; empty for
    /// the others.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => &problems.0,
            _ => &[],
        }
    }
}

/// The two formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A plugin manifest (JSON).
    Manifest,
    /// An operator's plugins.yaml.
    PluginsYaml,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Manifest => "manifest",
            Self::PluginsYaml => "plugins.yaml",
        })
    }
}

/// One thing wrong with a document: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The field's path from the document's root, like `install.python_path`
    /// or `plugins[2].python_version`; empty for the root itself.
    pub path: String,
    /// The 1-based line of the offending value, when the format keeps lines
    /// (YAML does, JSON here does not).
    pub line: Option<usize>,
    /// What is wrong, like `expected a string, found 5`.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }

    pub(crate) fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }
}

/// `install.python_path: expected a string, found 5`, or with a line,
/// `plugins[2].python_version (line 9): expected …`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, None) => f.write_str(&self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
        }
    }
}

/// Every problem found in one document, shown one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}
