use std::path::PathBuf;

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
    /// The backend is not available in this build.
    #[error("the {backend} backend is not supported yet")]
    Unsupported {
        /// The backend asked for.
        backend: &'static str,
    },
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
            Self::Tool { .. } => Some(
                "check the plugin's requirements and index options; the tool's last lines are above".into(),
            ),
            Self::ToolMissing { .. } => Some("install uv (`cjm-ctl setup-runtime`) or put it on PATH".into()),
            Self::Io { .. } => Some("check that the data directory is writable".into()),
            Self::Unsupported { .. } => Some("use `backend: uv` in plugins.yaml".into()),
        }
    }
}
