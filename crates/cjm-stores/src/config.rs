//! Per-plugin config and enabled flag, in the reference's `plugin_configs` table.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cjm_core::{SharedClock, SystemClock};
use serde_json::{Map, Value};
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};

use crate::StoreError;
use crate::paths::{self, CONFIG_DB_FILE_NAME};
use crate::sqlite::{LazyDb, Table};

/// The reference's schema, character for character: `SQLite` keeps this text in
/// `sqlite_master`, so a database made here reads the same as one made there.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS plugin_configs (
    plugin_name TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL
)";

/// What is persisted for one plugin: its config, whether it takes jobs, and when
/// it was last written (the reference's `PluginConfigRecord`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigRecord {
    /// The plugin's current config values.
    pub config: Map<String, Value>,
    /// Whether jobs are accepted for the plugin.
    pub enabled: bool,
    /// Unix time of the last write, in seconds, stamped by [`ConfigStore::set`].
    pub updated_at: f64,
}

impl Default for ConfigRecord {
    /// The reference's defaults: an empty config, enabled, never written.
    fn default() -> Self {
        Self {
            config: Map::new(),
            enabled: true,
            updated_at: 0.0,
        }
    }
}

/// The reference's `LocalPluginConfigStore`: one `SQLite` row per plugin in
/// `plugin_configs.db`.
///
/// Nothing is created until the first write; reads of a database that does not
/// exist yet answer with nothing. Configs are written as Python's
/// `json.dumps(config)` writes them, so either implementation can read and
/// rewrite the other's rows.
pub struct ConfigStore {
    db: LazyDb,
    /// Where [`ConfigStore::set`] reads the time.
    clock: SharedClock,
}

impl fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigStore")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl ConfigStore {
    /// A store in the database file `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        Self {
            db: LazyDb::new(db_path.into(), Table::PluginConfigs),
            clock: SystemClock::shared(),
        }
    }

    /// The store the reference's manager uses: `<data_dir>/plugin_configs.db`,
    /// or `~/.cjm/plugin_configs.db` without a data directory.
    pub fn in_data_dir(data_dir: Option<&Path>) -> Result<Self, StoreError> {
        paths::in_data_dir(data_dir, CONFIG_DB_FILE_NAME).map(Self::new)
    }

    /// Stamps writes with `clock`'s wall time instead of the system's.
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The record for `plugin_name`, or `None` if there is none.
    ///
    /// A row whose `config_json` is not a JSON object reads as an empty config,
    /// with a warning, as in the reference.
    pub async fn get(&self, plugin_name: &str) -> Result<Option<ConfigRecord>, StoreError> {
        let Some(pool) = self.db.for_read().await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT config_json, enabled, updated_at FROM plugin_configs WHERE plugin_name = ?",
        )
        .bind(plugin_name)
        .fetch_optional(pool)
        .await
        .map_err(|source| {
            self.sql_error(format!("read the config of plugin `{plugin_name}`"), source)
        })?;
        Ok(row.map(|row| record_from_row(plugin_name, &row, 0)))
    }

    /// Writes `record` for `plugin_name`, replacing any earlier one, with
    /// `updated_at` stamped to now; returns that stamp.
    pub async fn set(&self, plugin_name: &str, record: &ConfigRecord) -> Result<f64, StoreError> {
        let updated_at = unix_seconds(self.clock.wall());
        let config_json = cjm_core::python_json(&Value::Object(record.config.clone()), None);
        let pool = self.db.for_write().await?;
        sqlx::query(
            "INSERT OR REPLACE INTO plugin_configs \
             (plugin_name, config_json, enabled, updated_at) VALUES (?, ?, ?, ?)",
        )
        .bind(plugin_name)
        .bind(config_json)
        .bind(i64::from(record.enabled))
        .bind(updated_at)
        .execute(pool)
        .await
        .map_err(|source| {
            self.sql_error(
                format!("write the config of plugin `{plugin_name}`"),
                source,
            )
        })?;
        Ok(updated_at)
    }

    /// Removes the record for `plugin_name`; `true` if there was one.
    pub async fn delete(&self, plugin_name: &str) -> Result<bool, StoreError> {
        let Some(pool) = self.db.for_read().await? else {
            return Ok(false);
        };
        let done = sqlx::query("DELETE FROM plugin_configs WHERE plugin_name = ?")
            .bind(plugin_name)
            .execute(pool)
            .await
            .map_err(|source| {
                self.sql_error(
                    format!("delete the config of plugin `{plugin_name}`"),
                    source,
                )
            })?;
        Ok(done.rows_affected() > 0)
    }

    /// Every record, by plugin name.
    pub async fn list_all(&self) -> Result<BTreeMap<String, ConfigRecord>, StoreError> {
        let Some(pool) = self.db.for_read().await? else {
            return Ok(BTreeMap::new());
        };
        let rows =
            sqlx::query("SELECT plugin_name, config_json, enabled, updated_at FROM plugin_configs")
                .fetch_all(pool)
                .await
                .map_err(|source| self.sql_error("list the plugin configs".to_owned(), source))?;
        Ok(rows
            .iter()
            .map(|row| {
                let name: String = row.try_get_unchecked(0).unwrap_or_default();
                let record = record_from_row(&name, row, 1);
                (name, record)
            })
            .collect())
    }

    /// Closes the database, waiting for its connections to finish.
    pub async fn close(self) {
        self.db.close().await;
    }

    fn sql_error(&self, action: String, source: sqlx::Error) -> StoreError {
        self.db.sql_error(action, source)
    }
}

/// Gives a fresh database the `plugin_configs` table.
pub(crate) async fn create_table(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(SCHEMA).execute(pool).await.map(drop)
}

/// The record in `row`'s columns `first..first + 3` (`config_json`, `enabled`,
/// `updated_at`), read as leniently as Python reads them.
fn record_from_row(plugin_name: &str, row: &SqliteRow, first: usize) -> ConfigRecord {
    let config_json: Option<String> = row.try_get_unchecked(first).unwrap_or_default();
    let config = match config_json.as_deref() {
        None | Some("") => Map::new(),
        Some(text) => {
            if let Ok(Value::Object(config)) = cjm_core::json_loads(text) {
                config
            } else {
                tracing::warn!(
                    plugin = plugin_name,
                    "corrupted config row: config_json is not a JSON object; returning an empty config"
                );
                Map::new()
            }
        }
    };
    ConfigRecord {
        config,
        enabled: row.try_get_unchecked::<i64, _>(first + 1).unwrap_or(1) != 0,
        updated_at: row.try_get_unchecked(first + 2).unwrap_or(0.0),
    }
}

/// Python's `time.time()` for `time`: seconds since the epoch, negative before.
fn unix_seconds(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}
