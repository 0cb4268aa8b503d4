//! A million pending jobs: the queue opens on them with its memory bounded,
//! and a job submitted after them, then the million in their order, run.

use cjm_proto::Value;
use cjm_queue::{JobQueue, JobStatus};
use sqlx::Connection;

use crate::support::{LIMIT, Project};

const PENDING: i64 = 1_000_000;

/// The process's resident memory, bytes.
fn rss_bytes() -> u64 {
    let statm = fs_err::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_pending_jobs_open_in_bounded_memory_and_submit_and_dispatch_still_work() {
    let p = Project::new("million");
    // One job submitted as any is; a million copies of it stored beside it
    // in one statement (a million submits take a minute; the benchmark times
    // them), each ranked after the one before.
    {
        let q = JobQueue::open(p.manager(&["counter"]), p.options())
            .await
            .unwrap();
        q.submit("counter", vec![Value::Int(0)], vec![], 0)
            .await
            .unwrap();
        q.flush().await.unwrap();
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(p.queue_path());
    let mut db = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
         INSERT INTO jobs (id, instance, args, kwargs, status, priority, rank, submitted_ms) \
         SELECT 'bulk-' || n.i, t.instance, t.args, t.kwargs, 'pending', 0, t.rank + n.i, \
         t.submitted_ms FROM n, (SELECT * FROM jobs LIMIT 1) t",
    )
    .bind(PENDING)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();

    let before = rss_bytes();
    let q = JobQueue::open(p.manager(&["counter"]), p.options())
        .await
        .unwrap();
    let grown_mb = rss_bytes().saturating_sub(before) >> 20;
    assert!(
        grown_mb <= 200,
        "opening on {PENDING} pending jobs grew the host by {grown_mb} MB"
    );
    let stats = q.get_stats().await.unwrap();
    assert_eq!(stats.total_pending, u64::try_from(PENDING).unwrap() + 1);

    // An urgent job submitted now runs ahead of the million.
    let urgent = q
        .submit("counter", vec![Value::Int(-1)], vec![], 1_000_000)
        .await
        .unwrap();
    q.start();
    let job = q.wait_for_job(&urgent, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    // Then the million, in their order.
    let third = q.wait_for_job("bulk-3", LIMIT).await.unwrap();
    assert_eq!(third.status, JobStatus::Completed, "{third:?}");
    let first = q.get_job("bulk-1").await.unwrap().unwrap();
    assert!(job.completed_at <= first.started_at, "{job:?} {first:?}");
    for earlier in ["bulk-1", "bulk-2"] {
        let job = q.get_job(earlier).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        assert!(job.completed_at <= third.started_at, "{job:?} {third:?}");
    }
    q.stop();
    let job = q.get_job("bulk-999999").await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Pending);
}
