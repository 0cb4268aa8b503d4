use std::time::Duration;

use crate::support::{Project, crash, wait_for};
use cjm_manager::{InstanceState, LoadSpec, ManagerError, ManagerEvent};

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
