//! The one error type of the stores.

use std::path::PathBuf;

/// A store operation that failed, naming the file and what was being done.
///
/// No variant ever carries a secret value: secrets-file errors name the plugin,
/// scope and key at most, and a malformed secrets file is reported by position,
/// never by quoting its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The default location `~/.cjm` was asked for, but there is no home
    /// directory.
    #[error("no home directory for the default store location `~/.cjm`: HOME is not set")]
    NoHome,

    /// A database could not be opened, created or given its table.
    #[error("could not open the database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What `SQLite` or the pool reported.
        #[source]
        source: sqlx::Error,
    },

    /// A statement against an open database failed.
    #[error("could not {action} in {}", path.display())]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. "write the config of plugin `whisper`".
        action: String,
        /// What `SQLite` or the pool reported.
        #[source]
        source: sqlx::Error,
    },

    /// A value cannot be stored the way the reference stores it.
    #[error("could not {action} in {}: {reason}", path.display())]
    Invalid {
        /// The file the value was for.
        path: PathBuf,
        /// What was being done.
        action: String,
        /// Why the value was refused.
        reason: String,
    },

    /// A file or directory operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "read the secrets file".
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The secrets file is not JSON. Its text is never quoted.
    #[error("the secrets file {} is not valid JSON (line {line}, column {column})", path.display())]
    SecretsNotJson {
        /// The secrets file.
        path: PathBuf,
        /// Where parsing stopped, 1-based.
        line: usize,
        /// Where parsing stopped, 1-based.
        column: usize,
    },

    /// The secrets file is JSON but not the reference's
    /// `{scope: {plugin: {KEY: "value"}}}` layout.
    #[error("the secrets file {} is malformed: {what}", path.display())]
    SecretsMalformed {
        /// The secrets file.
        path: PathBuf,
        /// Which part is wrong, by names only, e.g. "scope `__default__` is not an object".
        what: String,
    },

    /// The blocking task doing a secrets-file operation did not finish.
    #[error("the task that was to {action} {} did not finish", path.display())]
    Task {
        /// The secrets file.
        path: PathBuf,
        /// What the task was to do.
        action: &'static str,
        /// Why the task stopped.
        #[source]
        source: tokio::task::JoinError,
    },
}
