use std::time::Duration;

use cjm_core::{CancelPhase, PluginError};
use cjm_proto::Value;
use cjm_proxy::{CancelPolicy, WorkerError};

use crate::support::{kw, s, spawn};

fn policy() -> CancelPolicy {
    CancelPolicy {
        grace: Duration::from_millis(500),
        restart: true,
    }
}

/// Starts a slow call, waits until it runs, cancels it, and checks the phase the
/// canceller reports and the error the caller gets.
#[track_caller]
fn check(how: &str, phase: CancelPhase) {
    let w = spawn("Slow");
    let call = w
        .start(
            "execute",
            vec![s(how)],
            kw(&[("seconds", Value::Float(30.0))]),
        )
        .unwrap();
    // Wait until the worker is running it (it reports the call as current).
    crate::support::wait_running(&w, call.id());
    let reached = w.cancel_blocking(call.id(), policy()).unwrap();
    assert_eq!(reached, Some(phase), "{how}");
    let err = call.wait().unwrap_err();
    match &err {
        WorkerError::Plugin(PluginError::Cancelled { phase: p, .. }) => {
            assert_eq!(*p, phase, "{how}");
        }
        other => panic!("{how}: {other:?}"),
    }
    let job = err.to_job_error(std::time::SystemTime::now());
    assert!(!job.retriable, "{how}: cancellation is never retried");
    // The worker (restarted if it had to be killed) serves the next call.
    assert_eq!(
        w.execute_blocking(
            vec![s("cooperative")],
            kw(&[("seconds", Value::Float(0.0))])
        )
        .unwrap(),
        s("finished")
    );
}

#[test]
fn a_cooperative_plugin_stops_at_check_cancel() {
    check("cooperative", CancelPhase::Cooperative);
}

#[test]
fn a_pure_python_loop_that_ignores_check_cancel_is_interrupted() {
    check("pure_python", CancelPhase::Interrupted);
}

#[test]
fn a_c_call_holding_the_gil_is_killed_and_the_worker_restarted() {
    check("c_call", CancelPhase::Killed);
}

#[test]
fn a_plugin_that_swallows_the_interrupt_is_killed() {
    check("swallow", CancelPhase::Killed);
}

#[test]
fn pings_are_answered_while_plugin_code_holds_the_gil() {
    let w = spawn("Slow");
    let call = w
        .start(
            "execute",
            vec![s("c_call")],
            kw(&[("seconds", Value::Float(30.0))]),
        )
        .unwrap();
    crate::support::wait_running(&w, call.id());
    for _ in 0..10 {
        w.ping_blocking(Duration::from_secs(2))
            .expect("ping while the GIL is held");
    }
}

#[test]
fn a_call_past_its_timeout_fails_with_a_timeout_and_is_cancelled() {
    let w = spawn("Slow");
    let err = w
        .call_blocking(
            "execute",
            vec![s("cooperative")],
            kw(&[("seconds", Value::Float(30.0))]),
            cjm_proxy::CallOptions::timeout(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(
        matches!(err, WorkerError::Plugin(PluginError::Timeout { .. })),
        "{err:?}"
    );
    // The background cancel frees the worker for the next call.
    let out = w.call_blocking(
        "execute",
        vec![s("cooperative")],
        kw(&[("seconds", Value::Float(0.0))]),
        cjm_proxy::CallOptions::timeout(Duration::from_secs(20)),
    );
    assert_eq!(out.unwrap(), s("finished"));
}

#[test]
fn cancelling_a_queued_call_never_runs_it() {
    let w = spawn("Slow");
    let first = w
        .start(
            "execute",
            vec![s("cooperative")],
            kw(&[("seconds", Value::Float(30.0))]),
        )
        .unwrap();
    let second = w
        .start(
            "execute",
            vec![s("cooperative")],
            kw(&[("seconds", Value::Float(30.0))]),
        )
        .unwrap();
    assert_eq!(
        w.cancel_blocking(second.id(), policy()).unwrap(),
        Some(CancelPhase::Cooperative)
    );
    assert!(matches!(
        second.wait(),
        Err(WorkerError::Plugin(PluginError::Cancelled { .. }))
    ));
    assert_eq!(
        w.cancel_blocking(first.id(), policy()).unwrap(),
        Some(CancelPhase::Cooperative)
    );
    assert!(first.wait().is_err());
}
