//! What the queue tells about its jobs: a job, its wait, the listings and
//! counts, pruning, a job's logs and resource snapshot, and the event streams.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::JobQueue;
use crate::error::QueueError;
use crate::events::EventStream;
use crate::lock;
use crate::model::{Job, JobStatus, QueueStats, ResourceSnapshot, to_ms};
use crate::store::Listing;

impl JobQueue {
    /// The job with this id.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>, QueueError> {
        Ok(self.inner.store.job(id).await?.map(|(seq, mut job)| {
            if job.status == JobStatus::Running {
                job.last_resource_snapshot = lock(&self.inner.index)
                    .running
                    .get(&seq)
                    .and_then(|r| r.snapshot.clone());
            }
            job
        }))
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

    /// How many jobs this host runs now (or is starting): what a graceful
    /// stop waits for.
    pub fn running_now(&self) -> usize {
        lock(&self.inner.index).running_count()
    }

    /// Waits until everything this host has recorded so far (ends, starts,
    /// submits) is durable: before a host leaves.
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.inner.store.flush().await
    }

    /// Counts by status.
    pub async fn get_stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.store.stats().await
    }

    /// Deletes ended jobs beyond [`QueueOptions::max_history`](crate::QueueOptions::max_history) and older than
    /// [`QueueOptions::history_age`](crate::QueueOptions::history_age); returns how many went.
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

    /// The lines of its plugin's log that job `id` wrote while it ran, at most
    /// `lines` (the reference's `get_job_logs`: lines stamped by Python's
    /// `logging` within the job's window, with the unstamped lines after
    /// them; a log without stamps, or a job not started, gives the tail).
    pub async fn get_job_logs(&self, id: &str, lines: usize) -> Result<String, QueueError> {
        let job = self
            .get_job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        let plugin = self
            .inner
            .manager
            .info(&job.plugin_instance_id)
            .map_or_else(|| job.plugin_instance_id.clone(), |i| i.plugin);
        // Over-read: lines outside the window are dropped.
        let raw = self
            .inner
            .manager
            .logs(&plugin, lines.saturating_mul(5).max(lines));
        Ok(crate::logs::slice(
            &raw,
            job.started_at,
            job.completed_at,
            lines,
        ))
    }

    /// What running job `id`'s worker uses now: memory and CPU from procfs,
    /// the GPU and what the worker holds there from the manager's latest
    /// sample. `None` if the job is not running or its worker is gone.
    pub async fn get_resource_snapshot(
        &self,
        id: &str,
    ) -> Result<Option<ResourceSnapshot>, QueueError> {
        let job = self
            .get_job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        if job.status != JobStatus::Running {
            return Ok(None);
        }
        Ok(self.snapshot_of(&job.plugin_instance_id))
    }

    /// What `instance`'s worker uses now; `None` if it has none.
    pub(super) fn snapshot_of(&self, instance: &str) -> Option<ResourceSnapshot> {
        let manager = &self.inner.manager;
        let stats = manager.stats(instance).ok()?;
        let now = std::time::Instant::now();
        let cpu_percent = {
            let mut last = lock(&self.inner.cpu_seen);
            let before = last.insert(stats.pid, (now, stats.cpu_seconds));
            before.map_or(0.0, |(at, cpu)| {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    (stats.cpu_seconds - cpu).max(0.0) / wall * 100.0
                } else {
                    0.0
                }
            })
        };
        let resources = manager.resources();
        let instance = resources.instances.iter().find(|i| i.id == instance);
        let device = instance
            .and_then(|i| i.device)
            .and_then(|d| resources.devices.iter().find(|x| x.index == d));
        let mb = |b: u64| b as f64 / f64::from(1u32 << 20);
        Some(ResourceSnapshot {
            timestamp: SystemTime::now(),
            worker_pid: stats.pid,
            cpu_percent,
            memory_rss_mb: mb(stats.tree_rss_bytes),
            gpu_index: device.map(|d| d.index),
            gpu_memory_mb: device.and(instance).map(|i| mb(i.held.vram_bytes)),
            gpu_type: device.map(|d| d.name.clone()),
            gpu_total_mb: device.map(|d| mb(d.total_bytes)),
            gpu_load_percent: None,
        })
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
}
