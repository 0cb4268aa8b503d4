//! Jobs through the queue: results, failures, events, order, concurrency,
//! cancel, idempotency keys, refusals and slow subscribers.

use std::time::Duration;

use cjm_core::PluginError;
use cjm_manager::ManagerError;
use cjm_proto::Value;
use cjm_queue::{JobEventType, JobQueue, JobStatus, QueueError, QueueOptions, Submit};

use crate::support::{LIMIT, Project, action, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_and_its_result_history_stats_and_events_say_so() {
    let p = Project::new("runs");
    let q = p.queue(&["counter"]).await;
    let mut all = q.all_events();
    let id = q
        .submit("counter", vec![Value::Int(7)], vec![], 0)
        .await
        .unwrap();
    let mut mine = q.events(&id);
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let result = job.result.unwrap().to_json();
    assert_eq!(result["args"], serde_json::json!([7]), "{result}");
    assert!(
        (job.progress - 1.0).abs() < f64::EPSILON,
        "{}",
        job.progress
    );
    assert!(job.started_at.is_some() && job.completed_at >= job.started_at);
    assert_eq!(job.plugin_instance_id, "counter");

    let history = q.get_history(Some(10)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id, id);
    let stats = q.get_stats().await.unwrap();
    assert_eq!((stats.total_completed, stats.total_pending), (1, 0));

    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(20), all.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, JobEventType::StateTransition);
        assert_eq!(e.job_id, id);
        seen.push((e.payload["from"].clone(), e.payload["to"].clone()));
    }
    assert_eq!(
        seen,
        [
            ("pending".into(), "running".into()),
            ("running".into(), "completed".into())
        ]
    );
    // The per-job stream subscribed after the submit still saw the end.
    let last = std::iter::from_fn(|| mine.try_next()).last().unwrap();
    assert_eq!(last.payload["to"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_carries_the_plugins_error() {
    let p = Project::new("fails");
    let q = p.queue(&["counter"]).await;
    let id = q
        .submit("counter", vec![], action("fail"), 0)
        .await
        .unwrap();
    let job = q.wait_for_job(&id, LIMIT).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error
            .message
            .contains("the input was not what this plugin takes"),
        "{error:?}"
    );
    assert!(
        error.original_exc_repr.starts_with("ValueError"),
        "{error:?}"
    );
    assert_eq!(error.plugin_instance_id.as_deref(), Some("counter"));
    assert_eq!(q.get_stats().await.unwrap().total_failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_different_instances_run_side_by_side_and_one_instance_runs_one_at_a_time() {
    let p = Project::new("side-by-side");
    let q = p.queue(&["counter", "other"]).await;
    let blocked = q
        .submit("counter", vec![], action("block"), 0)
        .await
        .unwrap();
    eventually("the blocking job to start", async || p.blocked_calls() == 1).await;
    // The same instance: waits its turn behind the blocked job.
    let behind = q.submit("counter", vec![], vec![], 0).await.unwrap();
    // Another instance: runs now.
    let beside = q.submit("other", vec![], vec![], 0).await.unwrap();
    let done = q.wait_for_job(&beside, LIMIT).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let running = q.get_running().await.unwrap();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].id, blocked);
    let pending = q.get_pending().await.unwrap();
    assert_eq!(pending.iter().map(|j| &j.id).collect::<Vec<_>>(), [&behind]);

    fs_err::write(p.marker("release"), b"").unwrap();
    for id in [&blocked, &behind] {
        assert_eq!(
            q.wait_for_job(id, LIMIT).await.unwrap().status,
            JobStatus::Completed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first_and_a_reorder_moves_a_job() {
    let p = Project::new("priority");
    let q = JobQueue::open(p.manager(&["counter"]), p.options())
        .await
        .unwrap();
    // Not started: submitted in this order, run in priority order.
    let low = q
        .submit("counter", vec![Value::from("low")], vec![], 0)
        .await
        .unwrap();
    let high = q
        .submit("counter", vec![Value::from("high")], vec![], 5)
        .await
        .unwrap();
    let later = q
        .submit("counter", vec![Value::from("later")], vec![], 0)
        .await
        .unwrap();
    assert!(q.reorder(&later, 9).await.unwrap());
    let order: Vec<String> = q
        .get_pending()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(order, [later.clone(), high.clone(), low.clone()]);
    let mut events = q.all_events();
    q.start();
    let mut started = Vec::new();
    while started.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap();
        if e.payload["to"] == "running" {
            started.push(e.job_id);
        }
    }
    assert_eq!(started, [later, high, low]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_job_is_cancelled_and_its_waiter_told() {
    let p = Project::new("cancel");
    let q = p.queue(&["counter"]).await;
    let blocked = q
        .submit("counter", vec![], action("block"), 0)
        .await
        .unwrap();
    eventually("the blocking job to start", async || p.blocked_calls() == 1).await;
    let queued = q.submit("counter", vec![], vec![], 0).await.unwrap();
    let waiter = {
        let q = q.clone();
        let id = queued.clone();
        tokio::spawn(async move { q.wait_for_job(&id, LIMIT).await })
    };
    assert!(q.cancel(&queued).await.unwrap());
    let job = waiter.await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.cancel_phase, Some(cjm_queue::CancelPhase::Completed));
    assert!(job.cancel_requested_at.is_some());
    assert!(!q.cancel(&queued).await.unwrap(), "cancelled once");
    fs_err::write(p.marker("release"), b"").unwrap();
    q.wait_for_job(&blocked, LIMIT).await.unwrap();
    assert_eq!(q.get_stats().await.unwrap().total_cancelled, 1);
    let err = q.cancel("no-such-job").await.unwrap_err();
    assert!(matches!(err, QueueError::NoJob(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_first_job() {
    let p = Project::new("key");
    let q = p.queue(&["counter"]).await;
    let first = q
        .submit_with(Submit::new("counter", vec![Value::Int(1)], vec![]).key("order-42"))
        .await
        .unwrap();
    let again = q
        .submit_with(Submit::new("counter", vec![Value::Int(2)], vec![]).key("order-42"))
        .await
        .unwrap();
    assert_eq!(first, again);
    let job = q.wait_for_job(&first, LIMIT).await.unwrap();
    assert_eq!(
        job.result.unwrap().to_json()["args"],
        serde_json::json!([1])
    );
    assert_eq!(job.idempotency_key.as_deref(), Some("order-42"));
    let stats = q.get_stats().await.unwrap();
    assert_eq!(
        stats.total_completed + stats.total_pending + stats.total_running,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_for_a_disabled_or_unloaded_instance_are_refused_at_submit() {
    let p = Project::new("refused");
    let q = p.queue(&["counter"]).await;
    q.manager().disable("counter").unwrap();
    let err = q.submit("counter", vec![], vec![], 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::Manager(ManagerError::Plugin(PluginError::Disabled { .. }))
        ),
        "{err:?}"
    );
    let err = q.submit("nobody", vec![], vec![], 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::Manager(ManagerError::Plugin(PluginError::NotLoaded { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(
        q.get_stats().await.unwrap(),
        cjm_queue::QueueStats::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_loses_events_and_slows_nothing() {
    let p = Project::new("slow-subscriber");
    let q = JobQueue::open(
        p.manager(&["counter"]),
        QueueOptions {
            event_buffer: 2,
            ..p.options()
        },
    )
    .await
    .unwrap();
    let stuck = q.all_events();
    q.start();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            q.submit("counter", vec![Value::Int(i)], vec![], 0)
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        assert_eq!(
            q.wait_for_job(id, LIMIT).await.unwrap().status,
            JobStatus::Completed
        );
    }
    assert_eq!(
        stuck.dropped(),
        40 - 2,
        "two buffered, the rest counted lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_pruned_by_count() {
    let p = Project::new("prune");
    let q = JobQueue::open(
        p.manager(&["counter"]),
        QueueOptions {
            max_history: 3,
            ..p.options()
        },
    )
    .await
    .unwrap();
    q.start();
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = q
            .submit("counter", vec![Value::Int(i)], vec![], 0)
            .await
            .unwrap();
        q.wait_for_job(&id, LIMIT).await.unwrap();
        ids.push(id);
    }
    assert_eq!(q.prune().await.unwrap(), 2);
    let kept: Vec<String> = q
        .get_history(None)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(kept, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    assert!(q.get_job(&ids[0]).await.unwrap().is_none());
}
