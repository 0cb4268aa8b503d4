//! The stores the manager uses (config, secrets, empirical footprints), behind
//! blocking calls.
//!
//! The stores are async (sqlx); the manager's API is blocking and may be called
//! from inside an async runtime. Store calls run on a private one-thread runtime,
//! from a scoped thread when the caller is itself on a runtime (where blocking on
//! another one is not allowed). They happen on load, enable/disable and
//! configuration changes, never on the call path.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cjm_core::SharedClock;
use cjm_stores::{
    ConfigRecord, ConfigStore, EmpiricalRecord, EmpiricalStore, ResourceSample, SecretStore,
    SecretValue, StoreError,
};

pub(crate) struct Stores {
    /// The data dir they live in, named by the errors that are not a store's own.
    dir: PathBuf,
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
    config: Option<ConfigStore>,
    secrets: Option<SecretStore>,
    empirical: Option<EmpiricalStore>,
}

impl Drop for Stores {
    /// A runtime cannot be dropped, which waits for its threads, from async code;
    /// a manager dropped there lets its stores' runtime shut down in the
    /// background (every store call has returned by then).
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok()
            && let Some(Ok(rt)) = self.runtime.take()
        {
            rt.shutdown_background();
        }
    }
}

impl Stores {
    /// The stores in `data_dir` (the reference's files), stamping with `clock`; with
    /// `persist` off, none: nothing is read or written and there are no secrets.
    pub(crate) fn new(data_dir: &Path, persist: bool, clock: &SharedClock) -> Self {
        Self {
            dir: data_dir.to_owned(),
            runtime: OnceLock::new(),
            config: persist.then(|| {
                ConfigStore::new(data_dir.join(cjm_stores::CONFIG_DB_FILE_NAME))
                    .with_clock(clock.clone())
            }),
            secrets: persist.then(|| SecretStore::new(data_dir.join(cjm_stores::SECRETS_DIR_NAME))),
            empirical: persist
                .then(|| EmpiricalStore::new(data_dir.join(cjm_stores::EMPIRICAL_DB_FILE_NAME))),
        }
    }

    fn block<F>(&self, fut: F) -> Result<F::Output, StoreError>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let rt = self
            .runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("cjm-stores")
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| StoreError::Io {
                path: self.dir.clone(),
                action: "start the stores' runtime for",
                source: std::io::Error::other(e.clone()),
            })?;
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                let thread = std::thread::Builder::new()
                    .name("cjm-stores-call".into())
                    .spawn_scoped(s, || rt.block_on(fut))
                    .map_err(|source| StoreError::Io {
                        path: self.dir.clone(),
                        action: "start a thread for the stores in",
                        source,
                    })?;
                Ok(thread
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)))
            })
        } else {
            Ok(rt.block_on(fut))
        }
    }

    pub(crate) fn config(&self, plugin: &str) -> Result<Option<ConfigRecord>, StoreError> {
        match &self.config {
            Some(store) => self.block(store.get(plugin))?,
            None => Ok(None),
        }
    }

    pub(crate) fn set_config(&self, plugin: &str, record: &ConfigRecord) -> Result<(), StoreError> {
        match &self.config {
            Some(store) => self.block(store.set(plugin, record))?.map(drop),
            None => Ok(()),
        }
    }

    pub(crate) fn secret(
        &self,
        plugin: &str,
        key: &str,
    ) -> Result<Option<SecretValue>, StoreError> {
        match &self.secrets {
            Some(store) => self.block(store.get_secret(plugin, key, None))?,
            None => Ok(None),
        }
    }

    pub(crate) fn set_secret(
        &self,
        plugin: &str,
        key: &str,
        value: &SecretValue,
    ) -> Result<(), StoreError> {
        match &self.secrets {
            Some(store) => self.block(store.set_secret(plugin, key, value, None))?,
            None => Ok(()),
        }
    }

    pub(crate) fn secret_keys(&self, plugin: &str) -> Result<Vec<String>, StoreError> {
        match &self.secrets {
            Some(store) => self.block(store.list_keys(plugin, None))?,
            None => Ok(Vec::new()),
        }
    }

    /// Whether empirical samples are kept.
    pub(crate) fn empirical_on(&self) -> bool {
        self.empirical.is_some()
    }

    pub(crate) fn record_samples(
        &self,
        instance: &str,
        plugin: &str,
        config_hash: &str,
        samples: &[ResourceSample],
    ) -> Result<(), StoreError> {
        match &self.empirical {
            Some(store) => {
                self.block(store.record_samples(instance, plugin, config_hash, samples))?
            }
            None => Ok(()),
        }
    }

    pub(crate) fn empirical(
        &self,
        instance: &str,
        config_hash: &str,
    ) -> Result<Option<EmpiricalRecord>, StoreError> {
        match &self.empirical {
            Some(store) => self.block(store.get_record(instance, config_hash))?,
            None => Ok(None),
        }
    }
}
