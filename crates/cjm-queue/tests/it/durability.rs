//! What survives the host: pending jobs across a reopen, jobs a dead host left
//! running (re-queued when idempotent, failed with the reason otherwise), and
//! a second host on the same file refused.

use cjm_proto::Value;
use cjm_queue::store::{NewJob, Store};
use cjm_queue::{JobQueue, JobStatus, QueueError, SqliteStore, Submit};

use crate::support::{LIMIT, Project};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_jobs_survive_the_queue_and_run_when_it_is_opened_again() {
    let p = Project::new("survive");
    let ids = {
        let q = JobQueue::open(p.manager(&["counter"]), p.options())
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                q.submit("counter", vec![Value::Int(i)], vec![], 0)
                    .await
                    .unwrap(),
            );
        }
        ids
        // Dropped without ever starting: the jobs are only in the file.
    };
    let q = p.queue(&["counter"]).await;
    for (i, id) in ids.iter().enumerate() {
        let job = q.wait_for_job(id, LIMIT).await.unwrap();
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(
            job.result.unwrap().to_json()["args"],
            serde_json::json!([i])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_dead_host_left_running_are_requeued_if_idempotent_and_failed_otherwise() {
    let p = Project::new("recover");
    let (safe, unsafe_) = {
        // A host that claimed two jobs and died before they ended.
        let q = JobQueue::open(p.manager(&["counter"]), p.options())
            .await
            .unwrap();
        let safe = q
            .submit_with(Submit::new("counter", vec![Value::from("again")], vec![]).idempotent())
            .await
            .unwrap();
        let unsafe_ = q
            .submit("counter", vec![Value::from("once")], vec![], 0)
            .await
            .unwrap();
        drop(q);
        // As that host did before sending each `execute`: the job's number
        // appended to the start log. One of them the store also saw start.
        let store = SqliteStore::open(&p.queue_path()).await.unwrap();
        let mut log = Vec::new();
        for id in [&safe, &unsafe_] {
            let (seq, _) = store.job(id).await.unwrap().unwrap();
            log.extend(seq.to_le_bytes());
        }
        let (seq, _) = store.job(&unsafe_).await.unwrap().unwrap();
        store.started(seq, 1).await.unwrap();
        fs_err::write(format!("{}.started", p.queue_path().display()), log).unwrap();
        (safe, unsafe_)
    };
    let q = JobQueue::open(p.manager(&["counter"]), p.options())
        .await
        .unwrap();
    let failed = q.get_job(&unsafe_).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    let reason = failed.error.unwrap().message;
    assert!(
        reason.starts_with("the host running this job died before it ended"),
        "{reason}"
    );
    let requeued = q.get_job(&safe).await.unwrap().unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.retry_count, 1);
    q.start();
    let job = q.wait_for_job(&safe, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(
        job.result.unwrap().to_json()["args"],
        serde_json::json!(["again"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_on_the_same_file_is_refused_naming_the_first() {
    let p = Project::new("two-hosts");
    let _first = JobQueue::open(p.manager(&[]), p.options()).await.unwrap();
    let err = SqliteStore::open(&p.queue_path()).await.unwrap_err();
    let QueueError::Busy { holder, .. } = &err else {
        panic!("expected the file to be refused: {err}")
    };
    assert_eq!(holder, &format!("pid {}", std::process::id()));
    assert!(err.hint().unwrap().contains("stop the other host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_job_fails_with_the_reason_instead_of_stopping_the_queue() {
    let p = Project::new("damaged");
    {
        let store = SqliteStore::open(&p.queue_path()).await.unwrap();
        store
            .insert(NewJob {
                id: "damaged-1".into(),
                instance: "counter".into(),
                args: vec![0xff, 0x00],
                kwargs: vec![0xff],
                priority: 0,
                rank: 0,
                submitted_ms: 0,
                idempotency_key: None,
                idempotent: false,
                timeout_ms: None,
                sequence: None,
            })
            .await
            .unwrap();
    }
    let q = p.queue(&["counter"]).await;
    let ok = q.submit("counter", vec![], vec![], 0).await.unwrap();
    assert_eq!(
        q.wait_for_job(&ok, LIMIT).await.unwrap().status,
        JobStatus::Completed
    );
    // It ran (and failed) before the good one: its arguments cannot be read.
    let err = q.get_job("damaged-1").await.unwrap_err();
    assert!(matches!(err, QueueError::Damaged { .. }), "{err}");
    assert_eq!(q.get_stats().await.unwrap().total_failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_is_kept_beside_the_database_and_pruned_with_its_job() {
    let p = Project::new("large-result");
    let mut options = p.options();
    options.max_history = 0;
    let q = JobQueue::open(p.manager(&["counter"]), options)
        .await
        .unwrap();
    q.start();
    let id = q
        .submit("counter", vec![], crate::support::action("bytes"), 0)
        .await
        .unwrap();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let result = job.result.unwrap();
    let Some(Value::Bytes(audio)) = result.get("audio") else {
        panic!("{result:?}")
    };
    assert_eq!(audio.len(), 256 * 4096);
    assert!(audio.len() > cjm_queue::store::INLINE_RESULT_BYTES);
    let results = std::path::PathBuf::from(format!("{}.results", p.queue_path().display()));
    let files: Vec<_> = fs_err::read_dir(&results).unwrap().collect();
    assert_eq!(files.len(), 1, "the result has a file of its own");
    // The database row holds its name, not the megabyte.
    let db_bytes = fs_err::metadata(p.queue_path()).unwrap().len();
    assert!(db_bytes < 512 * 1024, "{db_bytes} bytes");
    assert_eq!(q.prune().await.unwrap(), 1);
    assert_eq!(
        fs_err::read_dir(&results).unwrap().count(),
        0,
        "pruned with it"
    );
}
