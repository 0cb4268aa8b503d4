//! Sequences: jobs run one after another, the next step's job submitted when
//! the last one ends (the reference's `submit_sequence`, fail-fast or
//! best-effort). The store keeps a sequence with its current step's job, and
//! moves it to the next step in the transaction that inserts that step's job;
//! a host that died between steps leaves a sequence whose step has ended,
//! which [`JobQueue::resume_sequences`] advances on open.

use std::time::SystemTime;

use cjm_proto::Value;
use serde_json::json;

use super::{JobQueue, new_id};
use crate::blob;
use crate::error::QueueError;
use crate::lock;
use crate::model::{
    JobEventType, JobSequence, JobStatus, SequenceStep, StepResult, from_ms, to_ms,
};
use crate::store::{Advance, Advanced, Listing, NewJob, SequenceRow};

impl JobQueue {
    /// Submits `steps` to run one after another at `priority` (a step's own
    /// priority, when not 0, wins); returns the sequence's id. With
    /// `fail_fast`, the first failed step ends the sequence as failed;
    /// without, every step is tried and the results say which failed. Every
    /// step's instance is checked first: a disabled or unloaded one refuses
    /// the whole sequence.
    pub async fn submit_sequence(
        &self,
        steps: Vec<SequenceStep>,
        priority: i64,
        fail_fast: bool,
    ) -> Result<String, QueueError> {
        for step in &steps {
            self.check_instance(&step.plugin_instance_id)?;
        }
        let id = new_id();
        let now = to_ms(SystemTime::now());
        let first = steps
            .first()
            .map(|step| self.step_job(&id, 0, step, priority, now))
            .transpose()?;
        let row = SequenceRow {
            id: id.clone(),
            steps: encode_steps(&steps)?,
            fail_fast,
            priority,
            current_index: 0,
            current_job_id: first.as_ref().map(|j| j.id.clone()),
            // An empty sequence is complete when submitted, as the reference's.
            status: if steps.is_empty() {
                JobStatus::Completed
            } else {
                JobStatus::Running
            },
            submitted_ms: now,
            completed_ms: steps.is_empty().then_some(now),
        };
        let rank = first.as_ref().map(|j| (j.rank, j.instance.clone()));
        let seq = self.inner.store.insert_sequence(row, first).await?;
        if let (Some(seq), Some((rank, instance))) = (seq, rank) {
            lock(&self.inner.index).add(seq, rank, &instance);
            self.inner.wake.notify_one();
        }
        Ok(id)
    }

    /// A sequence whose every step runs on `instance`, one per set of
    /// arguments (`kwargs_list`, when given, as long as `args_list`).
    pub async fn submit_uniform_sequence(
        &self,
        instance: &str,
        args_list: Vec<Vec<Value>>,
        kwargs_list: Option<Vec<Vec<(String, Value)>>>,
        priority: i64,
        fail_fast: bool,
    ) -> Result<String, QueueError> {
        let kwargs_list = kwargs_list.unwrap_or_else(|| vec![Vec::new(); args_list.len()]);
        if kwargs_list.len() != args_list.len() {
            return Err(QueueError::Mismatch {
                args: args_list.len(),
                kwargs: kwargs_list.len(),
            });
        }
        let steps = args_list
            .into_iter()
            .zip(kwargs_list)
            .map(|(args, kwargs)| SequenceStep::new(instance, args, kwargs))
            .collect();
        self.submit_sequence(steps, priority, fail_fast).await
    }

    /// Cancels a running sequence: no further step starts, and its current
    /// step's job is cancelled. `false` if it is unknown or has ended.
    pub async fn cancel_sequence(&self, id: &str) -> Result<bool, QueueError> {
        let Some(row) = self.inner.store.sequence(id).await? else {
            return Ok(false);
        };
        if row.status != JobStatus::Running {
            return Ok(false);
        }
        // Recorded first: a step that ends meanwhile finds it cancelled.
        if !self
            .inner
            .store
            .cancel_sequence(id, to_ms(SystemTime::now()))
            .await?
        {
            return Ok(false);
        }
        if let Some(job) = row.current_job_id {
            match self.cancel(&job).await {
                Ok(_) | Err(QueueError::NoJob(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The sequence with this id: its steps, where it stands, and how each
    /// step that ended came out.
    pub async fn get_sequence(&self, id: &str) -> Result<Option<JobSequence>, QueueError> {
        let Some(row) = self.inner.store.sequence(id).await? else {
            return Ok(None);
        };
        let members = self
            .inner
            .store
            .list(Listing::Sequence(id.to_owned()))
            .await?;
        let results = members
            .into_iter()
            .filter(|j| j.status.is_terminal())
            .map(|j| StepResult {
                success: j.status == JobStatus::Completed,
                job_id: j.id,
                result: j.result,
                error: j.error,
            })
            .collect();
        Ok(Some(JobSequence {
            steps: decode_steps(&row.steps).map_err(|reason| QueueError::Damaged {
                path: self.inner.options.path.clone(),
                job: format!("sequence {id}"),
                reason,
            })?,
            id: row.id,
            fail_fast: row.fail_fast,
            priority: row.priority,
            current_index: row.current_index,
            current_job_id: row
                .current_job_id
                .filter(|_| row.status == JobStatus::Running),
            results,
            status: row.status,
            submitted_at: from_ms(row.submitted_ms),
            completed_at: row.completed_ms.map(from_ms),
        }))
    }

    /// Step `index` of sequence `id`, job `job`, ended with `status`: the
    /// sequence moves to its next step, or ends.
    pub(super) async fn advance(
        &self,
        (id, index): (&str, i64),
        job: &str,
        status: JobStatus,
    ) -> Result<(), QueueError> {
        let Some(row) = self.inner.store.sequence(id).await? else {
            return Ok(());
        };
        if row.status != JobStatus::Running || row.current_index != index {
            if row.status == JobStatus::Cancelled && row.completed_ms.is_none() {
                // Let the store record its end, now that its step has ended.
                self.inner
                    .store
                    .advance_sequence(Advance {
                        id: id.to_owned(),
                        from: index,
                        next: None,
                        status: JobStatus::Cancelled,
                        at_ms: to_ms(SystemTime::now()),
                    })
                    .await?;
            }
            return Ok(());
        }
        let now = to_ms(SystemTime::now());
        let steps = decode_steps(&row.steps).map_err(|reason| QueueError::Damaged {
            path: self.inner.options.path.clone(),
            job: format!("sequence {id}"),
            reason,
        })?;
        let next_index = index + 1;
        let (next, to) = match status {
            JobStatus::Cancelled => (None, JobStatus::Cancelled),
            JobStatus::Failed if row.fail_fast => (None, JobStatus::Failed),
            _ => match usize::try_from(next_index).ok().and_then(|i| steps.get(i)) {
                Some(step) => (
                    Some(self.step_job(id, next_index, step, row.priority, now)?),
                    JobStatus::Running,
                ),
                None => (None, JobStatus::Completed),
            },
        };
        let queued = next
            .as_ref()
            .map(|j| (j.id.clone(), j.rank, j.instance.clone()));
        let moved = self
            .inner
            .store
            .advance_sequence(Advance {
                id: id.to_owned(),
                from: index,
                next,
                status: to,
                at_ms: now,
            })
            .await?;
        if let (Advanced::Next(seq), Some((next_id, rank, instance))) = (moved, queued) {
            lock(&self.inner.index).add(seq, rank, &instance);
            self.inner.wake.notify_one();
            let sequence = id.to_owned();
            self.publish(
                JobEventType::SequenceAdvanced,
                &next_id,
                &instance,
                Some((&sequence, next_index)),
                || {
                    [
                        ("prior_job_id", json!(job)),
                        ("prior_step_index", json!(index)),
                        ("prior_success", json!(status == JobStatus::Completed)),
                    ]
                },
            );
        }
        Ok(())
    }

    /// Advances the sequences a dead host left between steps: those whose
    /// current step's job has ended (or never was stored).
    pub(super) async fn resume_sequences(&self) -> Result<(), QueueError> {
        for row in self.inner.store.running_sequences().await? {
            let Some(job_id) = &row.current_job_id else {
                continue;
            };
            let status = match self.inner.store.job(job_id).await? {
                Some((_, job)) if job.status.is_terminal() => job.status,
                Some(_) => continue,
                None => JobStatus::Failed,
            };
            self.advance((&row.id, row.current_index), job_id, status)
                .await?;
        }
        Ok(())
    }

    /// The job of step `index` of sequence `id`.
    fn step_job(
        &self,
        id: &str,
        index: i64,
        step: &SequenceStep,
        priority: i64,
        now: i64,
    ) -> Result<NewJob, QueueError> {
        let unstorable = |what, reason| QueueError::Unstorable {
            instance: step.plugin_instance_id.clone(),
            what,
            reason,
        };
        let priority = if step.priority == 0 {
            priority
        } else {
            step.priority
        };
        Ok(NewJob {
            id: new_id(),
            instance: step.plugin_instance_id.clone(),
            args: blob::encode(&Value::List(step.args.clone()))
                .map_err(|e| unstorable("the arguments", e))?,
            kwargs: blob::encode(&Value::Map(step.kwargs.clone()))
                .map_err(|e| unstorable("the keyword arguments", e))?,
            priority,
            rank: self.rank(now, priority),
            submitted_ms: now,
            idempotency_key: None,
            idempotent: false,
            timeout_ms: None,
            sequence: Some((id.to_owned(), index)),
        })
    }
}

/// Steps as stored: a list of `{instance, args, kwargs, priority}`.
fn encode_steps(steps: &[SequenceStep]) -> Result<Vec<u8>, QueueError> {
    let list = steps
        .iter()
        .map(|s| {
            Value::Map(vec![
                (
                    "instance".into(),
                    Value::from(s.plugin_instance_id.as_str()),
                ),
                ("args".into(), Value::List(s.args.clone())),
                ("kwargs".into(), Value::Map(s.kwargs.clone())),
                ("priority".into(), Value::Int(s.priority)),
            ])
        })
        .collect();
    blob::encode(&Value::List(list)).map_err(|reason| QueueError::Unstorable {
        instance: steps
            .first()
            .map(|s| s.plugin_instance_id.clone())
            .unwrap_or_default(),
        what: "the sequence's steps",
        reason,
    })
}

fn decode_steps(bytes: &[u8]) -> Result<Vec<SequenceStep>, String> {
    let Value::List(items) = blob::decode(bytes)? else {
        return Err("its steps are not a list".into());
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Map(fields) = item else {
                return Err("a step is not a map".to_owned());
            };
            let mut step = SequenceStep::default();
            for (k, v) in fields {
                match (k.as_str(), v) {
                    ("instance", Value::Str(s)) => step.plugin_instance_id = s,
                    ("args", Value::List(a)) => step.args = a,
                    ("kwargs", Value::Map(m)) => step.kwargs = m,
                    ("priority", Value::Int(p)) => step.priority = p,
                    (other, _) => return Err(format!("a step's {other:?} is not what it was")),
                }
            }
            Ok(step)
        })
        .collect()
}
