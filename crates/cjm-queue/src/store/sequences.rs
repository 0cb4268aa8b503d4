//! Sequences in the `SQLite` store: their table, and the writes that keep a
//! sequence and its step's job in one transaction (a sequence is inserted
//! with its first job, and moved to its next step with that step's job), so
//! a host that dies between steps leaves a sequence whose current job has
//! ended, which the next host advances.

use sqlx::{Row, SqliteConnection};

use super::{Advance, Advanced, NewJob, SequenceRow};
use crate::model::JobStatus;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sequences (
    id TEXT PRIMARY KEY,
    steps BLOB NOT NULL,
    fail_fast INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    current_index INTEGER NOT NULL DEFAULT 0,
    current_job_id TEXT,
    status TEXT NOT NULL,
    submitted_ms INTEGER NOT NULL,
    completed_ms INTEGER
);
CREATE INDEX IF NOT EXISTS sequences_running ON sequences (submitted_ms)
    WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_sequence ON jobs (sequence_id, sequence_index)
    WHERE sequence_id IS NOT NULL;
";

/// The columns a [`SequenceRow`] is read from, in [`row`]'s order.
pub(super) const COLUMNS: &str = "id, steps, fail_fast, priority, current_index, current_job_id, \
                                  status, submitted_ms, completed_ms";

/// A [`SequenceRow`] from a row of [`COLUMNS`].
pub(super) fn row(r: &sqlx::sqlite::SqliteRow) -> Result<SequenceRow, sqlx::Error> {
    let status: String = r.try_get(6)?;
    Ok(SequenceRow {
        id: r.try_get(0)?,
        steps: r.try_get(1)?,
        fail_fast: r.try_get(2)?,
        priority: r.try_get(3)?,
        current_index: r.try_get(4)?,
        current_job_id: r.try_get(5)?,
        status: JobStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Protocol(format!("a sequence's status {status:?} is unknown"))
        })?,
        submitted_ms: r.try_get(7)?,
        completed_ms: r.try_get(8)?,
    })
}

/// Inserts one job (a sequence's step: no idempotency key); its number.
async fn insert_job(conn: &mut SqliteConnection, job: &NewJob) -> Result<i64, sqlx::Error> {
    let (sequence_id, sequence_index) = job.sequence.clone().unzip();
    sqlx::query(
        "INSERT INTO jobs (id, instance, args, kwargs, status, priority, rank, submitted_ms, \
         idempotent, timeout_ms, sequence_id, sequence_index) \
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(&job.id)
    .bind(&job.instance)
    .bind(&job.args)
    .bind(&job.kwargs)
    .bind(job.priority)
    .bind(job.rank)
    .bind(job.submitted_ms)
    .bind(job.idempotent)
    .bind(job.timeout_ms)
    .bind(sequence_id)
    .bind(sequence_index)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)
}

pub(super) async fn insert(
    conn: &mut SqliteConnection,
    s: &SequenceRow,
    first: Option<&NewJob>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO sequences (id, steps, fail_fast, priority, current_index, current_job_id, \
         status, submitted_ms, completed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&s.id)
    .bind(&s.steps)
    .bind(s.fail_fast)
    .bind(s.priority)
    .bind(s.current_index)
    .bind(&s.current_job_id)
    .bind(s.status.as_str())
    .bind(s.submitted_ms)
    .bind(s.completed_ms)
    .execute(&mut *conn)
    .await?;
    match first {
        Some(job) => Ok(Some(insert_job(conn, job).await?)),
        None => Ok(None),
    }
}

pub(super) async fn advance(
    conn: &mut SqliteConnection,
    a: &Advance,
) -> Result<Advanced, sqlx::Error> {
    let next_index = a
        .next
        .as_ref()
        .and_then(|j| j.sequence.as_ref())
        .map(|s| s.1);
    let moved = sqlx::query(
        "UPDATE sequences SET current_index = COALESCE(?, current_index), current_job_id = ?, \
         status = ?, completed_ms = ? WHERE id = ? AND status = 'running' AND current_index = ?",
    )
    .bind(next_index)
    .bind(a.next.as_ref().map(|j| j.id.clone()))
    .bind(a.status.as_str())
    .bind((a.status != JobStatus::Running).then_some(a.at_ms))
    .bind(&a.id)
    .bind(a.from)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() == 0 {
        // Cancelled meanwhile: it ends now that its step has.
        sqlx::query(
            "UPDATE sequences SET completed_ms = ?, current_job_id = NULL \
             WHERE id = ? AND status = 'cancelled' AND completed_ms IS NULL",
        )
        .bind(a.at_ms)
        .bind(&a.id)
        .execute(&mut *conn)
        .await?;
        return Ok(Advanced::Halted);
    }
    match &a.next {
        Some(job) => Ok(Advanced::Next(insert_job(conn, job).await?)),
        None => Ok(Advanced::Ended),
    }
}

pub(super) async fn cancel(
    conn: &mut SqliteConnection,
    id: &str,
    at_ms: i64,
) -> Result<bool, sqlx::Error> {
    // It ends once its current step has; one between steps (its step's job
    // ended) ends now.
    let done = sqlx::query(
        "UPDATE sequences SET status = 'cancelled', completed_ms = CASE WHEN current_job_id IS NULL \
         OR current_job_id IN (SELECT id FROM jobs WHERE status IN ('completed', 'failed', \
         'cancelled')) THEN ? END WHERE id = ? AND status = 'running'",
    )
    .bind(at_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
