//! Phased cancellation, each test driven by its phases rather than by time: a
//! cooperative cancel gets a grace that cannot pass in practice, so only the
//! plugin's co-operation ends it; an escalation uses a fixture that provably
//! ignores what comes before (it says, through a file, that it is inside the part
//! that does), so escalating is the only way out.

use std::sync::Arc;
use std::time::Duration;

use cjm_core::{CancelPhase, ManualClock, PluginError};
use cjm_proto::Value;
use cjm_proxy::{CancelPolicy, PendingCall, Worker, WorkerError};
use cjm_testkit::Scratch;

use crate::support::{kw, s, spawn, spec, wait_for_cancel_ack, wait_for_file, wait_running};

/// A grace no cancel of a co-operating plugin comes near, however busy the machine.
const PATIENT: Duration = Duration::from_mins(1);

fn patient() -> CancelPolicy {
    CancelPolicy {
        grace: PATIENT,
        restart: true,
    }
}

/// Starts `how` (for ten minutes) and returns once the fixture is inside the part
/// that decides how it can be cancelled.
fn start_inside(w: &Worker, how: &str, scratch: &Scratch) -> PendingCall {
    let marker = scratch.join(format!("{how}-inside"));
    let call = w
        .start(
            "execute",
            vec![s(how)],
            kw(&[
                ("seconds", Value::Float(600.0)),
                ("marker", s(&marker.display().to_string())),
            ]),
        )
        .unwrap();
    wait_for_file(&marker);
    call
}

/// The error the caller gets, the phase it names, and the worker (restarted if
/// it had to be killed) serving the next call.
#[track_caller]
fn check_outcome(w: &Worker, call: PendingCall, phase: CancelPhase) {
    let err = call.wait().unwrap_err();
    match &err {
        WorkerError::Plugin(PluginError::Cancelled { phase: p, .. }) => assert_eq!(*p, phase),
        other => panic!("{other:?}"),
    }
    let job = err.to_job_error(std::time::SystemTime::now());
    assert!(!job.retriable, "cancellation is never retried");
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
    let scratch = Scratch::new("proxy-cancel");
    let w = spawn("Slow");
    let call = start_inside(&w, "cooperative", &scratch);
    assert_eq!(
        w.cancel_blocking(call.id(), patient()).unwrap(),
        Some(CancelPhase::Cooperative)
    );
    check_outcome(&w, call, CancelPhase::Cooperative);
}

#[test]
fn a_pure_python_loop_that_ignores_check_cancel_is_interrupted() {
    // The loop never calls check_cancel, so the cooperative phase ends only when
    // its grace passes, and the grace is on a clock only this test moves: once,
    // after the worker has had the cancel. The interrupt's grace never passes.
    let scratch = Scratch::new("proxy-cancel");
    let clock = Arc::new(ManualClock::default());
    let w = Worker::spawn(spec("Slow").clock(clock.clone())).unwrap();
    let mut events = w.events();
    let call = start_inside(&w, "pure_python", &scratch);
    let canceller = {
        let (w, id) = (w.clone(), call.id());
        std::thread::spawn(move || w.cancel_blocking(id, patient()))
    };
    wait_for_cancel_ack(&mut events, call.id(), "cooperative");
    clock.advance(PATIENT);
    assert_eq!(
        canceller.join().unwrap().unwrap(),
        Some(CancelPhase::Interrupted)
    );
    check_outcome(&w, call, CancelPhase::Interrupted);
}

/// Kills a call that nothing else can end; the graces are short because passing
/// them is the only way on.
#[track_caller]
fn check_killed(how: &str) {
    let scratch = Scratch::new("proxy-cancel");
    let w = spawn("Slow");
    let call = start_inside(&w, how, &scratch);
    let policy = CancelPolicy {
        grace: Duration::from_millis(100),
        restart: true,
    };
    assert_eq!(
        w.cancel_blocking(call.id(), policy).unwrap(),
        Some(CancelPhase::Killed),
        "{how}"
    );
    check_outcome(&w, call, CancelPhase::Killed);
}

#[test]
fn a_c_call_holding_the_gil_is_killed_and_the_worker_restarted() {
    check_killed("c_call");
}

#[test]
fn a_plugin_that_swallows_the_interrupt_is_killed() {
    check_killed("swallow");
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
    wait_running(&w, call.id());
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
    let scratch = Scratch::new("proxy-cancel");
    let ran = scratch.join("second-ran");
    let w = spawn("Slow");
    let first = w
        .start(
            "execute",
            vec![s("cooperative")],
            kw(&[("seconds", Value::Float(600.0))]),
        )
        .unwrap();
    // The first call runs, so the second waits behind it in the worker's queue.
    wait_running(&w, first.id());
    let second = w
        .start(
            "execute",
            vec![s("cooperative")],
            kw(&[
                ("seconds", Value::Float(0.0)),
                ("marker", s(&ran.display().to_string())),
            ]),
        )
        .unwrap();
    assert_eq!(
        w.cancel_blocking(second.id(), patient()).unwrap(),
        Some(CancelPhase::Cooperative)
    );
    assert!(
        matches!(
            second.wait(),
            Err(WorkerError::Plugin(PluginError::Cancelled {
                phase: CancelPhase::Cooperative,
                ..
            }))
        ),
        "a queued call ends cooperatively, without plugin code"
    );
    assert_eq!(
        w.cancel_blocking(first.id(), patient()).unwrap(),
        Some(CancelPhase::Cooperative)
    );
    assert!(matches!(
        first.wait(),
        Err(WorkerError::Plugin(PluginError::Cancelled {
            phase: CancelPhase::Cooperative,
            ..
        }))
    ));
    // A later call has run, so the worker is past where the second one stood.
    assert_eq!(
        w.execute_blocking(
            vec![s("cooperative")],
            kw(&[("seconds", Value::Float(0.0))])
        )
        .unwrap(),
        s("finished")
    );
    assert!(!ran.exists(), "the cancelled call never ran");
}
