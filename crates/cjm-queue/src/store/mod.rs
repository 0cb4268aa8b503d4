//! The seam between the runner and where jobs are kept: [`Store`], whose
//! every write is durable when its future resolves. [`SqliteStore`] is the one
//! store today (one host per file); a `PostgreSQL` store for several hosts
//! sharing a queue implements the same trait.

mod files;
mod sequences;
mod sqlite;
mod writer;

use std::future::Future;
use std::pin::Pin;

use cjm_core::JobError;

pub use self::sqlite::{INLINE_RESULT_BYTES, SqliteStore};
use crate::error::QueueError;
use crate::model::{CancelPhase, Job, JobStatus, QueueStats};

/// What a store's methods return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueueError>> + Send + 'a>>;

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: String,
    /// Its instance.
    pub instance: String,
    /// Its encoded positional arguments.
    pub args: Vec<u8>,
    /// Its encoded keyword arguments.
    pub kwargs: Vec<u8>,
    /// Its priority.
    pub priority: i64,
    /// Its place in the dispatch order: earlier runs first.
    pub rank: i64,
    /// When it was submitted (ms since the epoch).
    pub submitted_ms: i64,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// Whether it may run again after a host death.
    pub idempotent: bool,
    /// Its timeout, in ms.
    pub timeout_ms: Option<i64>,
    /// Its sequence and place there.
    pub sequence: Option<(String, i64)>,
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The job's number in the store (dispatch order among equal ranks).
    pub seq: i64,
    /// The job's id: the new one, or the first job's with the same key.
    pub id: String,
    /// The key named a job submitted before.
    pub existed: bool,
}

/// A pending job as the dispatcher indexes it: no arguments, a few words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    /// Its number.
    pub seq: i64,
    /// Its place in the dispatch order.
    pub rank: i64,
    /// Its instance.
    pub instance: String,
    /// Not before this (ms since the epoch): a retry waiting out its backoff.
    pub run_after_ms: Option<i64>,
}

/// A pending job the runner is about to run, with what it runs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: String,
    /// Its instance.
    pub instance: String,
    /// Its encoded positional arguments.
    pub args: Vec<u8>,
    /// Its encoded keyword arguments.
    pub kwargs: Vec<u8>,
    /// Its timeout, in ms.
    pub timeout_ms: Option<i64>,
    /// Its sequence and place there.
    pub sequence: Option<(String, i64)>,
    /// How many times it was tried again so far.
    pub retry_count: i64,
    /// Its place in the dispatch order (a retry keeps it).
    pub rank: i64,
}

/// A failed job put back to run again after a backoff.
#[derive(Debug, Clone)]
pub struct Requeue {
    /// Its number.
    pub seq: i64,
    /// Not before this (ms since the epoch).
    pub run_after_ms: i64,
    /// Its place in the dispatch order once due.
    pub rank: i64,
    /// Why its last try failed.
    pub error: JobError,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Its number.
    pub seq: i64,
    /// Completed, failed or cancelled.
    pub status: JobStatus,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// When it started, for a store that did not record the start (a start
    /// and an end in one batch need only the end).
    pub started_ms: i64,
    /// Its encoded result, when completed.
    pub result: Option<Vec<u8>>,
    /// Why it failed or was cancelled.
    pub error: Option<JobError>,
}

/// A job that was running when its host died.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// Its number.
    pub seq: i64,
    /// Its id.
    pub id: String,
    /// Its instance.
    pub instance: String,
    /// Re-queued (idempotent) or failed.
    pub status: JobStatus,
}

/// A sequence as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceRow {
    /// Its id.
    pub id: String,
    /// Its steps, encoded.
    pub steps: Vec<u8>,
    /// Whether the first failed step ends it.
    pub fail_fast: bool,
    /// The priority of its steps that have none of their own.
    pub priority: i64,
    /// The step running or next to run.
    pub current_index: i64,
    /// That step's job.
    pub current_job_id: Option<String>,
    /// Running, or how it ended.
    pub status: JobStatus,
    /// When it was submitted (ms since the epoch).
    pub submitted_ms: i64,
    /// When it ended.
    pub completed_ms: Option<i64>,
}

/// A sequence's move past step `from`: to the next step's job, or to its end.
#[derive(Debug, Clone)]
pub struct Advance {
    /// The sequence.
    pub id: String,
    /// The step that ended; the move applies only if it is still current.
    pub from: i64,
    /// The next step's job, inserted in the same transaction.
    pub next: Option<NewJob>,
    /// `running` with a next job, else how the sequence ended.
    pub status: JobStatus,
    /// When (ms since the epoch).
    pub at_ms: i64,
}

/// What a sequence's advance did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advanced {
    /// Nothing: it was no longer running at that step (cancelled meanwhile;
    /// then its end is recorded).
    Halted,
    /// It ended.
    Ended,
    /// It moved to its next step, whose job has this number.
    Next(i64),
}

/// Which jobs a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Pending, in dispatch order.
    Pending,
    /// Running.
    Running,
    /// Ended, most recent first, at most this many.
    History(Option<usize>),
    /// The members of a sequence, in step order.
    Sequence(String),
}

/// Where jobs are kept. Writes are durable once their future resolves. A write
/// is queued when its method is called, not when its future is first polled
/// (so that writes issued together commit together), and its future does not
/// borrow the store (the runner awaits a job's end in a task of its own).
pub trait Store: Send + Sync + 'static {
    /// Inserts `job`, or finds the job its idempotency key names.
    fn insert(&self, job: NewJob) -> StoreFuture<'static, Inserted>;
    /// Reads what pending jobs `seqs` run (those still pending).
    fn fetch(&self, seqs: Vec<i64>) -> StoreFuture<'_, Vec<(i64, Claimed)>>;
    /// Records that pending job `seq` started at `at_ms` (the runner's start
    /// log already says so durably; this is for readers of the store).
    fn started(&self, seq: i64, at_ms: i64) -> StoreFuture<'static, ()>;
    /// Records how a running job ended.
    fn finish(&self, finish: Finish) -> StoreFuture<'static, ()>;
    /// Puts a running job that failed back as pending, to run again once
    /// due, its retry count one up.
    fn requeue(&self, requeue: Requeue) -> StoreFuture<'static, ()>;
    /// Records why the scheduler holds running job `seq` back (`None`: no more).
    fn block_reason(&self, seq: i64, reason: Option<String>) -> StoreFuture<'static, ()>;
    /// Records what running job `seq`'s plugin last reported of its progress.
    fn progress(&self, seq: i64, progress: f64, message: String) -> StoreFuture<'static, ()>;
    /// Records how far the cancel of running job `seq` has come.
    fn cancel_phase(&self, seq: i64, phase: CancelPhase) -> StoreFuture<'static, ()>;
    /// Cancels pending job `seq`; `false` if it was not pending.
    fn cancel_pending(&self, seq: i64, at_ms: i64, error: JobError) -> StoreFuture<'static, bool>;
    /// Records that a cancel of running job `seq` was asked for at `at_ms`.
    fn cancel_requested(&self, seq: i64, at_ms: i64) -> StoreFuture<'static, ()>;
    /// Gives pending job `seq` a new priority and rank; `false` if not pending.
    fn reprioritize(&self, seq: i64, priority: i64, rank: i64) -> StoreFuture<'static, bool>;
    /// Settles the jobs a dead host left running (those the store has
    /// running, and the unended ones its start log names in `started`): the
    /// idempotent re-queued, the others failed with `error`.
    fn recover(
        &self,
        at_ms: i64,
        started: Vec<i64>,
        error: JobError,
    ) -> StoreFuture<'static, Vec<Recovered>>;
    /// The first `limit` pending jobs numbered above `after`, in number
    /// order, for the dispatch index (read a page at a time, so that a
    /// million pending jobs are not all held as rows at once).
    fn pending_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<PendingRow>>;
    /// The job with this id, and its number.
    fn job(&self, id: &str) -> StoreFuture<'_, Option<(i64, Job)>>;
    /// Jobs by status.
    fn list(&self, listing: Listing) -> StoreFuture<'_, Vec<Job>>;
    /// Counts by status.
    fn stats(&self) -> StoreFuture<'_, QueueStats>;
    /// Inserts a sequence and its first step's job (none for an empty one)
    /// in one transaction; returns that job's number.
    fn insert_sequence(
        &self,
        sequence: SequenceRow,
        first: Option<NewJob>,
    ) -> StoreFuture<'static, Option<i64>>;
    /// Moves a running sequence past a step that ended.
    fn advance_sequence(&self, advance: Advance) -> StoreFuture<'static, Advanced>;
    /// Marks a running sequence cancelled; `false` if it was not running.
    fn cancel_sequence(&self, id: &str, at_ms: i64) -> StoreFuture<'static, bool>;
    /// The sequence with this id.
    fn sequence(&self, id: &str) -> StoreFuture<'_, Option<SequenceRow>>;
    /// The sequences still running (to advance those a dead host left between
    /// steps).
    fn running_sequences(&self) -> StoreFuture<'_, Vec<SequenceRow>>;
    /// Resolves once every write queued before it is durable.
    fn flush(&self) -> StoreFuture<'static, ()>;
    /// Deletes ended jobs beyond the newest `keep`, and those ended before
    /// `before_ms`; returns how many went.
    fn prune(&self, keep: usize, before_ms: Option<i64>) -> StoreFuture<'static, u64>;
}
