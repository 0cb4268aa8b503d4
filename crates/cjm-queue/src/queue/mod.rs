//! [`JobQueue`]: submits go to the store first, then to the dispatch index;
//! the runner takes the best pending job of every instance that has room
//! (priority with aging, then submission order), logs its start, runs it
//! through the manager (admission, workers, retries for memory) and records
//! how it ended, then tells the subscribers and waiters.
//!
//! The dispatch index (`index.rs`) holds three numbers per pending job, never
//! its arguments; a job's arguments are read back when it starts, a few of an
//! instance's next jobs at a time. The runner (`runner.rs`) makes a start
//! durable by the start log (one `write(2)`), not by a commit, and the store
//! learns of it in the next batch; it also stops jobs (cancels, timeouts),
//! puts failed ones back for a retry, and follows the manager's admission for
//! block reasons. `sequences.rs` runs jobs one after another; `reads.rs` is
//! what the queue tells about its jobs. This file: opening (recovery),
//! submitting, cancelling, reordering.

mod follow;
mod index;
pub(crate) mod poke;
mod reads;
mod reports;
mod runner;
mod sequences;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cjm_core::{ErrorCategory, JobError, PluginError, PluginRef};
use cjm_manager::{Manager, ManagerError};
use cjm_proto::Value;
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use crate::error::QueueError;
use crate::events::Bus;
use crate::model::{JobEvent, JobEventType, JobStatus, Submit, to_ms};
use crate::retry::RetryPolicy;
use crate::startlog::StartLog;
use crate::store::{NewJob, SqliteStore, Store};
use crate::{blob, lock};

use self::index::Index;

/// How many pending jobs are read at a time into the index on open.
const PAGE: usize = 10_000;

/// How a queue runs.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The queue's database file.
    pub path: PathBuf,
    /// The most jobs running at once, over all instances.
    pub max_running: usize,
    /// The most jobs running at once on one instance (1: as the reference,
    /// whose plugins never see two jobs at once).
    pub per_instance: usize,
    /// How long a pending job waits to gain one priority level, so that no
    /// job starves behind a stream of higher-priority ones.
    pub aging: Duration,
    /// How many ended jobs the history keeps.
    pub max_history: usize,
    /// Ended jobs older than this are pruned; `None`: kept by count only.
    pub history_age: Option<Duration>,
    /// Events each subscriber buffers before it loses some.
    pub event_buffer: usize,
    /// When a failed job runs again, and after how long.
    pub retry: RetryPolicy,
    /// How long each phase of a running job's cancel waits for it to stop
    /// (asking the plugin, then interrupting its thread, then killing the
    /// worker, which is then restarted); a timeout cancels the same way.
    pub cancel_grace: Duration,
    /// How often each running job's worker is sampled, each sample kept as
    /// the job's `last_resource_snapshot` and published as a
    /// `RESOURCE_SNAPSHOT` event; `None`: never (the reference's default, a
    /// poll a second and a sample every 4th, is 4 s).
    pub resource_snapshot_every: Option<Duration>,
}

impl QueueOptions {
    /// A queue in `path` with the defaults: 64 jobs at once, one per
    /// instance, a priority level per minute of waiting, 10,000 ended jobs
    /// kept for at most 7 days, retries as [`RetryPolicy::default`], 2 s of
    /// grace for each phase of a cancel, a resource snapshot of each running
    /// job every 4 s.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_running: 64,
            per_instance: 1,
            aging: Duration::from_mins(1),
            max_history: 10_000,
            history_age: Some(Duration::from_hours(24 * 7)),
            event_buffer: 1024,
            retry: RetryPolicy::default(),
            cancel_grace: Duration::from_secs(2),
            resource_snapshot_every: Some(Duration::from_secs(4)),
        }
    }
}

/// A durable job queue on a manager.
///
/// Cheap to clone; every clone is the same queue.
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("path", &self.inner.options.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    manager: Manager,
    store: Box<dyn Store>,
    starts: StartLog,
    options: QueueOptions,
    index: Mutex<Index>,
    bus: Bus,
    /// Wakes the dispatcher: a job was added, or room was made.
    wake: Notify,
    /// Callers of `wait_for_job`, by job id.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    running: AtomicBool,
    /// Each worker's CPU time at its last resource snapshot, by pid.
    cpu_seen: Mutex<HashMap<u32, (std::time::Instant, f64)>>,
    /// The socket other processes reach this host on, while it listens.
    listening: Mutex<Option<poke::Listening>>,
}

impl JobQueue {
    /// Opens the queue at `options.path` for this host: settles the jobs a
    /// dead host left running (the idempotent ones re-queued, the others
    /// failed with a reason that says so), then indexes the pending ones.
    /// Jobs run once [`start`](Self::start) is called.
    pub async fn open(manager: Manager, options: QueueOptions) -> Result<Self, QueueError> {
        let store = SqliteStore::open(&options.path).await?;
        Self::with_store(manager, Box::new(store), options).await
    }

    /// [`open`](Self::open) on a store of the caller's.
    pub async fn with_store(
        manager: Manager,
        store: Box<dyn Store>,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let (starts, started) = StartLog::open(&options.path)?;
        let queue = Self {
            inner: Arc::new(Inner {
                manager,
                store,
                starts,
                bus: Bus::new(options.event_buffer),
                options,
                index: Mutex::new(Index::default()),
                wake: Notify::new(),
                waiters: Mutex::new(HashMap::new()),
                running: AtomicBool::new(false),
                cpu_seen: Mutex::new(HashMap::new()),
                listening: Mutex::new(None),
            }),
        };
        // Before the pending jobs are read: a job stored meanwhile by another
        // process is told of on the socket, not missed.
        *lock(&queue.inner.listening) = Self::listen(&queue.inner);
        queue.recover(started).await?;
        queue.inner.starts.clear()?;
        queue.resume_sequences().await?;
        queue.watch_manager();
        queue.sample_running();
        let now = to_ms(SystemTime::now());
        let mut after = 0;
        loop {
            let page = queue.inner.store.pending_after(after, PAGE).await?;
            let full = page.len() == PAGE;
            let mut index = lock(&queue.inner.index);
            for row in page {
                index.add_due(row.seq, row.rank, &row.instance, row.run_after_ms, now);
                after = row.seq;
            }
            if !full {
                break;
            }
        }
        Ok(queue)
    }

    async fn recover(&self, started: Vec<i64>) -> Result<(), QueueError> {
        let now = SystemTime::now();
        let error = JobError::new(
            ErrorCategory::Transient,
            "the host running this job died before it ended; it was not submitted as \
             idempotent, so it was not run again (submit it again, or submit such jobs \
             with `idempotent` set to have them re-run)",
            false,
            "HostDied()",
        )
        .with_occurred_at(now);
        let recovered = self.inner.store.recover(to_ms(now), started, error).await?;
        for r in recovered {
            let to = r.status;
            tracing::warn!(
                "job {} on instance {} was running when its host died: {}",
                r.id,
                r.instance,
                if to == JobStatus::Pending {
                    "re-queued (idempotent)"
                } else {
                    "failed"
                }
            );
            self.publish_transition(&r.id, &r.instance, None, JobStatus::Running, to);
        }
        Ok(())
    }

    /// Starts running jobs (on the current tokio runtime).
    pub fn start(&self) {
        if self.inner.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.dispatch().await });
    }

    /// Stops starting jobs; running ones finish. [`start`](Self::start) resumes.
    pub fn stop(&self) {
        self.inner.running.store(false, Ordering::Release);
        self.inner.wake.notify_one();
    }

    /// The manager it runs jobs on.
    pub fn manager(&self) -> &Manager {
        &self.inner.manager
    }

    /// Submits `execute(*args, **kwargs)` on `instance` at `priority`; returns
    /// the job's id once the job is stored.
    pub async fn submit(
        &self,
        instance: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        priority: i64,
    ) -> Result<String, QueueError> {
        self.submit_with(Submit::new(instance, args, kwargs).priority(priority))
            .await
    }

    /// Submits a job with cjm's options (idempotency key, re-run after a host
    /// death, timeout). A key already used returns the first job's id.
    pub async fn submit_with(&self, job: Submit) -> Result<String, QueueError> {
        self.check_instance(&job.instance)?;
        let new = new_job(&job, self.inner.options.aging)?;
        let (rank, instance) = (new.rank, new.instance.clone());
        let inserted = self.inner.store.insert(new).await?;
        if !inserted.existed {
            lock(&self.inner.index).add(inserted.seq, rank, &instance);
            self.inner.wake.notify_one();
        }
        Ok(inserted.id)
    }

    /// Refuses jobs for an instance that is not loaded or is disabled, with the
    /// reference's typed errors.
    fn check_instance(&self, instance: &str) -> Result<(), QueueError> {
        let plugin = || PluginRef::new(instance);
        match self.inner.manager.info(instance) {
            None => Err(ManagerError::Plugin(PluginError::NotLoaded { plugin: plugin() }).into()),
            Some(info) if !info.enabled => {
                Err(ManagerError::Plugin(PluginError::Disabled { plugin: plugin() }).into())
            }
            Some(_) => Ok(()),
        }
    }

    /// The dispatch order of a job submitted at `ms` with `priority`: it runs
    /// as if submitted one aging period earlier per priority level.
    fn rank(&self, ms: i64, priority: i64) -> i64 {
        rank(ms, priority, self.inner.options.aging)
    }

    /// Cancels a job: a pending one at once (it never runs); a running one
    /// in phases (the plugin asked to stop, then its thread interrupted, then
    /// its worker killed and restarted), each recorded on the job and
    /// published. `false` if the job had already ended.
    pub async fn cancel(&self, id: &str) -> Result<bool, QueueError> {
        let (seq, job) = self
            .inner
            .store
            .job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        if job.status.is_terminal() {
            return Ok(false);
        }
        let now = SystemTime::now();
        // Taken out of the index first, so the runner cannot start it
        // meanwhile; one the runner has taken is a running job.
        let running = {
            let mut index = lock(&self.inner.index);
            let running = index.running.get(&seq).map(|r| r.cancel.clone());
            if running.is_none() {
                index.remove(seq);
                index.ahead.remove(&seq);
            }
            running
        };
        if let Some(cancel) = running {
            self.inner.store.cancel_requested(seq, to_ms(now)).await?;
            cancel.cancel();
            return Ok(true);
        }
        let error = JobError::new(
            ErrorCategory::Transient,
            "cancelled before it ran",
            false,
            "PluginCancelledError()",
        )
        .with_occurred_at(now);
        if !self
            .inner
            .store
            .cancel_pending(seq, to_ms(now), error)
            .await?
        {
            return Ok(false);
        }
        self.publish_transition(
            id,
            &job.plugin_instance_id,
            job.sequence_id.as_ref().zip(job.sequence_index),
            JobStatus::Pending,
            JobStatus::Cancelled,
        );
        self.release_waiters(id);
        if let Some(sequence) = job.sequence_id.as_deref().zip(job.sequence_index) {
            self.advance(sequence, id, JobStatus::Cancelled).await?;
        }
        Ok(true)
    }

    /// Gives a pending job a new priority; `false` if it is not pending.
    pub async fn reorder(&self, id: &str, priority: i64) -> Result<bool, QueueError> {
        let (seq, job) = self
            .inner
            .store
            .job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        let rank = self.rank(to_ms(job.submitted_at), priority);
        if !self.inner.store.reprioritize(seq, priority, rank).await? {
            return Ok(false);
        }
        let mut index = lock(&self.inner.index);
        if index.remove(seq) {
            index.add(seq, rank, &job.plugin_instance_id);
        }
        Ok(true)
    }

    fn publish_transition(
        &self,
        id: &str,
        instance: &str,
        sequence: Option<(&String, i64)>,
        from: JobStatus,
        to: JobStatus,
    ) {
        self.publish(
            JobEventType::StateTransition,
            id,
            instance,
            sequence,
            || [("from", json!(from.as_str())), ("to", json!(to.as_str()))],
        );
    }

    /// Publishes an event of `kind` about job `id`; its payload is built only
    /// when somebody listens.
    fn publish<const N: usize>(
        &self,
        kind: JobEventType,
        id: &str,
        instance: &str,
        sequence: Option<(&String, i64)>,
        payload: impl FnOnce() -> [(&'static str, serde_json::Value); N],
    ) {
        if self.inner.bus.is_idle() {
            return;
        }
        let payload = payload()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        self.inner.bus.publish(&JobEvent {
            kind,
            job_id: id.to_owned(),
            plugin_instance_id: instance.to_owned(),
            sequence_id: sequence.map(|(s, _)| s.clone()),
            sequence_index: sequence.map(|(_, i)| i),
            timestamp: SystemTime::now(),
            payload,
        });
    }

    fn release_waiters(&self, id: &str) {
        if let Some(waiting) = lock(&self.inner.waiters).remove(id) {
            for w in waiting {
                let _ = w.send(());
            }
        }
    }
}

/// The dispatch order of a job submitted at `ms` with `priority`, when a
/// waiting job gains a level per `aging`.
pub(crate) fn rank(ms: i64, priority: i64, aging: Duration) -> i64 {
    let aging = i64::try_from(aging.as_millis()).unwrap_or(i64::MAX);
    ms.saturating_sub(priority.saturating_mul(aging))
}

/// The row a submit stores, submitted now.
pub(crate) fn new_job(job: &Submit, aging: Duration) -> Result<NewJob, QueueError> {
    let unstorable = |what, reason| QueueError::Unstorable {
        instance: job.instance.clone(),
        what,
        reason,
    };
    let args =
        blob::encode(&Value::List(job.args.clone())).map_err(|e| unstorable("the arguments", e))?;
    let kwargs = blob::encode(&Value::Map(job.kwargs.clone()))
        .map_err(|e| unstorable("the keyword arguments", e))?;
    let submitted_ms = to_ms(SystemTime::now());
    Ok(NewJob {
        id: new_id(),
        instance: job.instance.clone(),
        args,
        kwargs,
        priority: job.priority,
        rank: rank(submitted_ms, job.priority, aging),
        submitted_ms,
        idempotency_key: job.idempotency_key.clone(),
        idempotent: job.idempotent,
        timeout_ms: job
            .timeout
            .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
        sequence: None,
    })
}

/// A random UUID (version 4), as the reference's job ids are.
fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No randomness from the OS: time and a counter are unique enough here.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = to_ms(SystemTime::now()).to_le_bytes();
        let n = N.fetch_add(1, Ordering::Relaxed).to_le_bytes();
        b[..8].copy_from_slice(&t);
        b[8..].copy_from_slice(&n);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = b.iter().fold(String::with_capacity(32), |mut h, x| {
        use std::fmt::Write;
        let _ = write!(h, "{x:02x}");
        h
    });
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
