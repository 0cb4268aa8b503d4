//! The queue from beside its host: jobs another process stores are picked up
//! at once, cancels go through the host, a job's events stream to a watcher,
//! and without a host the file still takes jobs and cancels.

use cjm_proto::Value;
use cjm_queue::{JobEventType, JobStatus, QueueClient, QueueError, Submit};

use crate::support::{LIMIT, Project, action, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_client_stores_runs_on_the_host_at_once_and_can_be_watched() {
    let p = Project::new("client-submit");
    let q = p.queue(&["counter"]).await;
    let client = QueueClient::open(&p.queue_path()).await.unwrap();
    assert!(client.host_running().await);
    let id = client
        .submit(Submit::new("counter", vec![Value::Int(5)], vec![]))
        .await
        .unwrap();
    // The host was told on its socket; nothing polls.
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(
        job.result.unwrap().to_json()["args"],
        serde_json::json!([5])
    );
    // A job that ended is watched to its end at once.
    assert_eq!(
        client.watch(&id, |_| {}).await.unwrap(),
        JobStatus::Completed
    );

    let slow = client
        .submit(Submit::new("counter", vec![], action("wait")))
        .await
        .unwrap();
    eventually("the job to start", async || p.blocked_calls() == 1).await;
    let (following, mut followed) = tokio::sync::mpsc::unbounded_channel();
    let watcher = {
        let client = QueueClient::open(&p.queue_path()).await.unwrap();
        let slow = slow.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let end = client
                .watch(&slow, |e| {
                    let kind = e["type"].as_str().unwrap_or("").to_owned();
                    let _ = following.send(kind.clone());
                    seen.push(kind);
                })
                .await;
            (end, seen)
        })
    };
    // The host says where the job stands first: the watcher is followed.
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), followed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "watching");
    // Through the host: the running job is stopped in phases.
    assert!(client.cancel(&slow).await.unwrap());
    let (end, seen) = watcher.await.unwrap();
    assert_eq!(end.unwrap(), JobStatus::Cancelled);
    assert!(
        seen.iter()
            .any(|t| t == JobEventType::CancelPhaseChanged.as_str()),
        "{seen:?}"
    );
    assert_eq!(
        client.get_job(&slow).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_host_the_file_takes_jobs_and_cancels_and_the_next_host_runs_them() {
    let p = Project::new("client-alone");
    let client = QueueClient::open(&p.queue_path()).await.unwrap();
    assert!(!client.host_running().await);
    let kept = client
        .submit(Submit::new("counter", vec![Value::Int(1)], vec![]))
        .await
        .unwrap();
    let dropped = client
        .submit(Submit::new("counter", vec![Value::Int(2)], vec![]))
        .await
        .unwrap();
    assert!(client.cancel(&dropped).await.unwrap());
    assert!(!client.cancel(&dropped).await.unwrap(), "cancelled once");
    let unknown = client.watch("no-such-job", |_| {}).await.unwrap_err();
    assert!(matches!(unknown, QueueError::NoJob(_)), "{unknown}");
    let err = client.watch(&kept, |_| {}).await.unwrap_err();
    assert!(matches!(err, QueueError::NoHost(_)), "{err}");
    assert!(err.hint().unwrap().contains("cjm-ctl jobs work"));
    let q = p.queue(&["counter"]).await;
    let job = q.wait_for_job(&kept, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.total_completed, stats.total_cancelled), (1, 1));
    drop(q);
}
