//! cjm's persistent stores, each reading and writing the same files as the
//! Python reference (`cjm-plugin-system` 0.0.34), so a data directory can be
//! shared with it in either direction:
//!
//! - [`ConfigStore`]: each plugin's config and enabled flag, in
//!   `<data_dir>/plugin_configs.db` (`SQLite` table `plugin_configs`);
//! - [`EmpiricalStore`]: resource use per (instance, config hash), aggregated
//!   online, in `<data_dir>/empirical_resources.db` (table `empirical_resources`);
//! - [`SecretStore`]: plugin secrets in `<data_dir>/secrets/secrets.json`, 0600.
//!
//! Without a data directory each falls back to `~/.cjm`, as the reference does.
//! Nothing is created until the first write, and reading a store that does not
//! exist yet answers with nothing. Every method is async; the `SQLite` pools open
//! on first use and the secrets file is handled on tokio's blocking threads.
//! Any number of processes can use the same files at once: the databases take
//! `SQLite`'s locks with a busy timeout, and `secrets.json` is replaced atomically
//! under a lock file. Writers of this crate never lose each other's updates; the
//! reference's writers can still lose updates racing any writer (they take no
//! lock on `secrets.json` and read outside their write transaction), as they can
//! among themselves.
//!
//! This crate never validates configs, starts workers or decides what a secret
//! is for: it only keeps them. A secret's value never appears in an error or a
//! `Debug` output; it is a [`SecretValue`] that must be exposed explicitly.
//!
//! ```
//! use cjm_stores::{ConfigRecord, ConfigStore, SecretStore, SecretValue};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let data_dir = std::env::temp_dir().join(format!("cjm-stores-doc-{}", std::process::id()));
//! let configs = ConfigStore::in_data_dir(Some(&data_dir))?;
//! assert_eq!(configs.get("whisper").await?, None);
//!
//! let mut record = ConfigRecord::default();
//! record.config.insert("model".into(), "tiny".into());
//! configs.set("whisper", &record).await?;
//! assert_eq!(configs.get("whisper").await?.unwrap().config, record.config);
//!
//! let secrets = SecretStore::in_data_dir(Some(&data_dir))?;
//! secrets.set_secret("gemini", "GEMINI_API_KEY", &SecretValue::new("s3cr3t"), None).await?;
//! let key = secrets.get_secret("gemini", "GEMINI_API_KEY", None).await?.unwrap();
//! assert_eq!(key.expose(), "s3cr3t");
//! assert_eq!(format!("{key:?}"), "SecretValue(***)");
//!
//! configs.close().await;
//! fs_err::remove_dir_all(&data_dir)?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod config;
mod empirical;
mod error;
mod isoformat;
mod paths;
mod secrets;
mod sqlite;

pub use crate::{
    config::{ConfigRecord, ConfigStore},
    empirical::{EmpiricalRecord, EmpiricalStore, ResourceSample, compute_config_hash},
    error::StoreError,
    paths::{CONFIG_DB_FILE_NAME, EMPIRICAL_DB_FILE_NAME, SECRETS_DIR_NAME, SECRETS_FILE_NAME},
    secrets::{DEFAULT_SCOPE, SecretStore, SecretValue, secret_key_problem},
};
