//! The runner: the dispatcher that starts the best pending job of each
//! instance with room, and the task that runs a job, logs its start, records
//! how it ended, and fills its freed slot with the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use cjm_core::{ErrorCategory, JobError};
use cjm_manager::ManagerError;
use cjm_proto::Value;

use super::JobQueue;
use crate::model::{JobStatus, to_ms};
use crate::store::{Claimed, Finish};
use crate::{blob, lock};

impl JobQueue {
    /// The dispatcher: starts the best pending job of each instance with room,
    /// up to the global limit, then sleeps until woken.
    pub(super) async fn dispatch(&self) {
        let inner = &self.inner;
        loop {
            if !inner.running.load(Ordering::Acquire) {
                return;
            }
            let mut started = false;
            loop {
                let next = {
                    let mut index = lock(&inner.index);
                    if index.running_count() >= inner.options.max_running {
                        None
                    } else {
                        index.take(inner.options.per_instance)
                    }
                };
                let Some((seq, instance)) = next else { break };
                started = true;
                let me = self.clone();
                tokio::spawn(async move { me.run(seq, instance).await });
            }
            if !started || !inner.running.load(Ordering::Acquire) {
                inner.wake.notified().await;
            }
        }
    }

    /// Runs job `seq` on `instance`, then the best pending job with room
    /// after it, until there is none: a freed slot is filled here, without a
    /// round trip through the dispatcher.
    async fn run(&self, mut seq: i64, mut instance: Arc<str>) {
        loop {
            self.run_one(seq, &instance).await;
            let next = {
                let mut index = lock(&self.inner.index);
                if !self.inner.running.load(Ordering::Acquire)
                    || index.running_count() >= self.inner.options.max_running
                {
                    None
                } else {
                    index.take(self.inner.options.per_instance)
                }
            };
            match next {
                Some((s, i)) => (seq, instance) = (s, i),
                None => return,
            }
        }
    }

    /// Runs job `seq` on `instance`: reads what it runs (unless read ahead),
    /// logs its start, executes it, records how it ended.
    async fn run_one(&self, seq: i64, instance: &Arc<str>) {
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
            self.end(seq, instance, claimed, to_ms(started), Err(error));
            return;
        }
        drop(inner.store.started(seq, to_ms(started)));
        lock(&inner.index)
            .running
            .insert(seq, (claimed.id.clone(), Arc::clone(instance)));
        let sequence = claimed.sequence.as_ref().map(|(s, i)| (s, *i));
        self.publish_transition(
            &claimed.id,
            instance,
            sequence,
            JobStatus::Pending,
            JobStatus::Running,
        );
        let outcome = self.execute(&claimed).await;
        self.end(seq, instance, claimed, to_ms(started), outcome);
    }

    /// Records how job `seq` ended and frees its instance; a task of its own
    /// tells the subscribers and waiters once the end is committed.
    fn end(
        &self,
        seq: i64,
        instance: &Arc<str>,
        claimed: Claimed,
        started_ms: i64,
        outcome: Result<Value, JobError>,
    ) {
        let inner = &self.inner;
        let now = SystemTime::now();
        let (status, result, error) = match outcome {
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
            Err(e) => (JobStatus::Failed, None, Some(e)),
        };
        let finish = Finish {
            seq,
            status,
            at_ms: to_ms(now),
            started_ms,
            result,
            error,
        };
        // The instance is free as soon as its call returned: the next job's
        // start is logged meanwhile, and the store commits this end with others.
        let recorded = inner.store.finish(finish);
        lock(&inner.index).done(seq, instance);
        let me = self.clone();
        let instance = Arc::clone(instance);
        tokio::spawn(async move {
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
        });
    }

    /// Calls `execute` for a claimed job; its failure as a [`JobError`].
    async fn execute(&self, claimed: &Claimed) -> Result<Value, JobError> {
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
            .execute_async(&claimed.instance, args, kwargs)
            .await
            .map_err(|e| job_error(&e, &claimed.instance))
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
