//! Where the reference keeps its stores.

use std::path::{Path, PathBuf};

use crate::StoreError;

/// The config database's file name in a data directory.
pub const CONFIG_DB_FILE_NAME: &str = "plugin_configs.db";

/// The empirical database's file name in a data directory.
pub const EMPIRICAL_DB_FILE_NAME: &str = "empirical_resources.db";

/// The secrets directory's name in a data directory.
pub const SECRETS_DIR_NAME: &str = "secrets";

/// The secrets file's name in the secrets directory.
pub const SECRETS_FILE_NAME: &str = "secrets.json";

/// `data_dir/name`, or `~/.cjm/name` without a data directory: the reference's
/// manager passes `<data_dir>/…` to each store, and each store falls back to
/// `Path.home() / ".cjm"` on its own.
pub(crate) fn in_data_dir(data_dir: Option<&Path>, name: &str) -> Result<PathBuf, StoreError> {
    match data_dir {
        Some(dir) => Ok(dir.join(name)),
        None => Ok(home()?.join(".cjm").join(name)),
    }
}

/// Python's `Path.home()`: `$HOME`, else the password database's entry.
fn home() -> Result<PathBuf, StoreError> {
    std::env::home_dir()
        .filter(|home| !home.as_os_str().is_empty())
        .ok_or(StoreError::NoHome)
}
