//! What a running job tells as it runs: the plugin's progress
//! (`PROGRESS_CHANGED`, and the job's `progress` / `status_message` in the
//! store) and log records (`LOG_APPENDED`), pushed by the worker as they
//! happen; the manager's tries again after it ran out of memory
//! (`RETRY_STARTED`); and its worker's resources, sampled every
//! [`QueueOptions::resource_snapshot_every`](crate::QueueOptions::resource_snapshot_every)
//! (`RESOURCE_SNAPSHOT`, and the job's `last_resource_snapshot`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cjm_manager::{CallCancel, CallReport};
use serde_json::json;

use super::JobQueue;
use crate::lock;
use crate::model::JobEventType;
use crate::store::Claimed;

/// The most often a running job's progress is written to the store; what
/// is reported between two writes is published at once and written with the
/// next one.
const PROGRESS_WRITE_EVERY: Duration = Duration::from_millis(100);

/// A running job's progress: the latest reported, and when it was last
/// written.
struct Progress {
    latest: (f64, String),
    written: Option<Instant>,
    /// A write of `latest` is due (one is scheduled).
    due: bool,
}

/// One running job, as its reports are heard.
struct Heard {
    queue: JobQueue,
    seq: i64,
    instance: Arc<str>,
    id: String,
    sequence: Option<(String, i64)>,
    progress: Mutex<Progress>,
    runtime: tokio::runtime::Handle,
}

impl JobQueue {
    /// Tells job `seq`'s subscribers, and its row, what its plugin reports
    /// while `cancel`'s call runs.
    pub(super) fn hear_reports(
        &self,
        seq: i64,
        instance: &Arc<str>,
        claimed: &Claimed,
        cancel: &CallCancel,
    ) {
        let heard = Arc::new(Heard {
            queue: self.clone(),
            seq,
            instance: Arc::clone(instance),
            id: claimed.id.clone(),
            sequence: claimed.sequence.clone(),
            progress: Mutex::new(Progress {
                latest: (0.0, String::new()),
                written: None,
                due: false,
            }),
            runtime: tokio::runtime::Handle::current(),
        });
        cancel.on_report(move |report| match report {
            CallReport::Progress { progress, message } => heard.progress(progress, message),
            CallReport::Log {
                level,
                logger,
                message,
            } => heard.log(level, &logger, &message),
            CallReport::Retrying { attempt, error } => heard.retrying(attempt, &error),
            _ => {}
        });
    }

    /// Samples each running job's worker every
    /// [`QueueOptions::resource_snapshot_every`](crate::QueueOptions::resource_snapshot_every),
    /// for as long as the queue is open.
    pub(super) fn sample_running(&self) {
        let Some(every) = self.inner.options.resource_snapshot_every else {
            return;
        };
        let queue = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = queue.upgrade() else { return };
                Self { inner }.sample_once();
            }
        });
    }

    /// One snapshot of each running job's worker (a job whose id is not read
    /// yet waits for the next round).
    fn sample_once(&self) {
        let running: Vec<_> = lock(&self.inner.index)
            .running
            .iter()
            .filter_map(|(seq, r)| Some((*seq, Arc::clone(&r.instance), r.job.clone()?)))
            .collect();
        for (seq, instance, (id, sequence)) in running {
            let Some(snapshot) = self.snapshot_of(&instance) else {
                continue;
            };
            let payload = snapshot.to_json();
            match lock(&self.inner.index).running.get_mut(&seq) {
                Some(r) => r.snapshot = Some(snapshot),
                // It ended meanwhile.
                None => continue,
            }
            let sequence = sequence.as_ref().map(|(s, i)| (s, *i));
            self.publish(
                JobEventType::ResourceSnapshot,
                &id,
                &instance,
                sequence,
                || [("snapshot", payload)],
            );
        }
    }
}

/// Python's name for logging level `level`.
fn level_name(level: i64) -> String {
    match level {
        50 => "CRITICAL".into(),
        40 => "ERROR".into(),
        30 => "WARNING".into(),
        20 => "INFO".into(),
        10 => "DEBUG".into(),
        0 => "NOTSET".into(),
        other => format!("Level {other}"),
    }
}

impl Heard {
    fn sequence(&self) -> Option<(&String, i64)> {
        self.sequence.as_ref().map(|(s, i)| (s, *i))
    }

    /// A change of progress is published at once and written at most every
    /// [`PROGRESS_WRITE_EVERY`]; a repeat is neither (the reference
    /// publishes changes only).
    fn progress(self: &Arc<Self>, progress: f64, message: String) {
        let write_in = {
            let mut at = lock(&self.progress);
            if at.latest.0.to_bits() == progress.to_bits() && at.latest.1 == message {
                return;
            }
            at.latest = (progress, message.clone());
            if at.due {
                None
            } else {
                let wait = at.written.map_or(Duration::ZERO, |w| {
                    PROGRESS_WRITE_EVERY.saturating_sub(w.elapsed())
                });
                if wait.is_zero() {
                    at.written = Some(Instant::now());
                } else {
                    at.due = true;
                }
                Some(wait)
            }
        };
        self.queue.publish(
            JobEventType::ProgressChanged,
            &self.id,
            &self.instance,
            self.sequence(),
            || {
                [
                    ("progress", json!(progress)),
                    ("status_message", json!(message)),
                ]
            },
        );
        match write_in {
            Some(Duration::ZERO) => {
                drop(self.queue.inner.store.progress(self.seq, progress, message));
            }
            Some(wait) => {
                let me = Arc::clone(self);
                self.runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    let (progress, message) = {
                        let mut at = lock(&me.progress);
                        at.due = false;
                        at.written = Some(Instant::now());
                        at.latest.clone()
                    };
                    drop(me.queue.inner.store.progress(me.seq, progress, message));
                });
            }
            None => {}
        }
    }

    /// The manager tries the job's call again after try `attempt` ran out of
    /// memory: `RETRY_STARTED`, as the reference publishes for its manager's
    /// retries (the job's `retry_count` counts the queue's own tries only).
    fn retrying(&self, attempt: usize, error: &str) {
        self.queue.publish(
            JobEventType::RetryStarted,
            &self.id,
            &self.instance,
            self.sequence(),
            || {
                [
                    ("attempt", json!(attempt)),
                    ("category", json!("resource")),
                    ("error", json!(error)),
                    ("delay_s", json!(0.0)),
                    ("by", json!("manager")),
                    (
                        "exception_repr",
                        json!(format!("PluginResourceError({error:?})")),
                    ),
                    ("exception_category", json!("resource")),
                ]
            },
        );
    }

    /// A log record, published.
    fn log(&self, level: i64, logger: &str, message: &str) {
        self.queue.publish(
            JobEventType::LogAppended,
            &self.id,
            &self.instance,
            self.sequence(),
            || {
                [
                    ("level", json!(level_name(level))),
                    ("levelno", json!(level)),
                    ("logger", json!(logger)),
                    ("message", json!(message)),
                ]
            },
        );
    }
}
