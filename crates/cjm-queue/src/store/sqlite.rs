//! The queue in one `SQLite` file, in WAL mode, for one host.
//!
//! Writes go to one writer task, which commits whatever has queued up in one
//! transaction (group commit): a submit, a claim or a finish resolves once its
//! transaction is committed, and many at once cost one commit. With
//! `synchronous = NORMAL` a committed transaction survives the process being
//! killed at any point (WAL); only a power loss can take the last ones. Reads
//! run on a small pool beside it. A host takes an exclusive lock on
//! `<file>.lock` for as long as it works the queue, so a second host on the
//! same file is refused, never let in to corrupt it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cjm_core::JobError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::writer::{Op, write_loop};
use super::{
    Advance, Advanced, Claimed, Finish, Inserted, Listing, NewJob, PendingRow, Recovered, Requeue,
    SequenceRow, Store, StoreFuture,
};
use crate::blob;
use crate::error::QueueError;
use crate::model::{CancelPhase, Job, JobStatus, QueueStats, from_ms};

/// A result encoded larger than this is kept in a file of its own beside the
/// database (`<file>.results/<job number>`), the row holding its name: the
/// database stays small and quick to read, whatever the jobs return.
pub const INLINE_RESULT_BYTES: usize = 64 * 1024;

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    instance TEXT NOT NULL,
    args BLOB NOT NULL,
    kwargs BLOB NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    submitted_ms INTEGER NOT NULL,
    started_ms INTEGER,
    completed_ms INTEGER,
    progress REAL NOT NULL DEFAULT 0.0,
    status_message TEXT NOT NULL DEFAULT '',
    result BLOB,
    error TEXT,
    idempotency_key TEXT,
    idempotent INTEGER NOT NULL DEFAULT 0,
    timeout_ms INTEGER,
    retry_count INTEGER NOT NULL DEFAULT 0,
    cancel_requested_ms INTEGER,
    cancel_phase TEXT,
    block_reason TEXT,
    sequence_id TEXT,
    sequence_index INTEGER,
    run_after_ms INTEGER,
    result_file TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (rank, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (seq) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (completed_ms)
    WHERE status IN ('completed', 'failed', 'cancelled');
";

/// The columns a [`Job`] is read from, in [`SqliteStore::job_from`]'s order.
macro_rules! job_columns {
    () => {
        "seq, id, instance, args, kwargs, status, priority, submitted_ms, started_ms, \
         completed_ms, progress, status_message, result, error, idempotency_key, idempotent, \
         timeout_ms, retry_count, cancel_requested_ms, cancel_phase, block_reason, \
         sequence_id, sequence_index, result_file"
    };
}

/// The queue's `SQLite` file, its writer and its readers.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// The same, for errors of writes answered after the call returned.
    shared_path: std::sync::Arc<Path>,
    writes: mpsc::UnboundedSender<Op>,
    reads: SqlitePool,
    /// Where results too large to keep inline go.
    results: PathBuf,
    /// Held while this store is open: the host lock (none for a client's).
    _lock: Option<std::fs::File>,
}

impl SqliteStore {
    /// Opens (or creates) the queue at `path` for this host, refusing it when
    /// another host holds it.
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        Self::open_as(path, true).await
    }

    /// Opens (or creates) the queue at `path` as a client beside its host
    /// (another process, `cjm-ctl jobs`): without the host lock. A client
    /// stores and reads jobs; only the host runs them and settles a dead
    /// host's, so a client never recovers anything.
    pub async fn open_client(path: &Path) -> Result<Self, QueueError> {
        Self::open_as(path, false).await
    }

    async fn open_as(path: &Path, host: bool) -> Result<Self, QueueError> {
        let path = path.to_owned();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent).map_err(|source| QueueError::Io {
                path: parent.to_owned(),
                action: "create the folder of",
                source,
            })?;
        }
        let lock = host.then(|| super::files::host_lock(&path)).transpose()?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let open = |source| QueueError::Open {
            path: path.clone(),
            source,
        };
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(open)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut writer)
            .await
            .map_err(open)?;
        sqlx::raw_sql(super::sequences::SCHEMA)
            .execute(&mut writer)
            .await
            .map_err(open)?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(open)?;
        let (ops, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx));
        Ok(Self {
            shared_path: path.as_path().into(),
            results: PathBuf::from(format!("{}.results", path.display())),
            path,
            writes: ops,
            reads,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write for the writer now (not when the future is first
    /// polled), so that writes issued together commit together.
    fn write<T: Send + 'static>(
        &self,
        action: &'static str,
        op: impl FnOnce(oneshot::Sender<Result<T, sqlx::Error>>) -> Op,
    ) -> impl Future<Output = Result<T, QueueError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.writes.send(op(tx)).is_ok();
        let path = std::sync::Arc::clone(&self.shared_path);
        async move {
            if !sent {
                return Err(QueueError::Stopped);
            }
            rx.await
                .map_err(|_| QueueError::Stopped)?
                .map_err(|source| QueueError::Sql {
                    path: path.to_path_buf(),
                    action,
                    source,
                })
        }
    }

    fn sql(&self, action: &'static str, source: sqlx::Error) -> QueueError {
        QueueError::Sql {
            path: self.path.clone(),
            action,
            source,
        }
    }

    fn damaged(&self, job: &str, reason: impl Into<String>) -> QueueError {
        QueueError::Damaged {
            path: self.path.clone(),
            job: job.to_owned(),
            reason: reason.into(),
        }
    }
}

pub(super) fn job_error_json(e: &JobError) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned())
}

impl SqliteStore {
    /// A [`Job`] from a row of `job_columns!()`.
    fn job_from(&self, row: &sqlx::sqlite::SqliteRow) -> Result<(i64, Job), QueueError> {
        let get_err = |e: sqlx::Error| self.sql("read a job", e);
        let id: String = row.try_get(1).map_err(get_err)?;
        let value = |col: usize, what: &str| -> Result<Option<cjm_proto::Value>, QueueError> {
            let bytes: Option<Vec<u8>> = row.try_get(col).map_err(get_err)?;
            bytes
                .map(|b| {
                    blob::decode(&b).map_err(|e| self.damaged(&id, format!("its {what}: {e}")))
                })
                .transpose()
        };
        let Some(cjm_proto::Value::List(args)) = value(3, "arguments")? else {
            return Err(self.damaged(&id, "its arguments are not a list"));
        };
        let Some(cjm_proto::Value::Map(kwargs)) = value(4, "keyword arguments")? else {
            return Err(self.damaged(&id, "its keyword arguments are not a map"));
        };
        let status: String = row.try_get(5).map_err(get_err)?;
        let status = JobStatus::parse(&status)
            .ok_or_else(|| self.damaged(&id, format!("its status {status:?} is unknown")))?;
        let error: Option<String> = row.try_get(13).map_err(get_err)?;
        let error = error
            .map(|e| {
                serde_json::from_str::<JobError>(&e)
                    .map_err(|err| self.damaged(&id, format!("its error record: {err}")))
            })
            .transpose()?;
        let ms = |col: usize| -> Result<Option<std::time::SystemTime>, QueueError> {
            Ok(row
                .try_get::<Option<i64>, _>(col)
                .map_err(get_err)?
                .map(from_ms))
        };
        let phase: Option<String> = row.try_get(19).map_err(get_err)?;
        let job = Job {
            plugin_instance_id: row.try_get(2).map_err(get_err)?,
            args,
            kwargs,
            status,
            priority: row.try_get(6).map_err(get_err)?,
            submitted_at: from_ms(row.try_get(7).map_err(get_err)?),
            started_at: ms(8)?,
            completed_at: ms(9)?,
            progress: row.try_get(10).map_err(get_err)?,
            status_message: row.try_get(11).map_err(get_err)?,
            result: match row.try_get::<Option<String>, _>(23).map_err(get_err)? {
                Some(file) => Some(
                    super::files::read_result(&self.results, &file)
                        .map_err(|reason| self.damaged(&id, reason))?,
                ),
                None => value(12, "result")?,
            },
            error,
            idempotency_key: row.try_get(14).map_err(get_err)?,
            idempotent: row.try_get(15).map_err(get_err)?,
            timeout: row
                .try_get::<Option<i64>, _>(16)
                .map_err(get_err)?
                .map(|t| Duration::from_millis(u64::try_from(t).unwrap_or(0))),
            retry_count: row.try_get(17).map_err(get_err)?,
            cancel_requested_at: ms(18)?,
            cancel_phase: phase.as_deref().and_then(CancelPhase::parse),
            block_reason: row.try_get(20).map_err(get_err)?,
            sequence_id: row.try_get(21).map_err(get_err)?,
            sequence_index: row.try_get(22).map_err(get_err)?,
            last_resource_snapshot: None,
            id,
        };
        Ok((row.try_get(0).map_err(get_err)?, job))
    }
}

impl Store for SqliteStore {
    fn insert(&self, job: NewJob) -> StoreFuture<'static, Inserted> {
        Box::pin(self.write("store a job", |tx| Op::Insert(job, tx)))
    }

    fn started(&self, seq: i64, at_ms: i64) -> StoreFuture<'static, ()> {
        Box::pin(self.write("record a job's start", move |tx| {
            Op::Started(seq, at_ms, tx)
        }))
    }

    fn fetch(&self, seqs: Vec<i64>) -> StoreFuture<'_, Vec<(i64, Claimed)>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT seq, id, instance, args, kwargs, timeout_ms, sequence_id, sequence_index, \
                 retry_count, rank FROM jobs WHERE status = 'pending' AND seq IN ({})",
                vec!["?"; seqs.len()].join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for seq in &seqs {
                q = q.bind(*seq);
            }
            let rows = q
                .fetch_all(&self.reads)
                .await
                .map_err(|e| self.sql("read jobs to run", e))?;
            rows.iter()
                .map(|row| {
                    let sequence_id: Option<String> = row.try_get(6)?;
                    let sequence_index: Option<i64> = row.try_get(7)?;
                    Ok((
                        row.try_get(0)?,
                        Claimed {
                            id: row.try_get(1)?,
                            instance: row.try_get(2)?,
                            args: row.try_get(3)?,
                            kwargs: row.try_get(4)?,
                            timeout_ms: row.try_get(5)?,
                            sequence: sequence_id.zip(sequence_index),
                            retry_count: row.try_get(8)?,
                            rank: row.try_get(9)?,
                        },
                    ))
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(|e| self.sql("read jobs to run", e))
        })
    }

    fn finish(&self, mut finish: Finish) -> StoreFuture<'static, ()> {
        let mut file = None;
        if let Some(bytes) = finish
            .result
            .as_ref()
            .filter(|b| b.len() > INLINE_RESULT_BYTES)
        {
            match super::files::keep_result(&self.results, finish.seq, bytes) {
                Ok(name) => {
                    file = Some(name);
                    finish.result = None;
                }
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            }
        }
        Box::pin(self.write("record how a job ended", |tx| Op::Finish(finish, file, tx)))
    }

    fn requeue(&self, requeue: Requeue) -> StoreFuture<'static, ()> {
        Box::pin(self.write("put a failed job back to run again", |tx| {
            Op::Requeue(requeue, tx)
        }))
    }

    fn block_reason(&self, seq: i64, reason: Option<String>) -> StoreFuture<'static, ()> {
        Box::pin(self.write("record why a job waits", move |tx| {
            Op::BlockReason(seq, reason, tx)
        }))
    }

    fn progress(&self, seq: i64, progress: f64, message: String) -> StoreFuture<'static, ()> {
        Box::pin(self.write("record a job's progress", move |tx| {
            Op::Progress(seq, progress, message, tx)
        }))
    }

    fn cancel_phase(&self, seq: i64, phase: CancelPhase) -> StoreFuture<'static, ()> {
        Box::pin(self.write("record a cancel's phase", move |tx| {
            Op::CancelPhase(seq, phase.as_str(), tx)
        }))
    }

    fn cancel_pending(&self, seq: i64, at_ms: i64, error: JobError) -> StoreFuture<'static, bool> {
        let error = job_error_json(&error);
        Box::pin(self.write("cancel a job", move |tx| {
            Op::CancelPending(seq, at_ms, error, tx)
        }))
    }

    fn cancel_requested(&self, seq: i64, at_ms: i64) -> StoreFuture<'static, ()> {
        Box::pin(self.write("record a cancel", move |tx| {
            Op::CancelRequested(seq, at_ms, tx)
        }))
    }

    fn reprioritize(&self, seq: i64, priority: i64, rank: i64) -> StoreFuture<'static, bool> {
        Box::pin(self.write("change a job's priority", move |tx| {
            Op::Reprioritize(seq, priority, rank, tx)
        }))
    }

    fn recover(
        &self,
        at_ms: i64,
        started: Vec<i64>,
        error: JobError,
    ) -> StoreFuture<'static, Vec<Recovered>> {
        let error = job_error_json(&error);
        Box::pin(
            self.write("recover the jobs a dead host left running", move |tx| {
                Op::Recover(at_ms, started, error, tx)
            }),
        )
    }

    fn pending_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<PendingRow>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, rank, instance, run_after_ms FROM jobs \
                 WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.reads)
            .await
            .map_err(|e| self.sql("list pending jobs", e))?;
            rows.iter()
                .map(|r| {
                    Ok(PendingRow {
                        seq: r.try_get(0)?,
                        rank: r.try_get(1)?,
                        instance: r.try_get(2)?,
                        run_after_ms: r.try_get(3)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(|e| self.sql("list pending jobs", e))
        })
    }

    fn job(&self, id: &str) -> StoreFuture<'_, Option<(i64, Job)>> {
        let id = id.to_owned();
        Box::pin(async move {
            let row = sqlx::query(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE id = ?"
            ))
            .bind(&id)
            .fetch_optional(&self.reads)
            .await
            .map_err(|e| self.sql("read a job", e))?;
            row.map(|r| self.job_from(&r)).transpose()
        })
    }

    fn list(&self, listing: Listing) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(async move {
            let query = match listing {
                Listing::Pending => sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE status = 'pending' ORDER BY rank, seq"
                )),
                Listing::Running => sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE status = 'running' ORDER BY seq"
                )),
                Listing::History(limit) => sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
                     ORDER BY completed_ms DESC, seq DESC LIMIT ?"
                ))
                .bind(limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))),
                Listing::Sequence(id) => sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE sequence_id = ? ORDER BY sequence_index, seq"
                ))
                .bind(id),
            };
            let rows = query
                .fetch_all(&self.reads)
                .await
                .map_err(|e| self.sql("list jobs", e))?;
            rows.iter()
                .map(|r| self.job_from(r).map(|(_, j)| j))
                .collect()
        })
    }

    fn stats(&self) -> StoreFuture<'_, QueueStats> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT status, COUNT(*) FROM jobs GROUP BY status")
                .fetch_all(&self.reads)
                .await
                .map_err(|e| self.sql("count jobs", e))?;
            let mut stats = QueueStats::default();
            for r in rows {
                let name: String = r.try_get(0).map_err(|e| self.sql("count jobs", e))?;
                let n: i64 = r.try_get(1).map_err(|e| self.sql("count jobs", e))?;
                let n = u64::try_from(n).unwrap_or(0);
                match JobStatus::parse(&name) {
                    Some(JobStatus::Pending) => stats.total_pending = n,
                    Some(JobStatus::Running) => stats.total_running = n,
                    Some(JobStatus::Completed) => stats.total_completed = n,
                    Some(JobStatus::Failed) => stats.total_failed = n,
                    Some(JobStatus::Cancelled) => stats.total_cancelled = n,
                    None => {}
                }
            }
            Ok(stats)
        })
    }

    fn insert_sequence(
        &self,
        sequence: SequenceRow,
        first: Option<NewJob>,
    ) -> StoreFuture<'static, Option<i64>> {
        Box::pin(self.write("store a sequence", |tx| {
            Op::InsertSequence(sequence, first, tx)
        }))
    }

    fn advance_sequence(&self, advance: Advance) -> StoreFuture<'static, Advanced> {
        Box::pin(self.write("move a sequence to its next step", |tx| {
            Op::Advance(advance, tx)
        }))
    }

    fn cancel_sequence(&self, id: &str, at_ms: i64) -> StoreFuture<'static, bool> {
        let id = id.to_owned();
        Box::pin(self.write("cancel a sequence", move |tx| {
            Op::CancelSequence(id, at_ms, tx)
        }))
    }

    fn sequence(&self, id: &str) -> StoreFuture<'_, Option<SequenceRow>> {
        let id = id.to_owned();
        Box::pin(async move {
            let sql = format!(
                "SELECT {} FROM sequences WHERE id = ?",
                super::sequences::COLUMNS
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&id)
                .fetch_optional(&self.reads)
                .await
                .map_err(|e| self.sql("read a sequence", e))?;
            row.map(|r| super::sequences::row(&r))
                .transpose()
                .map_err(|e| self.sql("read a sequence", e))
        })
    }

    fn running_sequences(&self) -> StoreFuture<'_, Vec<SequenceRow>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {} FROM sequences WHERE status = 'running' ORDER BY submitted_ms",
                super::sequences::COLUMNS
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.reads)
                .await
                .map_err(|e| self.sql("list running sequences", e))?;
            rows.iter()
                .map(super::sequences::row)
                .collect::<Result<_, _>>()
                .map_err(|e| self.sql("list running sequences", e))
        })
    }

    fn flush(&self) -> StoreFuture<'static, ()> {
        // The writer commits in order: an empty write's answer comes after
        // every earlier one's commit.
        Box::pin(self.write("flush the queue's writes", Op::Flush))
    }

    fn prune(&self, keep: usize, before_ms: Option<i64>) -> StoreFuture<'static, u64> {
        let pruned = self.write("prune the history", move |tx| {
            Op::Prune(keep, before_ms, tx)
        });
        let results = self.results.clone();
        Box::pin(async move {
            let (n, files) = pruned.await?;
            for name in files {
                let _ = fs_err::remove_file(results.join(name));
            }
            Ok(n)
        })
    }
}
