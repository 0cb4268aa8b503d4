//! The runner: the dispatcher that starts the best pending job of each
//! instance with room, and the task that runs a job, logs its start, records
//! how it ended, and fills its freed slot with the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use std::sync::Mutex;
use std::time::Duration;

use cjm_core::{ErrorCategory, JobError};
use cjm_manager::{CallCancel, CancelStep, ManagerError};
use cjm_proto::Value;
use serde_json::json;

use super::JobQueue;
use crate::model::{CancelPhase, JobEventType, JobStatus, to_ms};
use crate::store::{Claimed, Finish, Requeue};
use crate::{blob, lock};

impl JobQueue {
    /// The dispatcher: starts the best pending job of each instance with room,
    /// up to the global limit, then sleeps until woken or until the next
    /// retry is due.
    pub(super) async fn dispatch(&self) {
        let inner = &self.inner;
        loop {
            if !inner.running.load(Ordering::Acquire) {
                return;
            }
            let mut started = false;
            let mut next_due;
            loop {
                let next = {
                    let mut index = lock(&inner.index);
                    next_due = index.promote(to_ms(SystemTime::now()));
                    if index.running_count() >= inner.options.max_running {
                        None
                    } else {
                        index.take(inner.options.per_instance, || self.new_cancel())
                    }
                };
                let Some((seq, instance, cancel)) = next else {
                    break;
                };
                started = true;
                let me = self.clone();
                tokio::spawn(async move { me.run(seq, instance, cancel).await });
            }
            if !started || !inner.running.load(Ordering::Acquire) {
                match next_due {
                    Some(due) => {
                        let wait = u64::try_from(due - to_ms(SystemTime::now())).unwrap_or(0);
                        let _ = tokio::time::timeout(
                            Duration::from_millis(wait.max(1)),
                            inner.wake.notified(),
                        )
                        .await;
                    }
                    None => inner.wake.notified().await,
                }
            }
        }
    }

    /// What stops one job: the queue's grace at each phase, restarting a
    /// killed worker.
    fn new_cancel(&self) -> CallCancel {
        CallCancel::with_grace(self.inner.options.cancel_grace)
    }

    /// Runs job `seq` on `instance`, then the best pending job with room
    /// after it, until there is none: a freed slot is filled here, without a
    /// round trip through the dispatcher.
    async fn run(&self, mut seq: i64, mut instance: Arc<str>, mut cancel: CallCancel) {
        loop {
            self.run_one(seq, &instance, cancel).await;
            let next = {
                let mut index = lock(&self.inner.index);
                if !self.inner.running.load(Ordering::Acquire)
                    || index.running_count() >= self.inner.options.max_running
                {
                    None
                } else {
                    index.take(self.inner.options.per_instance, || self.new_cancel())
                }
            };
            match next {
                Some((s, i, c)) => (seq, instance, cancel) = (s, i, c),
                None => return,
            }
        }
    }

    /// Runs job `seq` on `instance`: reads what it runs (unless read ahead),
    /// logs its start, executes it (stopped by `cancel`, or by its timeout),
    /// records how it ended.
    async fn run_one(&self, seq: i64, instance: &Arc<str>, cancel: CallCancel) {
        let inner = &self.inner;
        let next = lock(&inner.index).ahead_or_next(seq, instance);
        let claimed = match next {
            Ok(c) => Some(c),
            Err(seqs) => match inner.store.fetch(seqs).await {
                Ok(rows) => {
                    let mut index = lock(&inner.index);
                    let mut mine = None;
                    for (s, c) in rows {
                        if s == seq {
                            mine = Some(c);
                        } else if index.where_pending.contains_key(&s) {
                            index.ahead.insert(s, c);
                        }
                    }
                    mine
                }
                Err(e) => {
                    tracing::warn!("cannot read a job of instance {instance}: {e}");
                    None
                }
            },
        };
        let Some(claimed) = claimed else {
            // Gone meanwhile (cancelled from elsewhere), or unreadable.
            lock(&inner.index).done(seq, instance);
            return;
        };
        let started = SystemTime::now();
        if let Err(e) = inner.starts.started(seq) {
            // Without the log its start could not be told after a crash.
            tracing::warn!("job {} cannot start: {e}", claimed.id);
            let error = JobError::new(
                ErrorCategory::Transient,
                format!("the job could not be started: {e}"),
                true,
                "StartLogError()",
            )
            .with_occurred_at(started);
            let ran = Ran::new(Err(error), &cancel, false, None);
            self.end(seq, instance, claimed, to_ms(started), ran);
            return;
        }
        drop(inner.store.started(seq, to_ms(started)));
        if let Some(r) = lock(&inner.index).running.get_mut(&seq) {
            r.job = Some((claimed.id.clone(), claimed.sequence.clone()));
        }
        let sequence = claimed.sequence.as_ref().map(|(s, i)| (s, *i));
        self.publish_transition(
            &claimed.id,
            instance,
            sequence,
            JobStatus::Pending,
            JobStatus::Running,
        );
        let phases = self.watch_phases(seq, instance, &claimed, &cancel);
        self.hear_reports(seq, instance, &claimed, &cancel);
        let timeout = claimed
            .timeout_ms
            .map(|t| Duration::from_millis(u64::try_from(t).unwrap_or(0)));
        let (outcome, timed_out) = {
            let run = self.execute(&claimed, &cancel);
            tokio::pin!(run);
            match timeout {
                None => (run.await, false),
                Some(t) => tokio::select! {
                    outcome = &mut run => (outcome, false),
                    () = tokio::time::sleep(t) => {
                        cancel.cancel();
                        (run.await, true)
                    }
                },
            }
        };
        let ran = Ran::new(outcome, &cancel, timed_out, timeout);
        if ran.cancelled {
            let job = (claimed.id.as_str(), sequence);
            self.phase(seq, instance, job, &phases, CancelPhase::Completed);
        }
        self.end(seq, instance, claimed, to_ms(started), ran);
    }

    /// Records each phase of the job's cancel on the job and publishes it,
    /// as the worker goes through them; returns the phase reached so far.
    fn watch_phases(
        &self,
        seq: i64,
        instance: &Arc<str>,
        claimed: &Claimed,
        cancel: &CallCancel,
    ) -> Arc<Mutex<Option<CancelPhase>>> {
        let reached = Arc::new(Mutex::new(None));
        let (me, instance, id, sequence, seen) = (
            self.clone(),
            Arc::clone(instance),
            claimed.id.clone(),
            claimed.sequence.clone(),
            Arc::clone(&reached),
        );
        cancel.on_step(move |step| {
            let phase = match step {
                CancelStep::Asking => CancelPhase::Cooperative,
                CancelStep::Interrupting | CancelStep::Killing => CancelPhase::Force,
                CancelStep::Restarting => CancelPhase::Reloading,
            };
            let sequence = sequence.as_ref().map(|(s, i)| (s, *i));
            me.phase(seq, &instance, (&id, sequence), &seen, phase);
        });
        reached
    }

    /// Job `seq`'s cancel reached `phase`: recorded and published, once.
    fn phase(
        &self,
        seq: i64,
        instance: &str,
        (id, sequence): (&str, Option<(&String, i64)>),
        reached: &Mutex<Option<CancelPhase>>,
        phase: CancelPhase,
    ) {
        let from = {
            let mut reached = lock(reached);
            if *reached == Some(phase) {
                return;
            }
            reached.replace(phase)
        };
        drop(self.inner.store.cancel_phase(seq, phase));
        self.publish(
            JobEventType::CancelPhaseChanged,
            id,
            instance,
            sequence,
            || {
                [
                    ("from", json!(from.map(CancelPhase::as_str))),
                    ("to", json!(phase.as_str())),
                ]
            },
        );
    }

    /// Records how job `seq` ended (or that it runs again after a backoff)
    /// and frees its instance; a task of its own tells the subscribers and
    /// waiters once that is committed.
    fn end(&self, seq: i64, instance: &Arc<str>, claimed: Claimed, started_ms: i64, ran: Ran) {
        let inner = &self.inner;
        let now = SystemTime::now();
        let (status, result, error) = match ran.outcome {
            Ok(value) => match blob::encode(&value) {
                Ok(bytes) => (JobStatus::Completed, Some(bytes), None),
                Err(e) => (
                    JobStatus::Failed,
                    None,
                    Some(
                        JobError::new(
                            ErrorCategory::Fatal,
                            format!("the job's result cannot be stored: {e}"),
                            false,
                            "UnstorableResult()",
                        )
                        .with_occurred_at(now),
                    ),
                ),
            },
            Err(e) if ran.cancelled => (JobStatus::Cancelled, None, Some(e)),
            Err(e) => (JobStatus::Failed, None, Some(e)),
        };
        let retry = match (&error, status) {
            (Some(e), JobStatus::Failed) => inner.options.retry.next(e, claimed.retry_count),
            _ => None,
        };
        let recorded = match (retry, error) {
            (Some(wait), Some(error)) if self.take_back(seq, &claimed.id) => {
                self.retry_later(seq, instance, claimed, error, wait);
                return;
            }
            (_, error) => inner.store.finish(Finish {
                seq,
                status,
                at_ms: to_ms(now),
                started_ms,
                result,
                error,
            }),
        };
        // The instance is free as soon as its call returned: the next job's
        // start is logged meanwhile, and the store commits this end with others.
        let blocked = lock(&inner.index).done(seq, instance);
        let me = self.clone();
        let instance = Arc::clone(instance);
        tokio::spawn(async move {
            me.unblocked(&claimed, &instance, blocked);
            match recorded.await {
                Ok(()) => me.inner.starts.settled(seq),
                Err(e) => tracing::warn!(
                    "job {} on instance {instance} ended ({status}) but that could not be \
                     recorded: {e}; it will be settled as interrupted when the queue is next \
                     opened",
                    claimed.id
                ),
            }
            let sequence = claimed.sequence.as_ref().map(|(s, i)| (s, *i));
            me.publish_transition(&claimed.id, &instance, sequence, JobStatus::Running, status);
            me.release_waiters(&claimed.id);
            if let Some((sequence, index)) = &claimed.sequence
                && let Err(e) = me.advance((sequence, *index), &claimed.id, status).await
            {
                tracing::warn!(
                    "sequence {sequence} could not move past step {index}: {e}; it moves on \
                     when the queue is next opened"
                );
            }
        });
    }

    /// Puts job `seq`, whose try failed with `error`, back to run again in
    /// `wait`; a task of its own tells the subscribers once that is committed.
    fn retry_later(
        &self,
        seq: i64,
        instance: &Arc<str>,
        claimed: Claimed,
        error: JobError,
        wait: Duration,
    ) {
        let inner = &self.inner;
        let now = SystemTime::now();
        let due = to_ms(now) + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        // Once due it keeps its place: ahead of the jobs submitted after it.
        let rank = claimed.rank;
        let recorded = inner.store.requeue(Requeue {
            seq,
            run_after_ms: due,
            rank,
            error: error.clone(),
        });
        let mut index = lock(&inner.index);
        let blocked = index.done(seq, instance);
        index.add_due(seq, rank, instance, Some(due), to_ms(now));
        drop(index);
        inner.wake.notify_one();
        let me = self.clone();
        let instance = Arc::clone(instance);
        tokio::spawn(async move {
            me.unblocked(&claimed, &instance, blocked);
            if let Err(e) = recorded.await {
                tracing::warn!(
                    "job {} on instance {instance} is to run again but that could not \
                     be recorded: {e}",
                    claimed.id
                );
            }
            let sequence = claimed.sequence.as_ref().map(|(s, i)| (s, *i));
            me.publish_transition(
                &claimed.id,
                &instance,
                sequence,
                JobStatus::Running,
                JobStatus::Pending,
            );
            let attempt = claimed.retry_count + 1;
            me.publish(
                JobEventType::RetryStarted,
                &claimed.id,
                &instance,
                sequence,
                || {
                    [
                        ("attempt", json!(attempt)),
                        ("category", json!(error.category.as_str())),
                        ("error", json!(error.message)),
                        ("delay_s", json!(wait.as_secs_f64())),
                        ("by", json!("queue")),
                        ("exception_repr", json!(error.original_exc_repr)),
                        ("exception_category", json!(error.category.as_str())),
                    ]
                },
            );
        });
    }

    /// A job that ended still held back by the scheduler's reason (the
    /// manager's word that its call was admitted comes on another channel,
    /// and may come later): the reason is cleared before the job's end is told.
    fn unblocked(&self, claimed: &Claimed, instance: &str, blocked: Option<String>) {
        if let Some(before) = blocked {
            let sequence = claimed.sequence.as_ref().map(|(s, i)| (s, *i));
            self.publish(
                JobEventType::BlockReasonChanged,
                &claimed.id,
                instance,
                sequence,
                || [("from", json!(before)), ("to", serde_json::Value::Null)],
            );
        }
    }

    /// Takes job `seq`'s start back in the start log before it is put back to
    /// run again; `false` (it is not retried) if the log cannot be written.
    fn take_back(&self, seq: i64, id: &str) -> bool {
        match self.inner.starts.taken_back(seq) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("job {id} is not tried again: {e}");
                false
            }
        }
    }

    /// Calls `execute` for a claimed job, stopped by `cancel`; its failure as
    /// a [`JobError`].
    async fn execute(&self, claimed: &Claimed, cancel: &CallCancel) -> Result<Value, JobError> {
        let now = SystemTime::now;
        let damaged = |what: &str, e: String| {
            JobError::new(
                ErrorCategory::Fatal,
                format!("the job's stored {what} cannot be read: {e}"),
                false,
                "DamagedJob()",
            )
            .with_occurred_at(now())
        };
        let args = match blob::decode(&claimed.args) {
            Ok(Value::List(items)) => items,
            Ok(_) => return Err(damaged("arguments", "not a list".into())),
            Err(e) => return Err(damaged("arguments", e)),
        };
        let kwargs = match blob::decode(&claimed.kwargs) {
            Ok(Value::Map(pairs)) => pairs,
            Ok(_) => return Err(damaged("keyword arguments", "not a map".into())),
            Err(e) => return Err(damaged("keyword arguments", e)),
        };
        self.inner
            .manager
            .execute_cancellable(&claimed.instance, args, kwargs, cancel)
            .await
            .map_err(|e| job_error(&e, &claimed.instance))
    }
}

/// How a job's run came out: its outcome, and whether it was cancelled (by
/// a cancel, not its timeout).
struct Ran {
    outcome: Result<Value, JobError>,
    cancelled: bool,
}

impl Ran {
    fn new(
        outcome: Result<Value, JobError>,
        cancel: &CallCancel,
        timed_out: bool,
        timeout: Option<Duration>,
    ) -> Self {
        if timed_out {
            // Stopped by its timeout: a transient failure, as the reference's
            // `PluginTimeoutError`, whatever the cancel's own outcome.
            drop(outcome);
            let limit = timeout.unwrap_or_default();
            let error = JobError::new(
                ErrorCategory::Transient,
                format!(
                    "the job ran past its timeout of {:.3} s and was stopped",
                    limit.as_secs_f64()
                ),
                true,
                "PluginTimeoutError()",
            );
            return Self {
                outcome: Err(error.with_occurred_at(SystemTime::now())),
                cancelled: false,
            };
        }
        let cancelled = cancel.is_requested();
        let outcome = match outcome {
            // Cancelled while it ran, yet it finished: cancelled all the
            // same, as the reference's queue does, its result not kept.
            Ok(_) if cancelled => Err(JobError::new(
                ErrorCategory::Transient,
                "cancelled while it ran (it finished before it stopped; its result was not kept)",
                false,
                "PluginCancelledError()",
            )
            .with_occurred_at(SystemTime::now())),
            other => other,
        };
        Self { outcome, cancelled }
    }
}

/// A manager's error as the job's: the plugin's own where it raised, else
/// one that says what the manager said.
fn job_error(e: &ManagerError, instance: &str) -> JobError {
    let now = SystemTime::now();
    let mut out = match e {
        ManagerError::Plugin(p) => p.to_job_error(now),
        ManagerError::Worker(w) => w.to_job_error(now),
        other => {
            let category = match other {
                ManagerError::Waited { .. }
                | ManagerError::Blocked { .. }
                | ManagerError::OutOfMemory { .. }
                | ManagerError::Never { .. } => ErrorCategory::Resource,
                _ => ErrorCategory::Fatal,
            };
            let retriable = matches!(
                other,
                ManagerError::Waited { .. } | ManagerError::Blocked { .. }
            );
            JobError::new(category, other.to_string(), retriable, "ManagerError()")
                .with_occurred_at(now)
        }
    };
    if out.plugin_instance_id.is_none() {
        out.plugin_instance_id = Some(instance.to_owned());
    }
    out
}
