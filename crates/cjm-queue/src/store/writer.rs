//! The `SQLite` store's one writer: it takes every write that has queued up,
//! runs them in one transaction and answers each once the transaction is
//! committed. A statement costs a round trip to the connection's thread, so
//! the inserts, the starts and the finishes of a batch each go as multi-row
//! statements: inserts first (a job may start in the batch that stores it),
//! then the other writes in the order they came, then the starts, then the
//! finishes. Starts and finishes commute: a start only moves a pending job,
//! and a finish fills in a start time it never saw.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{Advance, Advanced, Finish, Inserted, NewJob, Recovered, Requeue, SequenceRow};
use crate::model::JobStatus;

/// The most writes one transaction takes.
const BATCH: usize = 1024;

/// The most rows one multi-row statement carries (`SQLite` allows 32,766
/// parameters; an insert binds 12 per row).
const ROWS: usize = 200;

type Reply<T> = oneshot::Sender<Result<T, sqlx::Error>>;

/// One write and where its answer goes.
pub(super) enum Op {
    Insert(NewJob, Reply<Inserted>),
    Started(i64, i64, Reply<()>),
    /// A finish, and the file its result was kept in.
    Finish(Finish, Option<String>, Reply<()>),
    Requeue(Requeue, Reply<()>),
    CancelPhase(i64, &'static str, Reply<()>),
    BlockReason(i64, Option<String>, Reply<()>),
    Progress(i64, f64, String, Reply<()>),
    InsertSequence(SequenceRow, Option<NewJob>, Reply<Option<i64>>),
    Advance(Advance, Reply<Advanced>),
    CancelSequence(String, i64, Reply<bool>),
    Flush(Reply<()>),
    CancelPending(i64, i64, String, Reply<bool>),
    CancelRequested(i64, i64, Reply<()>),
    Reprioritize(i64, i64, i64, Reply<bool>),
    Recover(i64, Vec<i64>, String, Reply<Vec<Recovered>>),
    /// Answered with how many went, and the result files to remove.
    Prune(usize, Option<i64>, Reply<(u64, Vec<String>)>),
}

impl Op {
    /// Ops of one kind that run as one statement when they come in a row.
    fn kind(&self) -> u8 {
        match self {
            Self::Insert(..) => 1,
            Self::Started(..) => 2,
            Self::Finish(..) => 3,
            Self::Requeue(..) => 4,
            _ => 0,
        }
    }

    /// Fails it with `e` (its transaction was rolled back).
    fn fail(self, e: &sqlx::Error) {
        let err = || sqlx::Error::Protocol(format!("the transaction was rolled back: {e}"));
        match self {
            Self::Insert(_, tx) => drop(tx.send(Err(err()))),
            Self::Started(_, _, tx)
            | Self::Finish(_, _, tx)
            | Self::Requeue(_, tx)
            | Self::CancelPhase(_, _, tx)
            | Self::BlockReason(_, _, tx)
            | Self::Progress(_, _, _, tx)
            | Self::Flush(tx)
            | Self::CancelRequested(_, _, tx) => {
                drop(tx.send(Err(err())));
            }
            Self::CancelPending(_, _, _, tx) | Self::Reprioritize(_, _, _, tx) => {
                drop(tx.send(Err(err())));
            }
            Self::Recover(_, _, _, tx) => drop(tx.send(Err(err()))),
            Self::InsertSequence(_, _, tx) => drop(tx.send(Err(err()))),
            Self::Advance(_, tx) => drop(tx.send(Err(err()))),
            Self::CancelSequence(_, _, tx) => drop(tx.send(Err(err()))),
            Self::Prune(_, _, tx) => drop(tx.send(Err(err()))),
        }
    }
}

/// An answer to send once the transaction is committed.
type Answer = Box<dyn FnOnce() + Send>;

fn answer<T: Send + 'static>(tx: Reply<T>, v: T) -> Answer {
    Box::new(move || drop(tx.send(Ok(v))))
}

/// While writes keep coming, how long the writer lets them gather before a
/// transaction: one commit then carries many jobs, and the writer's share of
/// the machine stays small. A write into a quiet queue is not held.
const GATHER: Duration = Duration::from_millis(1);

/// A batch this small, right after another, waits [`GATHER`] for company.
const SMALL: usize = 32;

/// The writer: takes what has queued up, runs it in one transaction, answers.
pub(super) async fn write_loop(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last = None::<Instant>;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < SMALL && last.is_some_and(|t: Instant| t.elapsed() < GATHER * 2) {
            tokio::time::sleep(GATHER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
        }
        last = Some(Instant::now());
        if let Err(e) = run_batch(&mut conn, &mut batch).await {
            tracing::warn!("a job queue transaction failed and was rolled back: {e}");
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            for op in batch.drain(..) {
                op.fail(&e);
            }
        }
    }
    let _ = conn.close().await;
}

/// Runs `batch` in one transaction, answering each op once it commits.
async fn run_batch(conn: &mut SqliteConnection, batch: &mut Vec<Op>) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let (mut inserts, mut others, mut starts, mut finishes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut requeues = Vec::new();
    for op in batch.drain(..) {
        match op.kind() {
            1 => inserts.push(op),
            2 => starts.push(op),
            3 => finishes.push(op),
            4 => requeues.push(op),
            _ => others.push(op),
        }
    }
    while !inserts.is_empty() {
        let rest = inserts.split_off(inserts.len().min(ROWS));
        insert_rows(conn, std::mem::replace(&mut inserts, rest), &mut answers).await?;
    }
    for op in others {
        answers.push(apply(conn, op).await?);
    }
    // A job that starts and ends in this batch needs only its end written.
    let ending: std::collections::HashSet<i64> = finishes
        .iter()
        .chain(&requeues)
        .filter_map(|op| match op {
            Op::Finish(f, _, _) => Some(f.seq),
            Op::Requeue(r, _) => Some(r.seq),
            _ => None,
        })
        .collect();
    starts.retain(|op| !matches!(op, Op::Started(seq, _, _) if ending.contains(seq)));
    while !starts.is_empty() {
        let rest = starts.split_off(starts.len().min(ROWS));
        started_rows(conn, std::mem::replace(&mut starts, rest), &mut answers).await?;
    }
    while !finishes.is_empty() {
        let rest = finishes.split_off(finishes.len().min(ROWS));
        finish_rows(conn, std::mem::replace(&mut finishes, rest), &mut answers).await?;
    }
    // After the starts: a retry's job is pending again, which a start of
    // its last try, applied later, would undo.
    for op in requeues {
        answers.push(apply(conn, op).await?);
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    for a in answers {
        a();
    }
    Ok(())
}

/// `n` rows of `width` placeholders: `(?, ?), (?, ?)`.
fn placeholders(n: usize, width: usize) -> String {
    rows(n, &format!("({})", vec!["?"; width].join(", ")))
}

/// `n` copies of `row`, comma-separated.
fn rows(n: usize, row: &str) -> String {
    vec![row; n].join(", ")
}

async fn insert_rows(
    conn: &mut SqliteConnection,
    run: Vec<Op>,
    answers: &mut Vec<Answer>,
) -> Result<(), sqlx::Error> {
    let jobs: Vec<(NewJob, Reply<Inserted>)> = run
        .into_iter()
        .filter_map(|op| match op {
            Op::Insert(job, tx) => Some((job, tx)),
            _ => None,
        })
        .collect();
    let sql = format!(
        "INSERT INTO jobs (id, instance, args, kwargs, status, priority, rank, submitted_ms, \
         idempotency_key, idempotent, timeout_ms, sequence_id, sequence_index) VALUES {} \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING seq, id",
        rows(
            jobs.len(),
            "(?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for (job, _) in &jobs {
        let (sequence_id, sequence_index) = job.sequence.clone().unzip();
        q = q
            .bind(job.id.clone())
            .bind(job.instance.clone())
            .bind(job.args.clone())
            .bind(job.kwargs.clone())
            .bind(job.priority)
            .bind(job.rank)
            .bind(job.submitted_ms)
            .bind(job.idempotency_key.clone())
            .bind(job.idempotent)
            .bind(job.timeout_ms)
            .bind(sequence_id)
            .bind(sequence_index);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut inserted = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        let seq: i64 = r.try_get(0)?;
        let id: String = r.try_get(1)?;
        inserted.insert(id, seq);
    }
    for (job, tx) in jobs {
        if let Some(&seq) = inserted.get(&job.id) {
            answers.push(answer(
                tx,
                Inserted {
                    seq,
                    id: job.id,
                    existed: false,
                },
            ));
            continue;
        }
        // Its key named a job submitted before.
        let first = sqlx::query("SELECT seq, id FROM jobs WHERE idempotency_key = ?")
            .bind(&job.idempotency_key)
            .fetch_one(&mut *conn)
            .await?;
        answers.push(answer(
            tx,
            Inserted {
                seq: first.try_get(0)?,
                id: first.try_get(1)?,
                existed: true,
            },
        ));
    }
    Ok(())
}

async fn started_rows(
    conn: &mut SqliteConnection,
    run: Vec<Op>,
    answers: &mut Vec<Answer>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = 'running', started_ms = f.column2 \
         FROM (VALUES {}) AS f WHERE jobs.seq = f.column1 AND jobs.status = 'pending'",
        placeholders(run.len(), 2)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for op in &run {
        if let Op::Started(seq, at, _) = op {
            q = q.bind(*seq).bind(*at);
        }
    }
    q.execute(&mut *conn).await?;
    for op in run {
        if let Op::Started(_, _, tx) = op {
            answers.push(answer(tx, ()));
        }
    }
    Ok(())
}

async fn finish_rows(
    conn: &mut SqliteConnection,
    run: Vec<Op>,
    answers: &mut Vec<Answer>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = f.column2, completed_ms = f.column3, result = f.column4, \
         error = f.column5, block_reason = NULL, result_file = f.column7, \
         started_ms = COALESCE(jobs.started_ms, f.column6), \
         progress = CASE WHEN f.column2 = 'completed' THEN 1.0 ELSE jobs.progress END, \
         cancel_phase = CASE WHEN f.column2 = 'cancelled' THEN 'completed' ELSE jobs.cancel_phase END \
         FROM (VALUES {}) AS f WHERE jobs.seq = f.column1",
        placeholders(run.len(), 7)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    let mut replies = Vec::with_capacity(run.len());
    for op in run {
        if let Op::Finish(f, file, tx) = op {
            q = q
                .bind(f.seq)
                .bind(f.status.as_str())
                .bind(f.at_ms)
                .bind(f.result)
                .bind(f.error.as_ref().map(super::sqlite::job_error_json))
                .bind(f.started_ms)
                .bind(file);
            replies.push(tx);
        }
    }
    q.execute(&mut *conn).await?;
    for tx in replies {
        answers.push(answer(tx, ()));
    }
    Ok(())
}

/// Applies one op of no run kind inside the open transaction.
async fn apply(conn: &mut SqliteConnection, op: Op) -> Result<Answer, sqlx::Error> {
    Ok(match op {
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
                "UPDATE jobs SET cancel_requested_ms = COALESCE(cancel_requested_ms, ?) \
                 WHERE seq = ? AND status IN ('pending', 'running')",
            )
            .bind(at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, ())
        }
        Op::CancelPhase(seq, phase, tx) => {
            // A job whose start the store has not applied yet is still pending.
            sqlx::query(
                "UPDATE jobs SET cancel_phase = ? WHERE seq = ? AND status IN ('pending', 'running')",
            )
            .bind(phase)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, ())
        }
        Op::Progress(seq, progress, message, tx) => {
            sqlx::query(
                "UPDATE jobs SET progress = ?, status_message = ? WHERE seq = ? AND status = 'running'",
            )
            .bind(progress)
            .bind(message)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, ())
        }
        Op::BlockReason(seq, reason, tx) => {
            sqlx::query(
                "UPDATE jobs SET block_reason = ? WHERE seq = ? AND status IN ('pending', 'running')",
            )
            .bind(reason)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, ())
        }
        Op::Requeue(r, tx) => {
            sqlx::query(
                "UPDATE jobs SET status = 'pending', started_ms = NULL, retry_count = retry_count + 1, \
                 run_after_ms = ?, rank = ?, error = ?, progress = 0.0, \
                 status_message = 'waiting to be tried again' WHERE seq = ?",
            )
            .bind(r.run_after_ms)
            .bind(r.rank)
            .bind(super::sqlite::job_error_json(&r.error))
            .bind(r.seq)
            .execute(&mut *conn)
            .await?;
            answer(tx, ())
        }
        Op::InsertSequence(sequence, first, tx) => answer(
            tx,
            super::sequences::insert(conn, &sequence, first.as_ref()).await?,
        ),
        Op::Advance(a, tx) => answer(tx, super::sequences::advance(conn, &a).await?),
        Op::CancelSequence(id, at, tx) => {
            answer(tx, super::sequences::cancel(conn, &id, at).await?)
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
        Op::Recover(at, started, error, tx) => {
            answer(tx, recover(conn, at, &started, &error).await?)
        }
        Op::Flush(tx) => answer(tx, ()),
        Op::Prune(keep, before, tx) => answer(tx, prune(conn, keep, before).await?),
        Op::Insert(..) | Op::Started(..) | Op::Finish(..) => {
            unreachable!("runs of inserts, starts and finishes are applied as rows")
        }
    })
}

/// Deletes ended jobs beyond the newest `keep`, and those ended before `before`.
async fn prune(
    conn: &mut SqliteConnection,
    keep: usize,
    before: Option<i64>,
) -> Result<(u64, Vec<String>), sqlx::Error> {
    let mut gone = sqlx::query(
        "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND seq NOT IN \
         (SELECT seq FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
          ORDER BY completed_ms DESC, seq DESC LIMIT ?) RETURNING result_file",
    )
    .bind(i64::try_from(keep).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    if let Some(ms) = before {
        gone.extend(
            sqlx::query(
                "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
                 AND completed_ms < ? RETURNING result_file",
            )
            .bind(ms)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    let files = gone
        .iter()
        .filter_map(|r| r.try_get::<Option<String>, _>(0).ok().flatten())
        .collect();
    // An ended sequence goes with the last of its steps' jobs.
    sqlx::query(
        "DELETE FROM sequences WHERE status != 'running' AND id NOT IN \
         (SELECT sequence_id FROM jobs WHERE sequence_id IS NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    Ok((gone.len() as u64, files))
}

/// Settles what a dead host left: every job the start log names (`started`)
/// or the store has running, and that has not ended, started and was
/// interrupted: re-queued if idempotent, failed otherwise.
async fn recover(
    conn: &mut SqliteConnection,
    at: i64,
    started: &[i64],
    error: &str,
) -> Result<Vec<Recovered>, sqlx::Error> {
    sqlx::query("CREATE TEMP TABLE IF NOT EXISTS cjm_started (seq INTEGER PRIMARY KEY)")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM cjm_started")
        .execute(&mut *conn)
        .await?;
    for chunk in started.chunks(ROWS * 4) {
        let sql = format!(
            "INSERT OR IGNORE INTO cjm_started (seq) VALUES {}",
            placeholders(chunk.len(), 1)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for seq in chunk {
            q = q.bind(*seq);
        }
        q.execute(&mut *conn).await?;
    }
    let interrupted =
        "(status = 'running' OR (status = 'pending' AND seq IN (SELECT seq FROM cjm_started)))";
    let requeued = sqlx::query(AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'pending', started_ms = NULL, retry_count = retry_count + 1, \
         status_message = 're-queued: its host died while it ran' \
         WHERE {interrupted} AND idempotent = 1 RETURNING seq, id, instance"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let failed = sqlx::query(AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'failed', completed_ms = ?, error = ?, \
         status_message = 'failed: its host died while it ran' \
         WHERE {interrupted} AND idempotent = 0 RETURNING seq, id, instance"
    )))
    .bind(at)
    .bind(error)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM cjm_started")
        .execute(&mut *conn)
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
