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

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cjm_core::JobError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{
    Claimed, Finish, Inserted, Listing, NewJob, PendingRow, Recovered, Store, StoreFuture,
};
use crate::blob;
use crate::error::QueueError;
use crate::model::{CancelPhase, Job, JobStatus, QueueStats, from_ms};

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The most writes one transaction takes.
const BATCH: usize = 512;

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
    idempotency_key TEXT UNIQUE,
    idempotent INTEGER NOT NULL DEFAULT 0,
    timeout_ms INTEGER,
    retry_count INTEGER NOT NULL DEFAULT 0,
    cancel_requested_ms INTEGER,
    cancel_phase TEXT,
    block_reason TEXT,
    sequence_id TEXT,
    sequence_index INTEGER
);
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
         sequence_id, sequence_index"
    };
}

/// One write and where its answer goes.
enum Op {
    Insert(NewJob, oneshot::Sender<Result<Inserted, sqlx::Error>>),
    Claim(
        i64,
        i64,
        oneshot::Sender<Result<Option<Claimed>, sqlx::Error>>,
    ),
    Finish(Finish, oneshot::Sender<Result<(), sqlx::Error>>),
    CancelPending(i64, i64, String, oneshot::Sender<Result<bool, sqlx::Error>>),
    CancelRequested(i64, i64, oneshot::Sender<Result<(), sqlx::Error>>),
    Reprioritize(i64, i64, i64, oneshot::Sender<Result<bool, sqlx::Error>>),
    Recover(
        i64,
        String,
        oneshot::Sender<Result<Vec<Recovered>, sqlx::Error>>,
    ),
    Prune(
        usize,
        Option<i64>,
        oneshot::Sender<Result<u64, sqlx::Error>>,
    ),
}

/// The queue's `SQLite` file, its writer and its readers.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::UnboundedSender<Op>,
    reads: SqlitePool,
    /// Held while this store is open: the host lock.
    _lock: std::fs::File,
}

impl SqliteStore {
    /// Opens (or creates) the queue at `path` for this host, refusing it when
    /// another host holds it.
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        let path = path.to_owned();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent).map_err(|source| QueueError::Io {
                path: parent.to_owned(),
                action: "create the folder of",
                source,
            })?;
        }
        let lock = host_lock(&path)?;
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
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(open)?;
        let (ops, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx));
        Ok(Self {
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
    ) -> impl Future<Output = Result<T, QueueError>> + Send + '_ {
        let (tx, rx) = oneshot::channel();
        let sent = self.writes.send(op(tx)).is_ok();
        async move {
            if !sent {
                return Err(QueueError::Stopped);
            }
            rx.await
                .map_err(|_| QueueError::Stopped)?
                .map_err(|source| self.sql(action, source))
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

/// Takes `<path>.lock` for this host, or says who holds it.
fn host_lock(path: &Path) -> Result<std::fs::File, QueueError> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let io = |action, source| QueueError::Io {
        path: lock_path.clone(),
        action,
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io("open", e))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(QueueError::Busy {
                path: path.to_owned(),
                holder: if holder.trim().is_empty() {
                    "a process that has not said which".to_owned()
                } else {
                    holder.trim().to_owned()
                },
            });
        }
        return Err(io("lock", err));
    }
    file.set_len(0).map_err(|e| io("write", e))?;
    file.rewind().map_err(|e| io("write", e))?;
    writeln!(file, "pid {}", std::process::id()).map_err(|e| io("write", e))?;
    Ok(file)
}

/// The writer: takes what has queued up, runs it in one transaction, answers.
async fn write_loop(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let outcome = run_batch(&mut conn, &mut batch).await;
        if let Err(e) = outcome {
            tracing::warn!("a job queue transaction failed and was rolled back: {e}");
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            for op in batch.drain(..) {
                fail(op, &e);
            }
        }
    }
    let _ = conn.close().await;
}

/// Runs `batch` in one transaction, answering each op once it commits. A lone
/// op runs as its own statement (`SQLite` commits it alone), sparing two round
/// trips to the connection's thread; the ops that run several statements
/// (an insert that finds its key taken, a recovery, a prune) stay atomic
/// because each takes the write lock with its first statement and the writer
/// is the only writer.
async fn run_batch(conn: &mut SqliteConnection, batch: &mut Vec<Op>) -> Result<(), sqlx::Error> {
    if batch.len() == 1 && matches!(batch[0], Op::Claim(..) | Op::Finish(..)) {
        let op = batch.pop().expect("one op");
        let answer = apply(conn, op).await?;
        answer();
        return Ok(());
    }
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut answers: Vec<Box<dyn FnOnce() + Send>> = Vec::with_capacity(batch.len());
    for op in batch.drain(..) {
        answers.push(apply(conn, op).await?);
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    for answer in answers {
        answer();
    }
    Ok(())
}

/// Fails `op` with `e` (its transaction was rolled back).
fn fail(op: Op, e: &sqlx::Error) {
    let err = || sqlx::Error::Protocol(format!("the transaction was rolled back: {e}"));
    match op {
        Op::Insert(_, tx) => drop(tx.send(Err(err()))),
        Op::Claim(_, _, tx) => drop(tx.send(Err(err()))),
        Op::Finish(_, tx) | Op::CancelRequested(_, _, tx) => drop(tx.send(Err(err()))),
        Op::CancelPending(_, _, _, tx) | Op::Reprioritize(_, _, _, tx) => {
            drop(tx.send(Err(err())));
        }
        Op::Recover(_, _, tx) => drop(tx.send(Err(err()))),
        Op::Prune(_, _, tx) => drop(tx.send(Err(err()))),
    }
}

/// Applies one op inside the open transaction; returns how to answer it once
/// committed. An error fails the whole batch.
async fn apply(
    conn: &mut SqliteConnection,
    op: Op,
) -> Result<Box<dyn FnOnce() + Send>, sqlx::Error> {
    fn answer<T: Send + 'static>(
        tx: oneshot::Sender<Result<T, sqlx::Error>>,
        v: T,
    ) -> Box<dyn FnOnce() + Send> {
        Box::new(move || drop(tx.send(Ok(v))))
    }
    Ok(match op {
        Op::Insert(job, tx) => answer(tx, insert(conn, job).await?),
        Op::Claim(seq, at, tx) => answer(tx, claim(conn, seq, at).await?),
        Op::Finish(f, tx) => {
            let error = f.error.as_ref().map(job_error_json);
            sqlx::query(
                "UPDATE jobs SET status = ?, completed_ms = ?, result = ?, error = ?, \
                 progress = CASE WHEN ? = 'completed' THEN 1.0 ELSE progress END, \
                 cancel_phase = CASE WHEN ? = 'cancelled' THEN 'completed' ELSE cancel_phase END \
                 WHERE seq = ?",
            )
            .bind(f.status.as_str())
            .bind(f.at_ms)
            .bind(f.result)
            .bind(error)
            .bind(f.status.as_str())
            .bind(f.status.as_str())
            .bind(f.seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, ())
        }
        Op::CancelPending(seq, at, error, tx) => {
            let done = sqlx::query(
                "UPDATE jobs SET status = 'cancelled', completed_ms = ?, cancel_requested_ms = ?, \
                 cancel_phase = 'completed', error = ? WHERE seq = ? AND status = 'pending'",
            )
            .bind(at)
            .bind(at)
            .bind(error)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, done.rows_affected() == 1)
        }
        Op::CancelRequested(seq, at, tx) => {
            sqlx::query(
                "UPDATE jobs SET cancel_requested_ms = COALESCE(cancel_requested_ms, ?), \
                 cancel_phase = 'cooperative' WHERE seq = ? AND status = 'running'",
            )
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, ())
        }
        Op::Reprioritize(seq, priority, rank, tx) => {
            let done = sqlx::query(
                "UPDATE jobs SET priority = ?, rank = ? WHERE seq = ? AND status = 'pending'",
            )
            .bind(priority)
            .bind(rank)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, done.rows_affected() == 1)
        }
        Op::Recover(at, error, tx) => answer(tx, recover(conn, at, &error).await?),
        Op::Prune(keep, before, tx) => {
            let by_count = sqlx::query(
                "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND seq NOT IN \
                 (SELECT seq FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
                  ORDER BY completed_ms DESC, seq DESC LIMIT ?)",
            )
            .bind(i64::try_from(keep).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await?
            .rows_affected();
            let by_age = match before {
                Some(ms) => sqlx::query(
                    "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
                     AND completed_ms < ?",
                )
                .bind(ms)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
                None => 0,
            };
            answer(tx, by_count + by_age)
        }
    })
}

async fn insert(conn: &mut SqliteConnection, job: NewJob) -> Result<Inserted, sqlx::Error> {
    let (sequence_id, sequence_index) = job.sequence.clone().unzip();
    let row = sqlx::query(
        "INSERT INTO jobs (id, instance, args, kwargs, status, priority, rank, submitted_ms, \
         idempotency_key, idempotent, timeout_ms, sequence_id, sequence_index) \
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq",
    )
    .bind(&job.id)
    .bind(&job.instance)
    .bind(&job.args)
    .bind(&job.kwargs)
    .bind(job.priority)
    .bind(job.rank)
    .bind(job.submitted_ms)
    .bind(&job.idempotency_key)
    .bind(job.idempotent)
    .bind(job.timeout_ms)
    .bind(sequence_id)
    .bind(sequence_index)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(Inserted {
            seq: row.try_get(0)?,
            id: job.id,
            existed: false,
        });
    }
    let first = sqlx::query("SELECT seq, id FROM jobs WHERE idempotency_key = ?")
        .bind(&job.idempotency_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Inserted {
        seq: first.try_get(0)?,
        id: first.try_get(1)?,
        existed: true,
    })
}

async fn claim(
    conn: &mut SqliteConnection,
    seq: i64,
    at: i64,
) -> Result<Option<Claimed>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE jobs SET status = 'running', started_ms = ?, block_reason = NULL \
         WHERE seq = ? AND status = 'pending' \
         RETURNING id, instance, args, kwargs, timeout_ms, sequence_id, sequence_index",
    )
    .bind(at)
    .bind(seq)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let sequence_id: Option<String> = row.try_get(5)?;
    let sequence_index: Option<i64> = row.try_get(6)?;
    Ok(Some(Claimed {
        id: row.try_get(0)?,
        instance: row.try_get(1)?,
        args: row.try_get(2)?,
        kwargs: row.try_get(3)?,
        timeout_ms: row.try_get(4)?,
        sequence: sequence_id.zip(sequence_index),
    }))
}

async fn recover(
    conn: &mut SqliteConnection,
    at: i64,
    error: &str,
) -> Result<Vec<Recovered>, sqlx::Error> {
    let requeued = sqlx::query(
        "UPDATE jobs SET status = 'pending', started_ms = NULL, retry_count = retry_count + 1, \
         status_message = 're-queued: its host died while it ran' \
         WHERE status = 'running' AND idempotent = 1 RETURNING seq, id, instance",
    )
    .fetch_all(&mut *conn)
    .await?;
    let failed = sqlx::query(
        "UPDATE jobs SET status = 'failed', completed_ms = ?, error = ?, \
         status_message = 'failed: its host died while it ran' \
         WHERE status = 'running' RETURNING seq, id, instance",
    )
    .bind(at)
    .bind(error)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(requeued.len() + failed.len());
    for (rows, status) in [(requeued, JobStatus::Pending), (failed, JobStatus::Failed)] {
        for row in rows {
            out.push(Recovered {
                seq: row.try_get(0)?,
                id: row.try_get(1)?,
                instance: row.try_get(2)?,
                status,
            });
        }
    }
    Ok(out)
}

fn job_error_json(e: &JobError) -> String {
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
            result: value(12, "result")?,
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
            id,
        };
        Ok((row.try_get(0).map_err(get_err)?, job))
    }
}

impl Store for SqliteStore {
    fn insert(&self, job: NewJob) -> StoreFuture<'_, Inserted> {
        Box::pin(self.write("store a job", |tx| Op::Insert(job, tx)))
    }

    fn claim(&self, seq: i64, at_ms: i64) -> StoreFuture<'_, Option<Claimed>> {
        Box::pin(self.write("start a job", move |tx| Op::Claim(seq, at_ms, tx)))
    }

    fn finish(&self, finish: Finish) -> StoreFuture<'_, ()> {
        Box::pin(self.write("record how a job ended", |tx| Op::Finish(finish, tx)))
    }

    fn cancel_pending(&self, seq: i64, at_ms: i64, error: JobError) -> StoreFuture<'_, bool> {
        let error = job_error_json(&error);
        Box::pin(self.write("cancel a job", move |tx| {
            Op::CancelPending(seq, at_ms, error, tx)
        }))
    }

    fn cancel_requested(&self, seq: i64, at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.write("record a cancel", move |tx| {
            Op::CancelRequested(seq, at_ms, tx)
        }))
    }

    fn reprioritize(&self, seq: i64, priority: i64, rank: i64) -> StoreFuture<'_, bool> {
        Box::pin(self.write("change a job's priority", move |tx| {
            Op::Reprioritize(seq, priority, rank, tx)
        }))
    }

    fn recover(&self, at_ms: i64, error: JobError) -> StoreFuture<'_, Vec<Recovered>> {
        let error = job_error_json(&error);
        Box::pin(
            self.write("recover the jobs a dead host left running", move |tx| {
                Op::Recover(at_ms, error, tx)
            }),
        )
    }

    fn pending_after(&self, after: i64) -> StoreFuture<'_, Vec<PendingRow>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, rank, instance FROM jobs WHERE status = 'pending' AND seq > ? ORDER BY seq",
            )
            .bind(after)
            .fetch_all(&self.reads)
            .await
            .map_err(|e| self.sql("list pending jobs", e))?;
            rows.iter()
                .map(|r| {
                    Ok(PendingRow {
                        seq: r.try_get(0)?,
                        rank: r.try_get(1)?,
                        instance: r.try_get(2)?,
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

    fn prune(&self, keep: usize, before_ms: Option<i64>) -> StoreFuture<'_, u64> {
        Box::pin(self.write("prune the history", move |tx| {
            Op::Prune(keep, before_ms, tx)
        }))
    }
}
