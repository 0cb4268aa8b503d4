//! [`JobQueue`]: submits go to the store first, then to the dispatch index;
//! the runner takes the best pending job of every instance that has room
//! (priority with aging, then submission order), logs its start, runs it
//! through the manager (admission, workers, retries for memory) and records
//! how it ended, then tells the subscribers and waiters.
//!
//! The dispatch index holds three numbers per pending job, never its
//! arguments, so a million pending jobs cost tens of MB; a job's arguments are
//! read back when it starts, [`LOOKAHEAD`] of an instance's next jobs at a
//! time. A start is made durable by the start log (one `write(2)`), not by a
//! commit, and the store learns of it in the next batch.

use std::collections::{BTreeSet, HashMap};
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
use crate::events::{Bus, EventStream};
use crate::model::{Job, JobEvent, JobEventType, JobStatus, QueueStats, Submit, to_ms};
use crate::startlog::StartLog;
use crate::store::{Claimed, Finish, Listing, NewJob, SqliteStore, Store};
use crate::{blob, lock};

/// How many of an instance's next pending jobs are read at once when one starts.
const LOOKAHEAD: usize = 32;

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
}

impl QueueOptions {
    /// A queue in `path` with the defaults: 64 jobs at once, one per
    /// instance, a priority level per minute of waiting, 10,000 ended jobs
    /// kept for at most 7 days.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_running: 64,
            per_instance: 1,
            aging: Duration::from_mins(1),
            max_history: 10_000,
            history_age: Some(Duration::from_hours(24 * 7)),
            event_buffer: 1024,
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
}

/// The pending jobs by instance, and what runs.
#[derive(Default)]
struct Index {
    /// Each instance's pending jobs as (rank, seq), best first.
    pending: HashMap<Arc<str>, BTreeSet<(i64, i64)>>,
    /// Where each pending job is, by seq.
    where_pending: HashMap<i64, (Arc<str>, i64)>,
    /// How many jobs each instance runs (or is starting).
    busy: HashMap<Arc<str>, usize>,
    /// Running jobs by seq: their id and instance.
    running: HashMap<i64, (String, Arc<str>)>,
    /// What pending jobs read ahead run, by seq.
    ahead: HashMap<i64, Claimed>,
}

impl Index {
    fn add(&mut self, seq: i64, rank: i64, instance: &str) {
        if self.where_pending.contains_key(&seq) || self.running.contains_key(&seq) {
            return;
        }
        let key = match self.pending.get_key_value(instance) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(instance),
        };
        self.pending
            .entry(Arc::clone(&key))
            .or_default()
            .insert((rank, seq));
        self.where_pending.insert(seq, (key, rank));
    }

    /// Takes pending job `seq` out (to start it, or cancelled); what was read
    /// ahead for it stays for [`ahead_or_next`](Self::ahead_or_next).
    fn remove(&mut self, seq: i64) -> bool {
        let Some((instance, rank)) = self.where_pending.remove(&seq) else {
            return false;
        };
        if let Some(set) = self.pending.get_mut(&instance) {
            set.remove(&(rank, seq));
            if set.is_empty() {
                self.pending.remove(&instance);
            }
        }
        true
    }

    /// The best pending job of an instance that has room, taken out and
    /// counted as running.
    fn take(&mut self, per_instance: usize) -> Option<(i64, Arc<str>)> {
        let (instance, &(rank, seq)) = self
            .pending
            .iter()
            .filter(|(i, _)| self.busy.get(*i).copied().unwrap_or(0) < per_instance)
            .filter_map(|(i, set)| set.first().map(|first| (i, first)))
            .min_by_key(|(_, first)| **first)?;
        let instance = Arc::clone(instance);
        let _ = rank;
        self.remove(seq);
        *self.busy.entry(Arc::clone(&instance)).or_default() += 1;
        // Taken: a cancel from now on is a running job's.
        self.running
            .insert(seq, (String::new(), Arc::clone(&instance)));
        Some((seq, instance))
    }

    fn done(&mut self, seq: i64, instance: &Arc<str>) {
        self.running.remove(&seq);
        if let Some(n) = self.busy.get_mut(instance) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(instance);
            }
        }
    }

    fn running_count(&self) -> usize {
        self.busy.values().sum()
    }

    /// What job `seq` (just taken) runs, if it was read ahead; else the jobs to
    /// read: it and the next ones of its instance not read yet.
    fn ahead_or_next(&mut self, seq: i64, instance: &str) -> Result<Claimed, Vec<i64>> {
        if let Some(c) = self.ahead.remove(&seq) {
            return Ok(c);
        }
        let mut seqs = vec![seq];
        if let Some(set) = self.pending.get(instance) {
            seqs.extend(
                set.iter()
                    .map(|&(_, s)| s)
                    .filter(|s| !self.ahead.contains_key(s))
                    .take(LOOKAHEAD - 1),
            );
        }
        Err(seqs)
    }
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
            }),
        };
        queue.recover(started).await?;
        queue.inner.starts.clear()?;
        let pending = queue.inner.store.pending_after(0).await?;
        {
            let mut index = lock(&queue.inner.index);
            for row in pending {
                index.add(row.seq, row.rank, &row.instance);
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
        let unstorable = |what, reason| QueueError::Unstorable {
            instance: job.instance.clone(),
            what,
            reason,
        };
        let args = blob::encode(&Value::List(job.args.clone()))
            .map_err(|e| unstorable("the arguments", e))?;
        let kwargs = blob::encode(&Value::Map(job.kwargs.clone()))
            .map_err(|e| unstorable("the keyword arguments", e))?;
        let submitted_ms = to_ms(SystemTime::now());
        let inserted = self
            .inner
            .store
            .insert(NewJob {
                id: new_id(),
                instance: job.instance.clone(),
                args,
                kwargs,
                priority: job.priority,
                rank: self.rank(submitted_ms, job.priority),
                submitted_ms,
                idempotency_key: job.idempotency_key.clone(),
                idempotent: job.idempotent,
                timeout_ms: job
                    .timeout
                    .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
                sequence: None,
            })
            .await?;
        if !inserted.existed {
            lock(&self.inner.index).add(
                inserted.seq,
                self.rank(submitted_ms, job.priority),
                &job.instance,
            );
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
        let aging = i64::try_from(self.inner.options.aging.as_millis()).unwrap_or(i64::MAX);
        ms.saturating_sub(priority.saturating_mul(aging))
    }

    /// Cancels a pending job; `false` if it is not pending (running jobs are
    /// not cancelled yet: the cancel is recorded on the job).
    pub async fn cancel(&self, id: &str) -> Result<bool, QueueError> {
        let (seq, job) = self
            .inner
            .store
            .job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        let now = SystemTime::now();
        match job.status {
            JobStatus::Pending => {
                // Taken out of the index first, so the runner cannot start
                // it meanwhile; one the runner has taken is a running job.
                let taken = {
                    let mut index = lock(&self.inner.index);
                    let taken = index.running.contains_key(&seq);
                    if !taken {
                        index.remove(seq);
                        index.ahead.remove(&seq);
                    }
                    taken
                };
                if taken {
                    self.inner.store.cancel_requested(seq, to_ms(now)).await?;
                    return Ok(false);
                }
                let error = JobError::new(
                    ErrorCategory::Fatal,
                    "cancelled before it ran",
                    false,
                    "CancelledError()",
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
                Ok(true)
            }
            JobStatus::Running => {
                self.inner.store.cancel_requested(seq, to_ms(now)).await?;
                Ok(false)
            }
            _ => Ok(false),
        }
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

    /// The job with this id.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>, QueueError> {
        Ok(self.inner.store.job(id).await?.map(|(_, j)| j))
    }

    /// Waits until the job has ended, at most `timeout`.
    pub async fn wait_for_job(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<Job, QueueError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiters)
            .entry(id.to_owned())
            .or_default()
            .push(tx);
        // Registered first, so an end between this read and the wait is not missed.
        let job = self
            .get_job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        if job.status.is_terminal() {
            return Ok(job);
        }
        match timeout {
            Some(t) => drop(tokio::time::timeout(t, rx).await),
            None => drop(rx.await),
        }
        let job = self
            .get_job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        if job.status.is_terminal() {
            return Ok(job);
        }
        Err(QueueError::WaitTimedOut {
            job: id.to_owned(),
            status: job.status,
            waited: timeout.unwrap_or_default(),
        })
    }

    /// Pending jobs, in the order they will run.
    pub async fn get_pending(&self) -> Result<Vec<Job>, QueueError> {
        self.inner.store.list(Listing::Pending).await
    }

    /// Running jobs (several may run at once).
    pub async fn get_running(&self) -> Result<Vec<Job>, QueueError> {
        self.inner.store.list(Listing::Running).await
    }

    /// Ended jobs, most recent first, at most `limit`.
    pub async fn get_history(&self, limit: Option<usize>) -> Result<Vec<Job>, QueueError> {
        self.inner.store.list(Listing::History(limit)).await
    }

    /// Counts by status.
    pub async fn get_stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.store.stats().await
    }

    /// Deletes ended jobs beyond [`QueueOptions::max_history`] and older than
    /// [`QueueOptions::history_age`]; returns how many went.
    pub async fn prune(&self) -> Result<u64, QueueError> {
        let before = self
            .inner
            .options
            .history_age
            .and_then(|age| SystemTime::now().checked_sub(age))
            .map(to_ms);
        self.inner
            .store
            .prune(self.inner.options.max_history, before)
            .await
    }

    /// Events of job `id`.
    pub fn events(&self, id: &str) -> EventStream {
        self.inner.bus.job(id)
    }

    /// Events of every job of sequence `id`.
    pub fn events_for_sequence(&self, id: &str) -> EventStream {
        self.inner.bus.sequence(id)
    }

    /// Every event.
    pub fn all_events(&self) -> EventStream {
        self.inner.bus.all()
    }

    fn publish_transition(
        &self,
        id: &str,
        instance: &str,
        sequence: Option<(&String, i64)>,
        from: JobStatus,
        to: JobStatus,
    ) {
        if self.inner.bus.is_idle() {
            return;
        }
        let mut payload = serde_json::Map::new();
        payload.insert("from".into(), json!(from.as_str()));
        payload.insert("to".into(), json!(to.as_str()));
        self.inner.bus.publish(&JobEvent {
            kind: JobEventType::StateTransition,
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

    /// The dispatcher: starts the best pending job of each instance with room,
    /// up to the global limit, then sleeps until woken.
    async fn dispatch(&self) {
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
