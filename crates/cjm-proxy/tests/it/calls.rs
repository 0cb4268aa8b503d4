use std::time::Duration;

use cjm_proto::Value;
use cjm_proxy::{CallOptions, Event};

use crate::support::{kw, s, spawn};

#[test]
fn execute_returns_what_the_plugin_returned() {
    let w = spawn("Echo");
    let out = w
        .execute_blocking(
            vec![Value::Int(1), s("two")],
            kw(&[("k", Value::Float(1.5))]),
        )
        .unwrap();
    assert_eq!(
        out.get("args"),
        Some(&Value::List(vec![Value::Int(1), s("two")]))
    );
    assert_eq!(
        out.get("kwargs").and_then(|k| k.get("k")),
        Some(&Value::Float(1.5))
    );
    assert_eq!(w.info().get("name"), Some(&s("echo")));
    assert_eq!(w.hello().protocol, cjm_proto::PROTOCOL);
}

#[test]
fn values_of_every_kind_survive_the_round_trip() {
    let w = spawn("Echo");
    let big = Value::BigInt("123456789012345678901234567890".into());
    let nested = Value::map([
        ("unicode", s("héllo \u{1F600}")),
        (
            "list",
            Value::List(vec![Value::None, Value::Bool(true), Value::Float(-0.0)]),
        ),
        ("big", big.clone()),
        ("bytes", Value::Bytes(vec![0u8, 1, 2, 255].into())),
    ]);
    let out = w.execute_blocking(vec![nested.clone()], vec![]).unwrap();
    assert_eq!(out, nested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_pipeline_on_one_worker() {
    let w = spawn("Echo");
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let w = w.clone();
            tokio::spawn(async move { w.execute(vec![Value::Int(i)], vec![]).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), Value::Int(i as i64));
    }
}

#[test]
fn streams_deliver_chunks_then_end() {
    let w = spawn("Echo");
    let chunks: Vec<Value> = w
        .stream(vec![], kw(&[("n", Value::Int(4))]))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks[3].get("i"), Some(&Value::Int(3)));
}

#[test]
fn a_stream_that_raises_ends_with_a_typed_error() {
    let w = spawn("Echo");
    let items: Vec<_> = w
        .stream(
            vec![],
            kw(&[("n", Value::Int(5)), ("fail_at", Value::Int(2))]),
        )
        .unwrap()
        .collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok() && items[1].is_ok());
    let err = items[2].as_ref().unwrap_err();
    let job = err.to_job_error(std::time::SystemTime::now());
    assert_eq!(job.category, cjm_core::ErrorCategory::Transient);
    assert_eq!(job.retry_after_seconds, Some(1.5));
}

#[test]
fn progress_usage_and_logs_are_pushed_during_the_call() {
    let w = spawn("Echo");
    let mut events = w.events();
    let out = w
        .execute_blocking(vec![], kw(&[("action", s("progress"))]))
        .unwrap();
    assert_eq!(out, s("done"));
    let mut progress = vec![];
    let mut usage = None;
    let mut logs = vec![];
    while let Ok(e) = events.try_recv() {
        match e {
            Event::Progress {
                progress: p,
                message,
                ..
            } => progress.push((p, message)),
            Event::Usage { usage: u, .. } => usage = Some(u),
            Event::Log {
                message, logger, ..
            } => logs.push((logger, message)),
            _ => {}
        }
    }
    assert_eq!(progress.len(), 4, "{progress:?}");
    assert_eq!(progress[3], (1.0, "step 4".to_owned()));
    assert_eq!(
        usage.and_then(|u| u.get("tokens").cloned()),
        Some(Value::Float(42.0))
    );
    assert!(
        logs.contains(&("fixture".to_owned(), "did 4 steps".to_owned())),
        "{logs:?}"
    );
}

#[test]
fn lifecycle_methods_reach_the_plugin() {
    let w = spawn("Echo");
    let cfg = Value::map([("mode", s("fast"))]);
    w.call_blocking(
        "initialize",
        vec![cfg.clone()],
        vec![],
        CallOptions::default(),
    )
    .unwrap();
    let current = w
        .call_blocking("get_current_config", vec![], vec![], CallOptions::default())
        .unwrap();
    assert_eq!(current, cfg);
    let schema = w
        .call_blocking("get_config_schema", vec![], vec![], CallOptions::default())
        .unwrap();
    assert_eq!(schema.get("type"), Some(&s("object")));
    for m in ["prefetch", "on_disable", "on_enable", "cleanup"] {
        assert_eq!(
            w.call_blocking(m, vec![], vec![], CallOptions::default())
                .unwrap(),
            Value::None,
            "{m}"
        );
    }
    let err = w
        .call_blocking("get_system_status", vec![], vec![], CallOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not a monitor plugin"), "{err}");
}

#[test]
fn config_options_and_reconfigure_reach_the_plugin() {
    let w = spawn("Echo");
    let opts = w
        .call_blocking("get_config_options", vec![], vec![], CallOptions::default())
        .unwrap();
    let model = opts.get("model").expect("model options");
    let Some(Value::List(options)) = model.get("options") else {
        panic!("{opts:?}")
    };
    assert_eq!(options[0].get("label"), Some(&s("Small")));
    assert_eq!(
        options[0].get("metadata").and_then(|m| m.get("tokens")),
        Some(&Value::Int(1024))
    );
    assert_eq!(
        model.get("constraints").and_then(|c| c.get("max_tokens")),
        Some(&Value::Int(4096))
    );
    let new = Value::map([("mode", s("slow"))]);
    w.call_blocking(
        "reconfigure",
        vec![Value::map([("mode", s("fast"))]), new.clone()],
        vec![],
        CallOptions::default(),
    )
    .unwrap();
    let current = w
        .call_blocking("get_current_config", vec![], vec![], CallOptions::default())
        .unwrap();
    assert_eq!(current, new);
}

#[test]
fn pings_and_stats_are_answered() {
    let w = spawn("Echo");
    w.ping_blocking(Duration::from_secs(5)).unwrap();
    let st = w.worker_stats_blocking(Duration::from_secs(5)).unwrap();
    assert_eq!(st.get("pid"), Some(&Value::Int(i64::from(w.pid()))));
    let ps = w.stats().unwrap();
    assert!(ps.rss_bytes > 1_000_000, "{ps:?}");
}

#[test]
fn a_duck_typed_plugin_without_base_class_runs() {
    let w = crate::support::spawn("NoCancel");
    assert_eq!(
        w.execute_blocking(vec![Value::Int(21)], vec![]).unwrap(),
        Value::Int(42)
    );
}

#[test]
fn stop_runs_cleanup_and_ends_the_process() {
    let scratch = cjm_testkit::Scratch::new("proxy-stop");
    let cleaned = scratch.join("cleaned-up");
    let sp =
        crate::support::spec("Echo").env("CJM_TEST_CLEANUP_MARKER", cleaned.display().to_string());
    let w = cjm_proxy::Worker::spawn(sp).unwrap();
    let pid = w.pid() as i32;
    assert!(!cleaned.exists());
    let death = w.stop_blocking();
    assert!(cleaned.exists(), "stop called the plugin's cleanup()");
    assert!(death.exit.is_some(), "{death}");
    assert!(
        !death.probable_oom,
        "a requested stop is not an OOM: {death}"
    );
    assert!(!crate::support::alive(pid));
}
