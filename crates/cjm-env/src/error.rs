//! cjm-env's two error types: [`EnvError`] (building or finding an environment)
//! and [`InstallError`] (installing a plugin, which names the plugin), each with a
//! hint that says what to do next; and the tail of a failed command's output that
//! they carry.

use std::path::PathBuf;

/// Lines of a failing tool's output (uv, pip, conda, micromamba) that its error keeps.
pub(crate) const TOOL_TAIL: usize = 20;

/// The last `lines` lines of a command's output, stdout's then stderr's.
pub(crate) fn output_tail(stdout: &[u8], stderr: &[u8], lines: usize) -> Vec<String> {
    let stdout = String::from_utf8_lossy(stdout);
    let stderr = String::from_utf8_lossy(stderr);
    let all: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// What can go wrong building or finding an environment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The environment tool failed.
    #[error(
        "{step} failed for environment {key}: `{command}` {status}{}",
        tail(output_tail)
    )]
    Tool {
        /// What was being done (e.g. `installing the requirements`).
        step: &'static str,
        /// The environment's key.
        key: String,
        /// The command, as a shell would show it.
        command: String,
        /// How it ended.
        status: String,
        /// The last lines it printed.
        output_tail: Vec<String>,
    },
    /// No interpreter for the requested version is on this machine, and uv could
    /// not download a managed one (offline, or no such version).
    #[error(
        "no Python {requested} found{}{}",
        found_list(found),
        tail(output_tail)
    )]
    PythonNotFound {
        /// The version asked for (`python_version`).
        requested: String,
        /// `VERSION (PATH)` of each interpreter uv found.
        found: Vec<String>,
        /// uv's last lines.
        output_tail: Vec<String>,
    },
    /// The environment tool could not be run at all.
    #[error("cannot run {}", tool.display())]
    ToolMissing {
        /// The tool.
        tool: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{what} failed")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A download gave no file.
    #[error("downloading {url} to {} failed: {reason}{}", dest.display(),
        instead.as_ref().map_or_else(String::new, |i| format!("; if this machine is offline, {i}")))]
    Download {
        /// The address.
        url: String,
        /// Where the file was to go.
        dest: PathBuf,
        /// Why, as the download tool put it (its last line).
        reason: String,
        /// What to do without a network, e.g. where to put the file by hand.
        instead: Option<String>,
    },
    /// The configuration does not let the runtime be set up.
    #[error("setting up the runtime failed: {problem}: {fix}")]
    RuntimeSetup {
        /// What is wrong, e.g. `there is nowhere to put micromamba`.
        problem: String,
        /// The fix, e.g. `set runtime.prefix or runtime.binaries.linux-x64 in cjm.yaml`.
        fix: String,
    },
    /// An environment key that is not one plain folder name (it came from a
    /// manifest someone edited); nothing is touched.
    #[error(
        "environment key {key:?} cannot be used: it {why}, and would name a folder outside the environments folder"
    )]
    UnsafeKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The backend is not available in this build.
    #[error("the {backend} backend is not supported yet")]
    Unsupported {
        /// The backend asked for.
        backend: &'static str,
    },
}

/// What can go wrong installing a plugin. Every message names the plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Its environment could not be built.
    #[error("plugin {plugin}: {error}")]
    Env {
        /// The plugins.yaml entry.
        plugin: String,
        /// What went wrong.
        error: Box<EnvError>,
    },
    /// Its code could not be introspected: an import error, missing metadata, an
    /// interface that does not resolve.
    #[error("plugin {plugin}: introspection failed: {message}{}", tail(detail))]
    Introspection {
        /// The plugins.yaml entry.
        plugin: String,
        /// What went wrong.
        message: String,
        /// The last lines of the traceback or output.
        detail: Vec<String>,
    },
    /// The metadata it reports does not make a valid manifest.
    #[error(
        "plugin {plugin}: its metadata does not make a valid manifest:{}",
        list(problems)
    )]
    InvalidMetadata {
        /// The plugins.yaml entry.
        plugin: String,
        /// Each problem, with its field path.
        problems: Vec<String>,
    },
    /// Its manifest could not be written.
    #[error("plugin {plugin}: {source}")]
    Manifest {
        /// The plugins.yaml entry.
        plugin: String,
        /// What went wrong.
        #[source]
        source: Box<cjm_manifest::ManifestError>,
    },
    /// A file operation failed.
    #[error("plugin {plugin}: {what} failed")]
    Io {
        /// The plugins.yaml entry.
        plugin: String,
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl InstallError {
    /// The plugins.yaml entry it is about.
    pub fn plugin(&self) -> &str {
        match self {
            Self::Env { plugin, .. }
            | Self::Introspection { plugin, .. }
            | Self::InvalidMetadata { plugin, .. }
            | Self::Manifest { plugin, .. }
            | Self::Io { plugin, .. } => plugin,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Env { error, .. } => error.hint(),
            Self::Introspection { detail, .. }
                if detail.iter().any(|l| l.starts_with("Traceback")) =>
            {
                Some(
                    "fix the plugin's package (the traceback above is from inside its environment), then run install-all again".into(),
                )
            }
            Self::Introspection { .. } => Some(
                "fix the plugin's package or its plugins.yaml entry as the message says, then run install-all again".into(),
            ),
            Self::InvalidMetadata { .. } => Some(
                "the plugin's get_plugin_metadata() (or its entry point's distribution) must provide these fields".into(),
            ),
            Self::Manifest { .. } | Self::Io { .. } => {
                Some("check that the data directory is writable".into())
            }
        }
    }
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        "; uv found no interpreter on this machine".to_owned()
    } else {
        format!("; uv found: {}", found.join(", "))
    }
}

fn list(items: &[String]) -> String {
    let mut s = String::new();
    for i in items {
        s.push_str("\n  - ");
        s.push_str(i);
    }
    s
}

fn tail(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str("\n  | ");
        s.push_str(l);
    }
    s
}

impl EnvError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Tool { output_tail, .. }
                if output_tail.iter().any(|l| {
                    l.contains("requires Python") || l.contains("requires a different Python")
                }) =>
            {
                Some(
                    "a package's Requires-Python excludes the environment's interpreter: if it works anyway, \
                     add `ignore_requires_python: true` to the plugin's plugins.yaml entry (or \
                     `install: {ignore_requires_python: true}` to cjm.yaml); or set a python_version it allows"
                        .into(),
                )
            }
            Self::Tool { step, .. } if step.contains("uv") => Some(
                "check the network or pip's index settings, or point CJM_UV at an existing uv".into(),
            ),
            Self::Download { .. } => Some("check the address and the network".into()),
            Self::PythonNotFound { requested, found, .. } => {
                let versions: Vec<&str> = found
                    .iter()
                    .filter_map(|f| f.split_whitespace().next())
                    .collect();
                let existing = if versions.is_empty() {
                    String::new()
                } else {
                    format!(" (one of {})", versions.join(", "))
                };
                Some(format!(
                    "set the entry's python_version in plugins.yaml to a version this machine has{existing}, \
                     or add `ignore_requires_python: true` if only a package's Requires-Python asked for {requested}; \
                     with a network uv downloads a managed Python {requested} itself (`uv python install {requested}`)"
                ))
            }
            Self::RuntimeSetup { fix, .. } => Some(fix.clone()),
            Self::Tool { .. } => Some(
                "check the plugin's requirements and index options; the tool's last lines are above".into(),
            ),
            Self::ToolMissing { tool, .. } => Some(
                if tool.file_name().is_some_and(|n| n == "uv") {
                    "point CJM_UV (or install-all's --uv) at a uv binary, or unset it: install-all installs the pinned uv itself when it finds none".to_owned()
                } else {
                    format!("check that {} exists and can be run", tool.display())
                },
            ),
            Self::Io { .. } => Some("check that the data directory is writable".into()),
            Self::Unsupported { .. } => Some("use `backend: uv` in plugins.yaml".into()),
            Self::UnsafeKey { .. } => Some(
                "the manifest's install.env_key was edited by hand: reinstall the plugin (`cjm-ctl install-all --force -p NAME`)".into(),
            ),
        }
    }
}
