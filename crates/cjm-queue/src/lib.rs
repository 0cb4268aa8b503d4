//! cjm's durable job queue: the reference's `JobQueue` (submit, cancel, reorder,
//! history, stats, events, `wait_for_job`) on a store that survives the host.
//!
//! What it decides: which pending job runs next (priority with aging, then
//! submission order; one job at a time per instance unless told otherwise,
//! jobs on different instances side by side), and what happens to the jobs a
//! dead host left running (re-queued when submitted as idempotent, failed with
//! the reason otherwise). What it never does: decide whether a job fits the
//! machine (the manager's admission does, with its reasons), or keep a job
//! only in memory (a submit returns once the job is committed).
//!
//! | file | what it holds |
//! | --- | --- |
//! | `model.rs` | the reference's statuses, event types, cancel phases, `Job`, `JobEvent`, `QueueStats`; [`Submit`] |
//! | `queue/` | [`JobQueue`]: the API (`mod.rs`), the dispatch index, the runner |
//! | `retry.rs` | [`RetryPolicy`]: which failures run again, after what backoff |
//! | `logs.rs` | a job's lines of its plugin's log, sliced by its window |
//! | `client.rs` | [`QueueClient`]: the queue from another process, and the host's socket |
//! | `events.rs` | the event fan-out with bounded buffers and drop counters |
//! | `startlog.rs` | the start log: which jobs had started, for the next host |
//! | `store/` | the [`Store`] seam and [`SqliteStore`] (WAL, group commit, host lock, sequences, large results in files) |
//! | `blob.rs` | arguments and results as stored bytes |
//! | `error.rs` | [`QueueError`] |

mod blob;
mod client;
mod error;
mod events;
mod logs;
mod model;
mod queue;
mod retry;
mod startlog;
pub mod store;

pub use crate::client::QueueClient;
pub use crate::error::QueueError;
pub use crate::events::EventStream;
pub use crate::logs::job_lines;
pub use crate::model::{
    CancelPhase, Job, JobEvent, JobEventType, JobSequence, JobStatus, QueueStats, ResourceSnapshot,
    SequenceStep, StepResult, Submit,
};
pub use crate::queue::{JobQueue, QueueOptions};
pub use crate::retry::RetryPolicy;
pub use crate::store::{SqliteStore, Store};

/// Locks `m`, taking over a lock a panicking thread left poisoned: every
/// structure behind one is left consistent between statements.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
