use cjm_core::{ErrorCategory, PluginError};
use cjm_proxy::WorkerError;

use crate::support::{s, spawn};

#[track_caller]
fn check(kind: &str, category: ErrorCategory, retriable: bool, type_name: &str) {
    let w = spawn("Raiser");
    let err = w.execute_blocking(vec![s(kind)], vec![]).unwrap_err();
    let WorkerError::Plugin(PluginError::Raised(job)) = &err else {
        panic!("{kind}: expected a raised error, got {err:?}");
    };
    assert_eq!(job.category, category, "{kind}");
    assert_eq!(job.retriable, retriable, "{kind}");
    assert!(
        job.original_exc_repr.starts_with(type_name),
        "{kind}: {}",
        job.original_exc_repr
    );
    assert_eq!(job.plugin_name.as_deref(), Some("raiser"));
    let tb = job.traceback.as_deref().unwrap_or_default();
    assert!(tb.contains("fixture_plugins.py"), "{kind}: traceback {tb}");
}

#[test]
fn each_error_category_crosses_the_boundary_typed() {
    // The reference retries bare user-input errors by default (its category table).
    check("value", ErrorCategory::UserInput, true, "ValueError");
    check("key", ErrorCategory::UserInput, true, "KeyError");
    check("timeout", ErrorCategory::Transient, true, "TimeoutError");
    check("memory", ErrorCategory::Resource, true, "MemoryError");
    check("runtime", ErrorCategory::Fatal, false, "RuntimeError");
    check("input", ErrorCategory::UserInput, true, "PluginInputError");
    check(
        "transient",
        ErrorCategory::Transient,
        true,
        "PluginTransientError",
    );
    check(
        "resource",
        ErrorCategory::Resource,
        true,
        "PluginResourceError",
    );
    check("fatal", ErrorCategory::Fatal, false, "PluginFatalError");
}

#[test]
fn structured_fields_of_plugin_errors_arrive() {
    let w = spawn("Raiser");
    let job = |kind: &str| match w.execute_blocking(vec![s(kind)], vec![]).unwrap_err() {
        WorkerError::Plugin(PluginError::Raised(j)) => j,
        other => panic!("{other:?}"),
    };
    assert_eq!(job("input").fields_invalid, Some(vec!["text".to_owned()]));
    assert_eq!(job("transient").retry_after_seconds, Some(2.0));
    let shortfall = job("resource").resource_shortfall.expect("shortfall");
    assert_eq!((shortfall.needed, shortfall.available), (2048.0, 1024.0));
}

#[test]
fn a_plugin_that_fails_to_load_reports_why() {
    let err = cjm_proxy::Worker::spawn(crate::support::spec("BrokenInit")).unwrap_err();
    let WorkerError::Load { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(error.message.contains("cannot construct"), "{err}");
    let err = cjm_proxy::Worker::spawn(crate::support::spec("NoSuchClass")).unwrap_err();
    assert!(matches!(err, WorkerError::Load { .. }), "{err:?}");
    assert!(err.hint().is_some());
}

#[test]
fn an_interpreter_that_does_not_exist_is_a_spawn_error() {
    let mut spec = crate::support::spec("Echo");
    spec.python = "/nonexistent/python".into();
    let err = cjm_proxy::Worker::spawn(spec).unwrap_err();
    assert!(matches!(err, WorkerError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/python"), "{err}");
}

fn fake_worker(mode: &str) -> Result<cjm_proxy::Worker, WorkerError> {
    let spec = crate::support::spec("Echo")
        .python_path(crate::support::fixtures().join("fake_worker"))
        .env("FAKE_MODE", mode);
    // The fake package must shadow the real one: put it first, and start a fresh
    // interpreter (a forkserver has the real one imported already).
    let mut spec = spec.start_method(cjm_proxy::StartMethod::Spawn);
    spec.python_path.rotate_right(1);
    cjm_proxy::Worker::spawn(spec)
}

#[test]
fn a_worker_speaking_another_protocol_is_refused_with_both_versions_named() {
    let err = fake_worker("old_protocol").unwrap_err();
    let WorkerError::Handshake { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        reason.contains("cjm/1") && reason.contains("cjm/0"),
        "{err}"
    );
    assert!(
        err.hint().is_some_and(|h| h.contains("cjm-worker")),
        "{err:?}"
    );
}

#[test]
fn garbage_frames_fail_the_call_they_answer_and_nothing_else() {
    let w = fake_worker("garbage").unwrap();
    let err = w.execute_blocking(vec![], vec![]).unwrap_err();
    assert!(matches!(err, WorkerError::Protocol { .. }), "{err:?}");
    // The channel still works for the next call.
    assert_eq!(
        w.execute_blocking(vec![], vec![]).unwrap(),
        s("still talking")
    );
}

#[test]
fn an_interpreter_without_cjm_worker_fails_the_handshake_with_its_stderr() {
    let mut spec = crate::support::spec("Echo");
    spec.python = "python3".into();
    spec.python_path.clear();
    let err = cjm_proxy::Worker::spawn(spec).unwrap_err();
    let WorkerError::Handshake { stderr_tail, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        stderr_tail
            .iter()
            .any(|l| l.contains("No module named cjm_worker")),
        "{err}"
    );
}

#[test]
fn a_worker_that_exits_in_init_reports_its_status_and_stderr() {
    let err = cjm_proxy::Worker::spawn(crate::support::spec("ExitsInInit")).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            cjm_proxy::WorkerError::Handshake {
                exit: Some(cjm_core::WorkerExit::Code(4)),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("it exited before greeting the host (exited with status 4)")
            && text.contains("no CUDA device found, giving up"),
        "{text}"
    );
}

#[test]
fn a_death_names_the_log_file_that_holds_what_the_worker_printed() {
    let log = std::env::temp_dir().join(format!("cjm-proxy-death-log-{}.log", std::process::id()));
    let w = cjm_proxy::Worker::spawn(crate::support::spec("Crasher").log_file(&log)).unwrap();
    let err = w
        .execute_blocking(vec![crate::support::s("exit")], vec![])
        .unwrap_err();
    let hint = err.hint().unwrap_or_default();
    assert!(hint.contains(&log.display().to_string()), "{hint}");
    assert!(
        fs_err::read_to_string(&log)
            .unwrap_or_default()
            .contains("about to crash"),
        "the log holds the worker's stderr"
    );
    let _ = fs_err::remove_file(&log);
}

#[test]
fn a_worker_log_is_rotated_by_size_keeping_the_newest_output() {
    let dir = std::env::temp_dir().join(format!("cjm-proxy-log-rotation-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&dir);
    let log = dir.join("flood.log");
    let w = cjm_proxy::Worker::spawn(crate::support::spec("Echo").log_file(&log)).unwrap();
    let mut events = w.events();
    let kw = crate::support::kw(&[
        ("action", crate::support::s("flood")),
        ("mib", cjm_proto::Value::Int(40)),
    ]);
    assert_eq!(
        w.execute_blocking(vec![], kw).unwrap(),
        crate::support::s("flooded")
    );
    // The log threads are done with the flood once its last line is an event.
    let seen = crate::support::eventually(std::time::Duration::from_secs(20), || {
        while let Ok(e) = events.try_recv() {
            if matches!(&e, cjm_proxy::Event::Output { line, .. } if line == "the last line") {
                return true;
            }
        }
        false
    });
    assert!(seen.is_some(), "the flood's last line reached the host");
    w.stop_blocking();
    let size = |p: &std::path::Path| fs_err::metadata(p).map_or(0, |m| m.len());
    let limit = cjm_proxy::LOG_ROTATE_BYTES + 256 * 1024;
    let rotated = dir.join("flood.log.1");
    assert!(size(&log) <= limit, "{} bytes", size(&log));
    assert!(size(&rotated) <= limit, "{} bytes", size(&rotated));
    assert!(size(&rotated) > 0, "the log was rotated");
    let current = fs_err::read_to_string(&log).unwrap();
    assert!(
        current.contains("the last line"),
        "the newest output is kept"
    );
    assert!(
        current.contains("--- log rotated at")
            || fs_err::read_to_string(&rotated)
                .unwrap()
                .contains("--- log rotated at"),
        "a rotation says where the part before went"
    );
    let _ = fs_err::remove_dir_all(&dir);
}
