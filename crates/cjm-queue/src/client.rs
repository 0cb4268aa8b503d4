//! [`QueueClient`]: the queue from another process than its host's (an
//! operator's shell, `cjm-ctl jobs`). It stores and reads jobs in the queue
//! file directly, without the host lock, and reaches the host, when one works
//! the queue, on its socket: a stored job is picked up at once, a cancel is
//! the host's (phases and all), and a job's events stream as they happen.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cjm_core::{ErrorCategory, JobError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::QueueError;
use crate::model::{Job, JobStatus, QueueStats, Submit, to_ms};
use crate::queue::poke::socket_path;
use crate::store::{Listing, SqliteStore, Store};

/// The queue at a path, seen from beside its host.
#[derive(Debug)]
pub struct QueueClient {
    store: SqliteStore,
    socket: PathBuf,
    aging: Duration,
}

impl QueueClient {
    /// The queue at `path` (created if missing), with the default aging.
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        Ok(Self {
            store: SqliteStore::open_client(path).await?,
            socket: socket_path(path),
            aging: crate::QueueOptions::new(path).aging,
        })
    }

    /// Whether a host works the queue now (it answers on its socket).
    pub async fn host_running(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }

    /// One request to the host; `None` when no host listens.
    async fn ask(&self, request: &str) -> Result<Option<String>, QueueError> {
        let Ok(mut stream) = UnixStream::connect(&self.socket).await else {
            return Ok(None);
        };
        let io = |source| QueueError::Io {
            path: self.socket.clone(),
            action: "talk to the host on",
            source,
        };
        stream
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .await
            .map_err(io)?;
        Ok(Some(answer.trim().to_owned()))
    }

    /// Stores a job (the instance is not checked here: the host refuses, when
    /// it runs it, one it has not loaded) and tells the host, if one runs.
    /// Returns its id, or the first job's for a key used before.
    pub async fn submit(&self, job: Submit) -> Result<String, QueueError> {
        let inserted = self
            .store
            .insert(crate::queue::new_job(&job, self.aging)?)
            .await?;
        if !inserted.existed {
            self.ask(&format!("new {}", inserted.id)).await?;
        }
        Ok(inserted.id)
    }

    /// Cancels a job: through the host when one runs (a running job is
    /// stopped in phases); otherwise a pending job is cancelled in the file.
    /// `false` if it had ended, or runs under a host that cannot be reached.
    pub async fn cancel(&self, id: &str) -> Result<bool, QueueError> {
        if let Some(answer) = self.ask(&format!("cancel {id}")).await? {
            return match answer.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(QueueError::Host(
                    other.strip_prefix("error ").unwrap_or(other).to_owned(),
                )),
            };
        }
        let (seq, job) = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        if job.status != JobStatus::Pending {
            return Ok(false);
        }
        let now = SystemTime::now();
        let error = JobError::new(
            ErrorCategory::Transient,
            "cancelled before it ran",
            false,
            "PluginCancelledError()",
        )
        .with_occurred_at(now);
        self.store.cancel_pending(seq, to_ms(now), error).await
    }

    /// The job with this id.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>, QueueError> {
        Ok(self.store.job(id).await?.map(|(_, j)| j))
    }

    /// Jobs by status ([`Listing`]).
    pub async fn list(&self, listing: Listing) -> Result<Vec<Job>, QueueError> {
        self.store.list(listing).await
    }

    /// Counts by status.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.store.stats().await
    }

    /// Follows job `id` through the host: `on_event` gets each event as the
    /// host's JSON line (`type`, `job_id`, `payload`, …) until the job ends;
    /// returns how it ended. A job that has ended already returns at once;
    /// [`QueueError::NoJob`] for a job the file does not hold, and
    /// [`QueueError::NoHost`] when no host runs it.
    pub async fn watch(
        &self,
        id: &str,
        mut on_event: impl FnMut(&serde_json::Value),
    ) -> Result<JobStatus, QueueError> {
        let job = self
            .get_job(id)
            .await?
            .ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        if job.status.is_terminal() {
            return Ok(job.status);
        }
        let Ok(mut stream) = UnixStream::connect(&self.socket).await else {
            return Err(QueueError::NoHost(self.socket.clone()));
        };
        let io = |source| QueueError::Io {
            path: self.socket.clone(),
            action: "talk to the host on",
            source,
        };
        stream
            .write_all(format!("watch {id}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut lines = BufReader::new(stream).lines();
        while let Some(line) = lines.next_line().await.map_err(io)? {
            if let Some(status) = line.strip_prefix("end ") {
                return JobStatus::parse(status)
                    .ok_or_else(|| QueueError::Host(format!("a job's status {status:?}")));
            }
            if let Some(e) = line.strip_prefix("error ") {
                return Err(QueueError::Host(e.to_owned()));
            }
            if let Ok(event) = serde_json::from_str(&line) {
                on_event(&event);
            }
        }
        Err(QueueError::Host(
            "the host stopped before the job ended".to_owned(),
        ))
    }
}
