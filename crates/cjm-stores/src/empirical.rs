//! Empirically observed resource use per (instance, config hash), aggregated
//! online in the reference's `empirical_resources` table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Number, Value};
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};

use crate::StoreError;
use crate::isoformat;
use crate::paths::{self, EMPIRICAL_DB_FILE_NAME};
use crate::sqlite::{LazyDb, Table};

/// The reference's schema, character for character (`SQLite` keeps the text).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS empirical_resources (
    instance_id TEXT NOT NULL,
    plugin_name TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    sample_count INTEGER NOT NULL DEFAULT 0,
    success_count INTEGER NOT NULL DEFAULT 0,
    cpu_percent_mean REAL NOT NULL DEFAULT 0.0,
    memory_mb_peak_max REAL NOT NULL DEFAULT 0.0,
    memory_mb_peak_mean REAL NOT NULL DEFAULT 0.0,
    gpu_memory_mb_peak_max REAL NOT NULL DEFAULT 0.0,
    gpu_memory_mb_peak_mean REAL NOT NULL DEFAULT 0.0,
    duration_seconds_mean REAL NOT NULL DEFAULT 0.0,
    last_observed TEXT NOT NULL,
    api_usage_totals TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (instance_id, config_hash)
)";

/// The column the reference added later, and the statement that adds it to a
/// database made before it.
const ADD_API_USAGE: &str =
    "ALTER TABLE empirical_resources ADD COLUMN api_usage_totals TEXT NOT NULL DEFAULT '{}'";

/// The reference's record query, without its `WHERE`.
macro_rules! select_records {
    () => {
        "SELECT instance_id, plugin_name, config_hash, sample_count, success_count, \
         cpu_percent_mean, memory_mb_peak_max, memory_mb_peak_mean, \
         gpu_memory_mb_peak_max, gpu_memory_mb_peak_mean, \
         duration_seconds_mean, last_observed, api_usage_totals \
         FROM empirical_resources"
    };
}

const SELECT_ALL: &str = select_records!();
const SELECT_BY_KEY: &str = concat!(
    select_records!(),
    " WHERE instance_id = ? AND config_hash = ?"
);
const SELECT_BY_PLUGIN: &str = concat!(select_records!(), " WHERE plugin_name = ?");

/// The key the reference files an instance's samples under for its effective
/// `config`: `"sha256:<hex>"` of the sorted, whitespace-free JSON. `None` and an
/// empty config hash alike.
pub fn compute_config_hash(config: Option<&Map<String, Value>>) -> String {
    cjm_core::hash_dict_canonical(
        &config.map_or(Value::Null, |config| Value::Object(config.clone())),
    )
}

/// One observation taken after an execute call (the reference's `ResourceSample`).
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceSample {
    /// The worker's CPU percentage at the end of the call.
    pub cpu_percent: f64,
    /// The worker's resident memory in MB at the end of the call.
    pub memory_mb_peak: f64,
    /// The worker's GPU memory in MB at the end of the call (0 without a GPU).
    pub gpu_memory_mb_peak: f64,
    /// How long the call took, in seconds.
    pub duration_seconds: f64,
    /// Whether the call returned normally.
    pub success: bool,
    /// When the sample was taken.
    pub observed_at: SystemTime,
    /// Measured API usage by unit (tokens, credits, pages…), summed across runs;
    /// `None` for compute-only plugins. Amounts must be finite.
    pub api_usage: Option<BTreeMap<String, f64>>,
}

/// The aggregate for one (instance, config hash) pair (the reference's
/// `EmpiricalResourceRecord`, plus the success count it derives the rate from).
#[derive(Clone, Debug, PartialEq)]
pub struct EmpiricalRecord {
    /// The instance the samples came from.
    pub instance_id: String,
    /// The instance's plugin, as given with the latest sample.
    pub plugin_name: String,
    /// [`compute_config_hash`] of the instance's config at sample time.
    pub config_hash: String,
    /// How many samples were folded in.
    pub sample_count: i64,
    /// How many of them succeeded.
    pub success_count: i64,
    /// Running mean of `cpu_percent`.
    pub cpu_percent_mean: f64,
    /// The largest `memory_mb_peak` seen.
    pub memory_mb_peak_max: f64,
    /// Running mean of `memory_mb_peak`.
    pub memory_mb_peak_mean: f64,
    /// The largest `gpu_memory_mb_peak` seen.
    pub gpu_memory_mb_peak_max: f64,
    /// Running mean of `gpu_memory_mb_peak`.
    pub gpu_memory_mb_peak_mean: f64,
    /// Running mean of `duration_seconds`.
    pub duration_seconds_mean: f64,
    /// `success_count / sample_count`, or 0 without samples.
    pub success_rate: f64,
    /// When the latest sample was taken. A stored time that cannot be read
    /// becomes the time of reading, as in the reference.
    pub last_observed: SystemTime,
    /// API usage summed per unit across all samples.
    pub api_usage_totals: BTreeMap<String, f64>,
}

/// The reference's `LocalEmpiricalResourceStore`: one `SQLite` row per
/// (instance, config hash) in `empirical_resources.db`, with running means
/// updated by the same formula in the same order, so a database fed alternately
/// by both implementations holds the same numbers as one fed by either.
///
/// Nothing is created until the first sample; reads of a database that does not
/// exist yet answer with nothing.
#[derive(Debug)]
pub struct EmpiricalStore {
    db: LazyDb,
}

impl EmpiricalStore {
    /// A store in the database file `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        Self {
            db: LazyDb::new(db_path.into(), Table::EmpiricalResources),
        }
    }

    /// The store the reference's manager uses: `<data_dir>/empirical_resources.db`,
    /// or `~/.cjm/empirical_resources.db` without a data directory.
    pub fn in_data_dir(data_dir: Option<&Path>) -> Result<Self, StoreError> {
        paths::in_data_dir(data_dir, EMPIRICAL_DB_FILE_NAME).map(Self::new)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Folds `sample` into the aggregate for (`instance_id`, `config_hash`),
    /// creating it on the first sample.
    ///
    /// Means follow Welford's update `mean + (x - mean) / n`, peaks keep the
    /// maximum, API usage adds up per unit. The read and the write happen under
    /// `SQLite`'s write lock, so concurrent samples from any number of processes
    /// using this crate are all counted (the reference reads outside its write
    /// transaction, so a Python writer racing another writer can drop a sample).
    pub async fn record_sample(
        &self,
        instance_id: &str,
        plugin_name: &str,
        config_hash: &str,
        sample: &ResourceSample,
    ) -> Result<(), StoreError> {
        self.record_samples(
            instance_id,
            plugin_name,
            config_hash,
            std::slice::from_ref(sample),
        )
        .await
    }

    /// Folds `samples`, in order, into the aggregate for (`instance_id`,
    /// `config_hash`) in one transaction: the same record as that many
    /// [`record_sample`](Self::record_sample) calls, for one write. Nothing is
    /// written for an empty slice.
    pub async fn record_samples(
        &self,
        instance_id: &str,
        plugin_name: &str,
        config_hash: &str,
        samples: &[ResourceSample],
    ) -> Result<(), StoreError> {
        let Some(last) = samples.last() else {
            return Ok(());
        };
        let action = || format!("record a sample for instance `{instance_id}` ({config_hash})");
        if let Some((unit, _)) = samples
            .iter()
            .flat_map(|s| s.api_usage.iter().flatten())
            .find(|(_, amount)| !amount.is_finite())
        {
            return Err(StoreError::Invalid {
                path: self.db.path().to_owned(),
                action: action(),
                reason: format!("the API usage of unit `{unit}` is not a finite number"),
            });
        }
        let sql_error = |source| self.sql_error(action(), source);
        let pool = self.db.for_write().await?;
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql_error)?;
        let old = sqlx::query(
            "SELECT sample_count, success_count, cpu_percent_mean, \
             memory_mb_peak_max, memory_mb_peak_mean, \
             gpu_memory_mb_peak_max, gpu_memory_mb_peak_mean, \
             duration_seconds_mean, api_usage_totals \
             FROM empirical_resources WHERE instance_id = ? AND config_hash = ?",
        )
        .bind(instance_id)
        .bind(config_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_error)?;
        let mut aggregate = old.as_ref().map(Aggregate::from_row);
        for sample in samples {
            aggregate =
                Some(
                    Aggregate::fold(aggregate, sample).map_err(|unit| StoreError::Invalid {
                        path: self.db.path().to_owned(),
                        action: action(),
                        reason: format!("the API usage total of unit `{unit}` overflows"),
                    })?,
                );
        }
        let Some(new) = aggregate else {
            return Ok(());
        };
        sqlx::query(
            "INSERT OR REPLACE INTO empirical_resources (\
             instance_id, plugin_name, config_hash, sample_count, success_count, \
             cpu_percent_mean, memory_mb_peak_max, memory_mb_peak_mean, \
             gpu_memory_mb_peak_max, gpu_memory_mb_peak_mean, \
             duration_seconds_mean, last_observed, api_usage_totals\
             ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(instance_id)
        .bind(plugin_name)
        .bind(config_hash)
        .bind(new.sample_count)
        .bind(new.success_count)
        .bind(new.cpu_mean)
        .bind(new.mem_max)
        .bind(new.mem_mean)
        .bind(new.gpu_max)
        .bind(new.gpu_mean)
        .bind(new.dur_mean)
        .bind(cjm_core::isoformat_utc(last.observed_at))
        .bind(usage_json(new.usage))
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
        tx.commit().await.map_err(sql_error)
    }

    /// The aggregate for (`instance_id`, `config_hash`), or `None`.
    pub async fn get_record(
        &self,
        instance_id: &str,
        config_hash: &str,
    ) -> Result<Option<EmpiricalRecord>, StoreError> {
        let Some(pool) = self.db.for_read().await? else {
            return Ok(None);
        };
        let row = sqlx::query(SELECT_BY_KEY)
            .bind(instance_id)
            .bind(config_hash)
            .fetch_optional(pool)
            .await
            .map_err(|source| {
                self.sql_error(
                    format!("read the record of instance `{instance_id}` ({config_hash})"),
                    source,
                )
            })?;
        Ok(row.as_ref().map(record_from_row))
    }

    /// Every aggregate, or those of one plugin, in the database's order.
    pub async fn list_records(
        &self,
        plugin_name: Option<&str>,
    ) -> Result<Vec<EmpiricalRecord>, StoreError> {
        let Some(pool) = self.db.for_read().await? else {
            return Ok(Vec::new());
        };
        let query = match plugin_name {
            Some(name) => sqlx::query(SELECT_BY_PLUGIN).bind(name),
            None => sqlx::query(SELECT_ALL),
        };
        let rows = query.fetch_all(pool).await.map_err(|source| {
            let action = match plugin_name {
                Some(name) => format!("list the records of plugin `{name}`"),
                None => "list the records".to_owned(),
            };
            self.sql_error(action, source)
        })?;
        Ok(rows.iter().map(record_from_row).collect())
    }

    /// Removes the aggregate for (`instance_id`, `config_hash`); `true` if there
    /// was one.
    pub async fn delete_record(
        &self,
        instance_id: &str,
        config_hash: &str,
    ) -> Result<bool, StoreError> {
        let Some(pool) = self.db.for_read().await? else {
            return Ok(false);
        };
        let done = sqlx::query(
            "DELETE FROM empirical_resources WHERE instance_id = ? AND config_hash = ?",
        )
        .bind(instance_id)
        .bind(config_hash)
        .execute(pool)
        .await
        .map_err(|source| {
            self.sql_error(
                format!("delete the record of instance `{instance_id}` ({config_hash})"),
                source,
            )
        })?;
        Ok(done.rows_affected() > 0)
    }

    /// Closes the database, waiting for its connections to finish.
    pub async fn close(self) {
        self.db.close().await;
    }

    fn sql_error(&self, action: String, source: sqlx::Error) -> StoreError {
        self.db.sql_error(action, source)
    }
}

/// Gives a fresh database the `empirical_resources` table, and one made before
/// the reference added `api_usage_totals` that column.
pub(crate) async fn create_table(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(SCHEMA).execute(pool).await?;
    let columns: Vec<String> = sqlx::query("PRAGMA table_info(empirical_resources)")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| row.try_get_unchecked::<String, _>(1).unwrap_or_default())
        .collect();
    if !columns.iter().any(|column| column == "api_usage_totals") {
        sqlx::query(ADD_API_USAGE).execute(pool).await?;
    }
    Ok(())
}

/// The running aggregate as the reference keeps it between samples.
struct Aggregate {
    sample_count: i64,
    success_count: i64,
    cpu_mean: f64,
    mem_max: f64,
    mem_mean: f64,
    gpu_max: f64,
    gpu_mean: f64,
    dur_mean: f64,
    /// Per-unit totals with the JSON values read, so a unit this sample does not
    /// touch is written back exactly as it was.
    usage: BTreeMap<String, Value>,
}

impl Aggregate {
    fn from_row(row: &SqliteRow) -> Self {
        let usage_json: Option<String> = row.try_get_unchecked(8).unwrap_or_default();
        Self {
            sample_count: row.try_get_unchecked(0).unwrap_or(0),
            success_count: row.try_get_unchecked(1).unwrap_or(0),
            cpu_mean: row.try_get_unchecked(2).unwrap_or(0.0),
            mem_max: row.try_get_unchecked(3).unwrap_or(0.0),
            mem_mean: row.try_get_unchecked(4).unwrap_or(0.0),
            gpu_max: row.try_get_unchecked(5).unwrap_or(0.0),
            gpu_mean: row.try_get_unchecked(6).unwrap_or(0.0),
            dur_mean: row.try_get_unchecked(7).unwrap_or(0.0),
            usage: parse_usage(usage_json.as_deref()),
        }
    }

    /// The reference's update, operation for operation, so the floats come out
    /// bit for bit the same. Fails with the unit whose usage total overflows to
    /// infinity, which JSON cannot hold (Python would write `Infinity`).
    fn fold(old: Option<Self>, sample: &ResourceSample) -> Result<Self, String> {
        let success_delta = i64::from(sample.success);
        let usage_amounts = sample.api_usage.iter().flatten();
        let Some(old) = old else {
            return Ok(Self {
                sample_count: 1,
                success_count: success_delta,
                cpu_mean: sample.cpu_percent,
                mem_max: sample.memory_mb_peak,
                mem_mean: sample.memory_mb_peak,
                gpu_max: sample.gpu_memory_mb_peak,
                gpu_mean: sample.gpu_memory_mb_peak,
                dur_mean: sample.duration_seconds,
                usage: usage_amounts
                    .map(|(unit, &amount)| Ok((unit.clone(), float_value(unit, amount)?)))
                    .collect::<Result<_, String>>()?,
            });
        };
        let n = old.sample_count + 1;
        let count = n as f64;
        let mut usage = old.usage;
        for (unit, &amount) in usage_amounts {
            let total = usage.get(unit).and_then(Value::as_f64).unwrap_or(0.0) + amount;
            usage.insert(unit.clone(), float_value(unit, total)?);
        }
        Ok(Self {
            sample_count: n,
            success_count: old.success_count + success_delta,
            cpu_mean: old.cpu_mean + (sample.cpu_percent - old.cpu_mean) / count,
            mem_mean: old.mem_mean + (sample.memory_mb_peak - old.mem_mean) / count,
            gpu_mean: old.gpu_mean + (sample.gpu_memory_mb_peak - old.gpu_mean) / count,
            dur_mean: old.dur_mean + (sample.duration_seconds - old.dur_mean) / count,
            mem_max: python_max(old.mem_max, sample.memory_mb_peak),
            gpu_max: python_max(old.gpu_max, sample.gpu_memory_mb_peak),
            usage,
        })
    }
}

/// Python's `max(a, b)` for floats: `b` only when it is strictly greater, so the
/// sign of an equal zero and a NaN in `a` are kept as Python keeps them.
fn python_max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

/// `amount` as a JSON float, or the `unit` it belongs to when it is not finite.
fn float_value(unit: &str, amount: f64) -> Result<Value, String> {
    Number::from_f64(amount)
        .map(Value::Number)
        .ok_or_else(|| unit.to_owned())
}

/// `json.dumps(totals, sort_keys=True)`.
fn usage_json(usage: BTreeMap<String, Value>) -> String {
    let sorted: Map<String, Value> = usage.into_iter().collect();
    cjm_core::python_json(&Value::Object(sorted), None)
}

/// The stored totals, or none when the text is empty or not a JSON object.
fn parse_usage(text: Option<&str>) -> BTreeMap<String, Value> {
    match text
        .filter(|text| !text.is_empty())
        .map(serde_json::from_str)
    {
        Some(Ok(Value::Object(totals))) => totals.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

fn record_from_row(row: &SqliteRow) -> EmpiricalRecord {
    let sample_count: i64 = row.try_get_unchecked(3).unwrap_or(0);
    let success_count: i64 = row.try_get_unchecked(4).unwrap_or(0);
    let last_observed: Option<String> = row.try_get_unchecked(11).unwrap_or_default();
    let usage_json: Option<String> = row.try_get_unchecked(12).unwrap_or_default();
    EmpiricalRecord {
        instance_id: row.try_get_unchecked(0).unwrap_or_default(),
        plugin_name: row.try_get_unchecked(1).unwrap_or_default(),
        config_hash: row.try_get_unchecked(2).unwrap_or_default(),
        sample_count,
        success_count,
        cpu_percent_mean: row.try_get_unchecked(5).unwrap_or(0.0),
        memory_mb_peak_max: row.try_get_unchecked(6).unwrap_or(0.0),
        memory_mb_peak_mean: row.try_get_unchecked(7).unwrap_or(0.0),
        gpu_memory_mb_peak_max: row.try_get_unchecked(8).unwrap_or(0.0),
        gpu_memory_mb_peak_mean: row.try_get_unchecked(9).unwrap_or(0.0),
        duration_seconds_mean: row.try_get_unchecked(10).unwrap_or(0.0),
        success_rate: if sample_count > 0 {
            success_count as f64 / sample_count as f64
        } else {
            0.0
        },
        last_observed: last_observed
            .as_deref()
            .and_then(isoformat::parse)
            .unwrap_or_else(SystemTime::now),
        api_usage_totals: parse_usage(usage_json.as_deref())
            .into_iter()
            .filter_map(|(unit, total)| total.as_f64().map(|total| (unit, total)))
            .collect(),
    }
}
