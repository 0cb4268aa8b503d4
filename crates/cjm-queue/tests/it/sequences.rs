//! Sequences: fail-fast and best-effort, uniform ones, a cancel mid-way, and
//! refusals at submit.

use cjm_proto::Value;
use cjm_queue::{JobEventType, JobQueue, JobSequence, JobStatus, QueueError, SequenceStep};

use crate::support::{Project, action, eventually};

/// Waits until sequence `id` has ended; returns it.
async fn ended(q: &JobQueue, id: &str) -> JobSequence {
    let mut last = None;
    eventually("the sequence to end", async || {
        last = q.get_sequence(id).await.unwrap();
        last.as_ref()
            .is_some_and(|s| s.status != JobStatus::Running)
    })
    .await;
    last.unwrap()
}

fn steps() -> Vec<SequenceStep> {
    vec![
        SequenceStep::new("counter", vec![Value::Int(1)], vec![]),
        SequenceStep::new("counter", vec![], action("fail")),
        SequenceStep::new("other", vec![Value::Int(3)], vec![]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_fast_sequence_stops_at_its_first_failed_step() {
    let p = Project::new("seq-fast");
    let q = p.queue(&["counter", "other"]).await;
    let mut events = q.all_events();
    let id = q.submit_sequence(steps(), 0, true).await.unwrap();
    let s = ended(&q, &id).await;
    assert_eq!(s.status, JobStatus::Failed, "{s:?}");
    assert_eq!(s.steps, steps());
    assert!(s.completed_at.is_some() && s.current_job_id.is_none());
    let outcomes: Vec<bool> = s.results.iter().map(|r| r.success).collect();
    assert_eq!(outcomes, [true, false], "the third step never ran");
    assert_eq!(
        s.results[0].result.as_ref().unwrap().to_json()["args"],
        serde_json::json!([1])
    );
    assert!(
        s.results[1]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("not what this plugin takes")
    );
    let advanced: Vec<_> = std::iter::from_fn(|| events.try_next())
        .filter(|e| e.kind == JobEventType::SequenceAdvanced)
        .collect();
    assert_eq!(advanced.len(), 1, "{advanced:?}");
    assert_eq!(advanced[0].sequence_id.as_deref(), Some(id.as_str()));
    assert_eq!(advanced[0].sequence_index, Some(1));
    assert_eq!(advanced[0].payload["prior_success"], true);
    assert_eq!(
        advanced[0].payload["prior_job_id"],
        serde_json::json!(s.results[0].job_id)
    );
    let job = q.get_job(&s.results[1].job_id).await.unwrap().unwrap();
    assert_eq!(
        (job.sequence_id.as_deref(), job.sequence_index),
        (Some(id.as_str()), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_effort_sequence_tries_every_step_and_completes() {
    let p = Project::new("seq-best");
    let q = p.queue(&["counter", "other"]).await;
    let id = q.submit_sequence(steps(), 0, false).await.unwrap();
    let mut events = q.events_for_sequence(&id);
    let s = ended(&q, &id).await;
    assert_eq!(s.status, JobStatus::Completed, "{s:?}");
    let outcomes: Vec<bool> = s.results.iter().map(|r| r.success).collect();
    assert_eq!(outcomes, [true, false, true]);
    let third = q.get_job(&s.results[2].job_id).await.unwrap().unwrap();
    assert_eq!(third.plugin_instance_id, "other");
    // The sequence's own stream saw its members' events, and only theirs.
    let seen: Vec<_> = std::iter::from_fn(|| events.try_next()).collect();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|e| e.sequence_id.as_deref() == Some(id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uniform_sequence_runs_one_step_per_set_of_arguments_in_order() {
    let p = Project::new("seq-uniform");
    let q = p.queue(&["counter"]).await;
    let args = (0..4).map(|i| vec![Value::Int(i)]).collect::<Vec<_>>();
    let id = q
        .submit_uniform_sequence("counter", args.clone(), None, 0, true)
        .await
        .unwrap();
    let s = ended(&q, &id).await;
    assert_eq!(s.status, JobStatus::Completed, "{s:?}");
    let got: Vec<_> = s
        .results
        .iter()
        .map(|r| r.result.as_ref().unwrap().to_json()["args"][0].clone())
        .collect();
    assert_eq!(got, [0, 1, 2, 3]);
    let err = q
        .submit_uniform_sequence("counter", args, Some(vec![vec![]]), 0, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::Mismatch { args: 4, kwargs: 1 }),
        "{err}"
    );
    // An empty sequence is complete at once, as the reference's.
    let empty = q.submit_sequence(vec![], 0, true).await.unwrap();
    let empty = q.get_sequence(&empty).await.unwrap().unwrap();
    assert_eq!(empty.status, JobStatus::Completed);
    assert!(empty.results.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sequence_cancels_its_running_step_and_starts_no_other() {
    let p = Project::new("seq-cancel");
    let q = p.queue(&["counter"]).await;
    let id = q
        .submit_sequence(
            vec![
                SequenceStep::new("counter", vec![], action("wait")),
                SequenceStep::new("counter", vec![Value::Int(2)], vec![]),
            ],
            0,
            true,
        )
        .await
        .unwrap();
    eventually("the first step to start", async || p.blocked_calls() == 1).await;
    assert!(q.cancel_sequence(&id).await.unwrap());
    let s = ended(&q, &id).await;
    assert_eq!(s.status, JobStatus::Cancelled, "{s:?}");
    eventually("the sequence's end to be recorded", async || {
        q.get_sequence(&id)
            .await
            .unwrap()
            .unwrap()
            .completed_at
            .is_some()
    })
    .await;
    let s = q.get_sequence(&id).await.unwrap().unwrap();
    assert_eq!(s.results.len(), 1, "{s:?}");
    assert!(!s.results[0].success);
    let first = q.get_job(&s.results[0].job_id).await.unwrap().unwrap();
    assert_eq!(first.status, JobStatus::Cancelled);
    assert_eq!(
        q.get_stats().await.unwrap().total_pending,
        0,
        "no second step"
    );
    assert!(!q.cancel_sequence(&id).await.unwrap(), "an ended sequence");
    assert!(!q.cancel_sequence("no-such-sequence").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_with_a_step_on_an_unloaded_instance_is_refused_whole() {
    let p = Project::new("seq-refused");
    let q = p.queue(&["counter"]).await;
    let err = q
        .submit_sequence(
            vec![
                SequenceStep::new("counter", vec![], vec![]),
                SequenceStep::new("other", vec![], vec![]),
            ],
            0,
            true,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("other"), "{err}");
    assert_eq!(q.get_stats().await.unwrap().total_pending, 0);
    assert!(q.get_history(None).await.unwrap().is_empty(), "no step ran");
}
