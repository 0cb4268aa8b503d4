//! The host's socket, `<queue file>.sock` (this user's only): how another
//! process on this machine ([`QueueClient`](crate::QueueClient), `cjm-ctl
//! jobs`) tells the host of a job it stored, has it cancel one, or follows
//! one's events, all without polling. One request per connection, one line:
//! `new ID` (answered `ok`), `cancel ID` (`true` or `false`), `watch ID` (a
//! JSON line where the job stands (`"type": "watching"`), then one per
//! event, then `end STATUS` once the job has ended).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::JobQueue;
use crate::lock;
use crate::model::{JobEvent, to_ms};

/// The socket beside the queue file `db`.
pub(crate) fn socket_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sock", db.display()))
}

/// The socket file while its host listens: dropped with the queue, it stops
/// the listener and removes the file.
pub(super) struct Listening {
    path: PathBuf,
    _stop: oneshot::Sender<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = fs_err::remove_file(&self.path);
    }
}

/// One event as a line for a watcher.
pub(crate) fn event_line(e: &JobEvent) -> String {
    let mut line = serde_json::json!({
        "type": e.kind.as_str(),
        "job_id": e.job_id,
        "plugin_instance_id": e.plugin_instance_id,
        "sequence_id": e.sequence_id,
        "sequence_index": e.sequence_index,
        "timestamp_ms": to_ms(e.timestamp),
        "payload": e.payload,
    })
    .to_string();
    line.push('\n');
    line
}

impl JobQueue {
    /// Listens on the socket; `None` (said once) where it cannot, and other
    /// processes' jobs are then picked up when the queue is next opened.
    pub(super) fn listen(inner: &Arc<super::Inner>) -> Option<Listening> {
        let path = socket_path(&inner.options.path);
        // A dead host's socket: this host holds the lock now.
        let _ = fs_err::remove_file(&path);
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "the job queue cannot listen on {} ({e}); jobs other processes submit run \
                     when the queue is next opened",
                    path.display()
                );
                return None;
            }
        };
        let _ = fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        let (stop, mut stopped) = oneshot::channel();
        let queue = Arc::downgrade(inner);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = &mut stopped => return,
                };
                let Some(inner) = queue.upgrade() else { return };
                let me = Self { inner };
                tokio::spawn(async move { me.serve(stream).await });
            }
        });
        Some(Listening { path, _stop: stop })
    }

    async fn serve(self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        if BufReader::new(read).read_line(&mut line).await.is_err() {
            return;
        }
        let (verb, id) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let answer = match verb {
            "new" => {
                self.index_new(id).await;
                "ok\n".to_owned()
            }
            "cancel" => match self.cancel(id).await {
                Ok(done) => format!("{done}\n"),
                Err(e) => format!("error {e}\n"),
            },
            "watch" => return self.stream_events(id, write).await,
            _ => format!("error unknown request {verb:?}\n"),
        };
        let _ = write.write_all(answer.as_bytes()).await;
    }

    /// A job another process stored: indexed, if still pending.
    async fn index_new(&self, id: &str) {
        match self.inner.store.job(id).await {
            Ok(Some((seq, job))) if job.status == crate::JobStatus::Pending => {
                let rank = self.rank(to_ms(job.submitted_at), job.priority);
                lock(&self.inner.index).add(seq, rank, &job.plugin_instance_id);
                self.inner.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read job {id} another process submitted: {e}"),
        }
    }

    /// Writes job `id`'s events to a watcher until the job has ended.
    async fn stream_events(self, id: &str, mut write: tokio::net::unix::OwnedWriteHalf) {
        let mut events = self.events(id);
        let ended = |status: crate::JobStatus| format!("end {status}\n");
        match self.get_job(id).await {
            Ok(Some(job)) if job.status.is_terminal() => {
                let _ = write.write_all(ended(job.status).as_bytes()).await;
                return;
            }
            Ok(Some(job)) => {
                // First where it stands, so the watcher knows it is followed.
                let line = serde_json::json!({
                    "type": "watching",
                    "job_id": job.id,
                    "plugin_instance_id": job.plugin_instance_id,
                    "payload": {
                        "status": job.status.as_str(),
                        "progress": job.progress,
                        "status_message": job.status_message,
                    },
                });
                if write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => {
                let _ = write.write_all(b"error no such job\n").await;
                return;
            }
            Err(e) => {
                let _ = write.write_all(format!("error {e}\n").as_bytes()).await;
                return;
            }
        }
        // The job's end, awaited beside its events: a watcher that lost
        // events (a full buffer) still hears how the job ended.
        let waited = self.wait_for_job(id, None);
        tokio::pin!(waited);
        loop {
            tokio::select! {
                e = events.next() => {
                    let Some(e) = e else { return };
                    if write.write_all(event_line(&e).as_bytes()).await.is_err() {
                        return;
                    }
                }
                job = &mut waited => {
                    while let Some(e) = events.try_next() {
                        if write.write_all(event_line(&e).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    let line = match job {
                        Ok(job) => ended(job.status),
                        Err(e) => format!("error {e}\n"),
                    };
                    let _ = write.write_all(line.as_bytes()).await;
                    return;
                }
            }
        }
    }
}
