//! A `SQLite` database opened on first use, the way the reference's stores open
//! theirs.
//!
//! The reference opens a fresh `sqlite3` connection per call with Python's
//! defaults: the rollback journal (`DELETE`) and a 5 s busy timeout, and it runs
//! its `CREATE TABLE IF NOT EXISTS` each time. Here one pool is opened on first
//! use and the table is made then. The journal mode is left alone: switching a
//! database into or out of WAL needs an exclusive lock that the busy timeout
//! cannot wait for, so doing it while a Python process has the file open would
//! surface "database is locked"; and a file some other tool put in WAL mode stays
//! in it. Writes that read first take the write lock up front (`BEGIN
//! IMMEDIATE`) so that two writers never interleave a read and a write.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio::sync::OnceCell;

use crate::StoreError;

/// How long a statement waits for another connection's lock before failing.
/// Python's default is 5 s; waiting longer costs nothing when the lock is free
/// and keeps a slow writer in another process from surfacing as an error here.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections per pool: reads run side by side, writes queue on `SQLite`'s lock.
const MAX_CONNECTIONS: u32 = 4;

/// Which of the reference's tables a database holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Table {
    /// `plugin_configs`, the config store's.
    PluginConfigs,
    /// `empirical_resources`, the empirical store's.
    EmpiricalResources,
}

/// A database file and, once it has been used, its pool.
#[derive(Debug)]
pub(crate) struct LazyDb {
    path: PathBuf,
    table: Table,
    pool: OnceCell<SqlitePool>,
}

impl LazyDb {
    pub(crate) fn new(path: PathBuf, table: Table) -> Self {
        Self {
            path,
            table,
            pool: OnceCell::new(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The pool for a read, or `None` when the database does not exist yet (the
    /// reference answers such reads with nothing rather than creating the file).
    pub(crate) async fn for_read(&self) -> Result<Option<&SqlitePool>, StoreError> {
        if let Some(pool) = self.pool.get() {
            return Ok(Some(pool));
        }
        let exists = fs_err::tokio::try_exists(&self.path)
            .await
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                action: "look for the database",
                source,
            })?;
        if !exists {
            return Ok(None);
        }
        self.pool.get_or_try_init(|| self.open()).await.map(Some)
    }

    /// The pool for a write, creating the parent directories, the file and its
    /// table as needed.
    pub(crate) async fn for_write(&self) -> Result<&SqlitePool, StoreError> {
        self.pool.get_or_try_init(|| self.open()).await
    }

    /// A failed statement, named with this database's file and what it was for.
    pub(crate) fn sql_error(&self, action: String, source: sqlx::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Closes the pool, if it was opened, waiting for its connections to finish.
    pub(crate) async fn close(self) {
        if let Some(pool) = self.pool.into_inner() {
            pool.close().await;
        }
    }

    async fn open(&self) -> Result<SqlitePool, StoreError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::tokio::create_dir_all(parent)
                .await
                .map_err(|source| StoreError::Io {
                    path: parent.to_owned(),
                    action: "create the directory",
                    source,
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT);
        let open_error = |source| StoreError::Open {
            path: self.path.clone(),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let prepared = match self.table {
            Table::PluginConfigs => crate::config::create_table(&pool).await,
            Table::EmpiricalResources => crate::empirical::create_table(&pool).await,
        };
        if let Err(source) = prepared {
            pool.close().await;
            return Err(open_error(source));
        }
        Ok(pool)
    }
}
