//! Supervision: crashes restarted after a backoff (on the manual and the real
//! clock), quarantine after too many, the reaper thread.

use std::time::Duration;

use cjm_manager::{
    InstanceState, LoadSpec, Manager, ManagerError, ManagerEvent, ManagerOptions, RestartPolicy,
    SystemClock,
};

use crate::support::{Project, crash, instance_of, wait_for};

#[test]
fn a_crashed_worker_is_restarted_after_a_backoff() {
    let p = Project::new("restart");
    let m = p.manager();
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    let before = m.info(&id).unwrap().pid.unwrap();
    let mut events = m.subscribe();
    crash(&m, &id);
    let seen = wait_for(&mut events, |e| {
        matches!(
            e,
            ManagerEvent::State {
                to: InstanceState::Ready,
                ..
            }
        )
    });
    let record = seen
        .iter()
        .find_map(|e| match e {
            ManagerEvent::Crashed(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            record.plugin.as_str(),
            record.instance_id.as_str(),
            record.pid
        ),
        ("counter", "counter", before)
    );
    assert_eq!(record.exit, Some(cjm_core::WorkerExit::Code(3)));
    assert_eq!(record.cause, "exited with status 3");
    assert!(seen.iter().any(|e| matches!(
        e,
        ManagerEvent::RestartScheduled { delay, recent_crashes: 1, .. } if *delay == Duration::from_millis(100)
    )));
    let after = m.info(&id).unwrap();
    assert_ne!(after.pid, Some(before));
    assert_eq!(after.last_crash, Some(record));
    m.execute(&id, vec![], vec![]).unwrap();
}

#[test]
fn too_many_crashes_quarantine_an_instance_while_others_keep_working() {
    let p = Project::new("crashloop");
    let m = p.manager();
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    let other = m.load(&LoadSpec::new("counter").instance("other")).unwrap();
    let mut events = m.subscribe();
    // From now on every start of the plugin dies in `initialize`.
    fs_err::write(p.marker("crash-on-init"), "").unwrap();
    crash(&m, &id);
    let seen = wait_for(&mut events, |e| {
        matches!(e, ManagerEvent::CrashLooping { .. })
    });
    let delays: Vec<Duration> = seen
        .iter()
        .filter_map(|e| match e {
            ManagerEvent::RestartScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    // 100 ms doubling, then the fourth crash (more than 3 in 60 s) quarantines it;
    // the manual clock makes the waits instant.
    let ms = Duration::from_millis;
    assert_eq!(delays, [ms(100), ms(200), ms(400)]);
    let Some(ManagerEvent::CrashLooping { reason, .. }) = seen.last() else {
        unreachable!()
    };
    assert!(reason.starts_with("4 crashes within 60 s"), "{reason}");
    assert_eq!(m.state(&id), Some(InstanceState::CrashLooping));
    let err = m.execute(&id, vec![], vec![]).unwrap_err();
    assert!(matches!(err, ManagerError::CrashLooping { .. }), "{err}");
    assert!(err.hint().unwrap().contains("reset"));

    // The other instance still has its worker (it was never asked to restart).
    fs_err::remove_file(p.marker("crash-on-init")).unwrap();
    m.execute(&other, vec![], vec![]).unwrap();
    // An operator fixed the cause: reset brings it back.
    m.reset(&id).unwrap();
    assert_eq!(m.state(&id), Some(InstanceState::Ready));
    m.execute(&id, vec![], vec![]).unwrap();
}

#[test]
fn on_the_system_clock_a_crash_waits_out_its_backoff_and_the_reaper_thread_stops_an_idle_worker() {
    let p = Project::new("system-clock");
    let clock = SystemClock::shared();
    let backoff = Duration::from_millis(100);
    // The real clock and the background reaper, as an application runs them.
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            restart: RestartPolicy {
                initial_backoff: backoff,
                max_backoff: backoff,
                max_crashes: 3,
                window: Duration::from_mins(1),
            },
            clock: clock.clone(),
            reap_interval: Some(Duration::from_millis(10)),
            ..p.options()
        },
    );
    let crashing = m.load(&LoadSpec::new("counter")).unwrap();
    let mut events = m.subscribe();
    let idle = m
        .load(
            &LoadSpec::new("counter")
                .instance("idle")
                .idle_ttl(Duration::from_millis(1)),
        )
        .unwrap();
    crash(&m, &crashing);
    let (mut restarted, mut reaped) = (false, false);
    let seen = wait_for(&mut events, |e| {
        match e {
            ManagerEvent::State {
                instance_id,
                from: InstanceState::Starting,
                to: InstanceState::Ready,
                ..
            } if *instance_id == crashing => restarted = true,
            ManagerEvent::State {
                instance_id,
                to: InstanceState::Stopped,
                ..
            } if *instance_id == idle => reaped = true,
            _ => {}
        }
        restarted && reaped
    });
    let of = |id: &str| -> Vec<ManagerEvent> {
        seen.iter()
            .filter(|e| instance_of(e) == id)
            .cloned()
            .collect()
    };
    let state = |id: &str, from, to| ManagerEvent::State {
        instance_id: id.to_owned(),
        plugin: "counter".into(),
        from,
        to,
    };
    assert_eq!(
        of(&idle),
        [
            state(&idle, InstanceState::Stopped, InstanceState::Starting),
            state(&idle, InstanceState::Starting, InstanceState::Ready),
            state(&idle, InstanceState::Ready, InstanceState::Stopping),
            state(&idle, InstanceState::Stopping, InstanceState::Stopped),
        ],
        "started, then stopped by the reaper once idle"
    );
    let crashes = of(&crashing);
    let ManagerEvent::Crashed(record) = &crashes[0] else {
        panic!("{crashes:#?}")
    };
    assert_eq!(
        crashes[1..],
        [
            state(&crashing, InstanceState::Ready, InstanceState::Crashed),
            ManagerEvent::RestartScheduled {
                instance_id: crashing.clone(),
                delay: backoff,
                recent_crashes: 1,
            },
            state(&crashing, InstanceState::Crashed, InstanceState::Starting),
            state(&crashing, InstanceState::Starting, InstanceState::Ready),
        ]
    );
    // The crash was stamped on the manager's clock before the backoff began, so
    // by now that clock has moved on by at least the backoff (a lower bound only:
    // a real wait is never shorter).
    assert!(
        clock.now().saturating_sub(record.at) >= backoff,
        "the restart waited out its backoff"
    );
    m.execute(&crashing, vec![], vec![]).unwrap();
    assert_eq!(m.info(&idle).unwrap().pid, None);
}

/// A call past its `CallOptions` timeout fails at once; the manager cancels
/// it in phases, and the worker the cancel kills is restarted *and
/// initialized*, so the next call finds its configuration.
#[test]
fn a_call_past_its_timeout_is_stopped_and_the_worker_after_it_is_initialized() {
    let p = Project::new("call-timeout");
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            clock: SystemClock::shared(),
            ..p.options()
        },
    );
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    let before = m.info(&id).unwrap().pid.unwrap();
    let err = m
        .call(
            &id,
            "execute",
            vec![],
            vec![("action".into(), cjm_proto::Value::from("stubborn"))],
            cjm_proxy::CallOptions::timeout(Duration::from_millis(100)),
        )
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    crate::support::eventually("the stuck worker to be replaced", || {
        m.info(&id)
            .and_then(|i| i.pid)
            .is_some_and(|pid| pid != before)
            && m.info(&id).is_some_and(|i| i.state == InstanceState::Ready)
    });
    let out = m.execute(&id, vec![], vec![]).unwrap().to_json();
    assert!(out["config"].is_object(), "initialized again: {out}");
}
