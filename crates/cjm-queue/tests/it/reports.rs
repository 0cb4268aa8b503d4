//! What a running job tells as it runs: the plugin's progress and log
//! records, pushed by the worker, and its worker's periodic resource
//! snapshots.

use std::time::Duration;

use cjm_proto::Value;
use cjm_queue::{JobEvent, JobEventType, JobQueue, JobStatus};

use crate::support::{LIMIT, Project, eventually};

/// The next event of `stream`, at most 20 s away.
async fn next(stream: &mut cjm_queue::EventStream) -> JobEvent {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event within 20 s")
        .expect("the queue is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_jobs_progress_logs_and_resources_are_published_and_readable() {
    let p = Project::new("reports");
    let mut options = p.options();
    options.resource_snapshot_every = Some(Duration::from_millis(50));
    let q = JobQueue::open(p.manager(&["counter"]), options)
        .await
        .unwrap();
    q.start();
    fs_err::write(p.marker("hold"), "").unwrap();
    let mut events = q.all_events();
    let kwargs = vec![
        ("action".into(), Value::from("report")),
        ("say".into(), Value::from("hi")),
        ("hold".into(), Value::Bool(true)),
    ];
    let id = q.submit("counter", vec![], kwargs, 0).await.unwrap();

    // Until the job is held with a snapshot taken: every report has come.
    let mut progress = Vec::new();
    let mut logs = Vec::new();
    let snapshot = loop {
        let e = next(&mut events).await;
        assert_eq!(e.job_id, id);
        match e.kind {
            JobEventType::ProgressChanged => progress.push((
                e.payload["progress"].as_f64().unwrap(),
                e.payload["status_message"].as_str().unwrap().to_owned(),
            )),
            JobEventType::LogAppended => logs.push(e.payload.clone()),
            JobEventType::ResourceSnapshot if progress.len() == 2 => {
                break e.payload["snapshot"].clone();
            }
            _ => {}
        }
    };
    // The repeated report is published once, in the order reported.
    assert_eq!(
        progress,
        [(0.25, "one".to_owned()), (0.5, "two".to_owned())]
    );
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0]["level"], "WARNING");
    assert_eq!(logs[0]["logger"], "counter-job");
    assert_eq!(logs[0]["message"], "half way: hi");
    assert!(snapshot["worker_pid"].as_u64().unwrap() > 0, "{snapshot}");
    assert!(
        snapshot["memory_rss_mb"].as_f64().unwrap() > 1.0,
        "{snapshot}"
    );
    assert!(snapshot["gpu_index"].is_null(), "{snapshot}");

    // The job's row says where it stands; the snapshot is kept on it.
    eventually("the progress in the job's row", async || {
        let job = q.get_job(&id).await.unwrap().unwrap();
        job.status_message == "two" && (job.progress - 0.5).abs() < f64::EPSILON
    })
    .await;
    let job = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    let kept = job.last_resource_snapshot.expect("a snapshot on the job");
    assert_eq!(
        u64::from(kept.worker_pid),
        snapshot["worker_pid"].as_u64().unwrap()
    );

    fs_err::remove_file(p.marker("hold")).unwrap();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert!((job.progress - 1.0).abs() < f64::EPSILON, "{job:?}");
    assert_eq!(job.last_resource_snapshot, None);
    // Nothing was reported after the hold: no more progress events.
    while let Some(e) = events.try_next() {
        assert_ne!(e.kind, JobEventType::ProgressChanged, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_snapshots_a_job_reports_progress_and_none_is_sampled() {
    let p = Project::new("reports-quiet");
    let mut options = p.options();
    options.resource_snapshot_every = None;
    let q = JobQueue::open(p.manager(&["counter"]), options)
        .await
        .unwrap();
    q.start();
    let mut events = q.all_events();
    let kwargs = vec![("action".into(), Value::from("report"))];
    let id = q.submit("counter", vec![], kwargs, 0).await.unwrap();
    let mut kinds = Vec::new();
    loop {
        let e = next(&mut events).await;
        kinds.push(e.kind);
        if e.kind == JobEventType::StateTransition && e.payload["from"] == "running" {
            break;
        }
    }
    let count = |k| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count(JobEventType::ProgressChanged), 2, "{kinds:?}");
    assert_eq!(count(JobEventType::LogAppended), 1, "{kinds:?}");
    assert_eq!(count(JobEventType::ResourceSnapshot), 0, "{kinds:?}");
    let job = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
}
