//! Stopping and retrying jobs: a running job cancelled in each phase, a job
//! stopped by its timeout, retries by error category with backoff, and a
//! retry waiting out its backoff across a reopen.

use std::time::Duration;

use cjm_core::ErrorCategory;
use cjm_proto::Value;
use cjm_queue::{CancelPhase, EventStream, JobEventType, JobQueue, JobStatus, RetryPolicy, Submit};

use crate::support::{LIMIT, Project, action, eventually};

/// Every event buffered on `events` now, as (kind, payload "to").
fn drain(events: &mut EventStream) -> Vec<(JobEventType, serde_json::Value)> {
    std::iter::from_fn(|| events.try_next())
        .map(|e| (e.kind, e.payload.get("to").cloned().unwrap_or_default()))
        .collect()
}

fn phases(seen: &[(JobEventType, serde_json::Value)]) -> Vec<String> {
    seen.iter()
        .filter(|(k, _)| *k == JobEventType::CancelPhaseChanged)
        .map(|(_, to)| to.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The pid of the worker that runs `counter` now, from a job's result.
async fn worker_pid(q: &JobQueue) -> i64 {
    let id = q.submit("counter", vec![], vec![], 0).await.unwrap();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    job.result.unwrap().to_json()["pid"].as_i64().unwrap()
}

async fn queue_with(p: &Project, f: impl FnOnce(&mut cjm_queue::QueueOptions)) -> JobQueue {
    let mut options = p.options();
    f(&mut options);
    let q = JobQueue::open(p.manager(&["counter"]), options)
        .await
        .unwrap();
    q.start();
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_that_heeds_the_cancel_stops_cooperatively_and_its_worker_stays() {
    let p = Project::new("cancel-coop");
    let q = queue_with(&p, |_| {}).await;
    let before = worker_pid(&q).await;
    let id = q
        .submit("counter", vec![], action("wait"), 0)
        .await
        .unwrap();
    let mut events = q.events(&id);
    eventually("the job to start", async || p.blocked_calls() == 1).await;
    assert!(
        q.cancel(&id).await.unwrap(),
        "a running job's cancel is taken"
    );
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled, "{job:?}");
    assert_eq!(job.cancel_phase, Some(CancelPhase::Completed));
    assert!(job.cancel_requested_at.is_some());
    let error = job.error.unwrap();
    assert_eq!(error.category, ErrorCategory::Transient, "{error:?}");
    assert!(!error.retriable, "a cancel is never retried: {error:?}");
    assert_eq!(job.retry_count, 0);
    let seen = drain(&mut events);
    assert_eq!(phases(&seen), ["cooperative", "completed"], "{seen:?}");
    assert_eq!(
        seen.last().unwrap(),
        &(JobEventType::StateTransition, "cancelled".into())
    );
    assert_eq!(worker_pid(&q).await, before, "no kill, no restart");
    assert!(
        !q.cancel(&id).await.unwrap(),
        "an ended job's cancel is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ignores_the_cancel_is_forced_its_worker_reloaded_and_the_next_job_runs() {
    let p = Project::new("cancel-force");
    let q = queue_with(&p, |o| o.cancel_grace = Duration::from_millis(100)).await;
    let before = worker_pid(&q).await;
    let id = q
        .submit("counter", vec![], action("stubborn"), 0)
        .await
        .unwrap();
    let next = q.submit("counter", vec![], vec![], 0).await.unwrap();
    let mut events = q.events(&id);
    eventually("the job to start", async || p.blocked_calls() == 1).await;
    assert!(q.cancel(&id).await.unwrap());
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled, "{job:?}");
    assert_eq!(job.cancel_phase, Some(CancelPhase::Completed));
    let seen = drain(&mut events);
    assert_eq!(
        phases(&seen),
        ["cooperative", "force", "reloading", "completed"],
        "{seen:?}"
    );
    let next = q.wait_for_job(&next, LIMIT).await.unwrap();
    assert_eq!(next.status, JobStatus::Completed, "{next:?}");
    let after = next.result.unwrap().to_json()["pid"].as_i64().unwrap();
    assert_ne!(after, before, "the killed worker was replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_stopped_and_fails_as_transient() {
    let p = Project::new("timeout");
    let q = queue_with(&p, |o| o.retry = RetryPolicy::never()).await;
    let id = q
        .submit_with(
            Submit::new("counter", vec![], action("wait")).timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.timeout, Some(Duration::from_millis(200)));
    let error = job.error.unwrap();
    assert_eq!(error.category, ErrorCategory::Transient, "{error:?}");
    assert!(error.retriable, "{error:?}");
    assert!(
        error.message.contains("ran past its timeout of 0.200 s"),
        "{error:?}"
    );
    assert_eq!(p.blocked_calls(), 1);
    // The worker was stopped, not left running the job.
    let again = q.submit("counter", vec![], vec![], 0).await.unwrap();
    let again = q.wait_for_job(&again, LIMIT).await.unwrap();
    assert_eq!(again.status, JobStatus::Completed, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_with_backoff_and_bad_input_is_not() {
    let p = Project::new("retry");
    let q = queue_with(&p, |o| {
        o.retry = RetryPolicy {
            backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        };
    })
    .await;
    let mut kwargs = action("flaky");
    kwargs.push(("times".into(), Value::Int(3)));
    // Subscribed before the submit: the job may start before `submit` returns.
    let mut events = q.all_events();
    let id = q.submit("counter", vec![], kwargs, 0).await.unwrap();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.retry_count, 2);
    assert_eq!(job.result.unwrap().to_json()["tries"], 3);
    let seen = drain(&mut events);
    let retries: Vec<_> = seen
        .iter()
        .filter(|(k, _)| *k == JobEventType::RetryStarted)
        .collect();
    assert_eq!(retries.len(), 2, "{seen:?}");
    let to: Vec<_> = seen
        .iter()
        .filter(|(k, _)| *k == JobEventType::StateTransition)
        .map(|(_, to)| to.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        to,
        [
            "running",
            "pending",
            "running",
            "pending",
            "running",
            "completed"
        ]
    );

    // A `ValueError` is bad input: the same input fails the same way.
    let bad = q
        .submit("counter", vec![], action("fail"), 0)
        .await
        .unwrap();
    let bad = q.wait_for_job(&bad, LIMIT).await.unwrap();
    assert_eq!(bad.status, JobStatus::Failed);
    assert_eq!(bad.error.unwrap().category, ErrorCategory::UserInput);
    assert_eq!(bad.retry_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_manager_tries_again_for_memory_is_its_jobs_retry_started() {
    let p = Project::new("retry-oom");
    let q = queue_with(&p, |o| o.retry = RetryPolicy::never()).await;
    let mut events = q.all_events();
    let id = q.submit("counter", vec![], action("oom"), 0).await.unwrap();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    // The manager's one try again (its default), then the job fails; the
    // queue tries nothing itself.
    assert_eq!(job.retry_count, 0);
    let retries: Vec<_> = std::iter::from_fn(|| events.try_next())
        .filter(|e| e.kind == JobEventType::RetryStarted)
        .collect();
    assert_eq!(retries.len(), 1, "{retries:?}");
    let payload = &retries[0].payload;
    assert_eq!(retries[0].job_id, id);
    assert_eq!(payload["attempt"], 1, "{payload:?}");
    assert_eq!(payload["by"], "manager", "{payload:?}");
    assert_eq!(payload["exception_category"], "resource", "{payload:?}");
    assert!(
        payload["error"]
            .as_str()
            .unwrap()
            .contains("the model did not fit"),
        "{payload:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waiting_out_its_backoff_survives_the_host_and_runs_when_due() {
    let p = Project::new("retry-durable");
    let mut kwargs = action("flaky");
    kwargs.push(("times".into(), Value::Int(2)));
    let id = {
        let q = queue_with(&p, |o| {
            o.retry = RetryPolicy {
                backoff: Duration::from_millis(300),
                ..RetryPolicy::default()
            };
        })
        .await;
        let mut all = q.all_events();
        let id = q.submit("counter", vec![], kwargs, 0).await.unwrap();
        // The retry event is published once the re-queue is committed.
        loop {
            let e = tokio::time::timeout(Duration::from_secs(20), all.next())
                .await
                .unwrap()
                .unwrap();
            if e.kind == JobEventType::RetryStarted {
                break;
            }
        }
        q.stop();
        id
    };
    // The stopped queue's tasks let go of the file as they wind down.
    let mut reopened = None;
    eventually("the first queue to let go of the file", async || {
        match JobQueue::open(p.manager(&["counter"]), p.options()).await {
            Ok(q) => reopened = Some(q),
            Err(cjm_queue::QueueError::Busy { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        reopened.is_some()
    })
    .await;
    let q = reopened.unwrap();
    let waiting = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Pending, "{waiting:?}");
    assert_eq!(waiting.retry_count, 1);
    assert!(waiting.error.is_some(), "the last try's error is kept");
    q.start();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.result.unwrap().to_json()["tries"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_logs_are_the_lines_its_plugin_wrote_while_it_ran() {
    let p = Project::new("logs");
    let q = queue_with(&p, |_| {}).await;
    let say = |what: &str| {
        let mut kwargs = action("log");
        kwargs.push(("say".into(), Value::from(what)));
        kwargs
    };
    let first = q.submit("counter", vec![], say("first"), 0).await.unwrap();
    let first = q.wait_for_job(&first, LIMIT).await.unwrap();
    eventually("the first job's lines in the log", async || {
        q.get_job_logs(&first.id, 50)
            .await
            .unwrap()
            .contains("first went on")
    })
    .await;
    // The next job's lines are stamped a millisecond later at least.
    let ended = first.completed_at.unwrap();
    eventually("the clock to pass the first job's end", async || {
        std::time::SystemTime::now() > ended + Duration::from_millis(2)
    })
    .await;
    let second = q.submit("counter", vec![], say("second"), 0).await.unwrap();
    q.wait_for_job(&second, LIMIT).await.unwrap();
    eventually("the second job's lines in the log", async || {
        q.get_job_logs(&second, 50)
            .await
            .unwrap()
            .contains("second went on")
    })
    .await;
    let mine = q.get_job_logs(&second, 50).await.unwrap();
    assert!(mine.contains("INFO job says second"), "{mine}");
    assert!(!mine.contains("first"), "{mine}");
    let theirs = q.get_job_logs(&first.id, 50).await.unwrap();
    assert!(!theirs.contains("second"), "{theirs}");
    assert!(q.get_job_logs("no-such-job", 5).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_jobs_resource_snapshot_names_its_worker_and_what_it_holds() {
    let p = Project::new("snapshot");
    let q = queue_with(&p, |_| {}).await;
    let pid = worker_pid(&q).await;
    let id = q
        .submit("counter", vec![], action("wait"), 0)
        .await
        .unwrap();
    eventually("the job to start", async || p.blocked_calls() == 1).await;
    let mut snapshot = None;
    eventually("the job to be running in the store", async || {
        snapshot = q.get_resource_snapshot(&id).await.unwrap();
        snapshot.is_some()
    })
    .await;
    let s = snapshot.unwrap();
    assert_eq!(i64::from(s.worker_pid), pid);
    assert!(s.memory_rss_mb > 1.0, "{s:?}");
    assert_eq!(s.gpu_index, None, "no GPU here");
    let again = q.get_resource_snapshot(&id).await.unwrap().unwrap();
    assert!(again.cpu_percent >= 0.0 && again.timestamp >= s.timestamp);
    fs_err::write(p.marker("release"), b"").unwrap();
    q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(q.get_resource_snapshot(&id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_call_waits_for_room_carries_the_reason_until_it_runs() {
    let p = Project::new("block-reason");
    // One worker at a time: `other`'s job waits while `counter`'s runs.
    let m = p.manager_with(&["counter", "other"], |o| o.max_workers = Some(1));
    let q = JobQueue::open(m, p.options()).await.unwrap();
    q.start();
    let busy = q
        .submit("counter", vec![], action("wait"), 0)
        .await
        .unwrap();
    eventually("the first job to start", async || p.blocked_calls() == 1).await;
    // Subscribed before the submit: its call may wait before `submit` returns.
    let mut events = q.all_events();
    let blocked = q.submit("other", vec![], vec![], 0).await.unwrap();
    let mut reason = None;
    eventually("the waiting job's block reason", async || {
        reason = q.get_job(&blocked).await.unwrap().unwrap().block_reason;
        reason.is_some()
    })
    .await;
    let reason = reason.unwrap();
    assert!(reason.contains("other"), "{reason}");
    fs_err::write(p.marker("release"), b"").unwrap();
    q.wait_for_job(&busy, LIMIT).await.unwrap();
    let job = q.wait_for_job(&blocked, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.block_reason, None, "cleared once it ran");
    let changes: Vec<_> = std::iter::from_fn(|| events.try_next())
        .filter(|e| e.job_id == blocked && e.kind == JobEventType::BlockReasonChanged)
        .map(|e| e.payload["to"].clone())
        .collect();
    assert!(changes.len() >= 2, "{changes:?}");
    assert_eq!(changes[0], serde_json::json!(reason));
    assert_eq!(changes.last().unwrap(), &serde_json::Value::Null);
}
