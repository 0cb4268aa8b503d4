//! What can be wrong with a `cjm.yaml`: the error that refuses it, the problems it
//! lists (each with its key path and place), and the warnings for what was ignored.

use std::{fmt, io, path::Path, path::PathBuf};

/// A problem with one value in `cjm.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CjmYamlProblem {
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

impl fmt::Display for CjmYamlProblem {
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
pub enum CjmYamlError {
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
        problems: Vec<CjmYamlProblem>,
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

fn problem_lines(path: &Path, problems: &[CjmYamlProblem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| format!("{}:{problem}", path.display()))
        .collect();
    lines.join("\n")
}

/// The error for a file that is not UTF-8, at its first bad byte.
pub(super) fn not_utf8(path: &Path, bytes: &[u8], err: &std::str::Utf8Error) -> CjmYamlError {
    let good = &bytes[..err.valid_up_to()];
    let line = good.split(|&b| b == b'\n').count();
    let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // The column counts characters, like the parser's columns do.
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
    CjmYamlError::NotUtf8 {
        path: path.to_owned(),
        line: line as u32,
        column: column as u32,
        byte: bytes[err.valid_up_to()],
    }
}

/// The error for a file that is not one YAML document.
pub(super) fn syntax_error(path: &Path, err: &serde_saphyr::Error) -> CjmYamlError {
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
    CjmYamlError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}
