//! The manager's own threads are owned and joined: none outlives the manager,
//! whatever it was doing when the last handle went.

use std::time::Duration;

use cjm_manager::{
    InstanceState, LoadSpec, Manager, ManagerEvent, ManagerOptions, RestartPolicy, SystemClock,
};

use crate::support::{Project, crash, exited, wait_for};

/// The names of this process's threads that belong to a manager: supervisors
/// (`cjm-supervise-<instance>`, cut to 15 bytes by the kernel) and the reaper.
fn manager_threads() -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| fs_err::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_owned())
        .filter(|name| name.starts_with("cjm-supervise") || name == "cjm-reaper")
        .collect();
    names.sort();
    names
}

/// After `drop` returns, waits (bounded) for the threads' `/proc` entries to go:
/// a join returns when the thread's exit clears its id, and the kernel removes
/// the entry a moment later. A thread still running (asleep in a backoff or a
/// reaper period of an hour) stays listed and fails the test.
fn assert_no_manager_threads_left() {
    let gone = cjm_testkit::eventually(Duration::from_secs(10), || manager_threads().is_empty());
    assert!(gone.is_some(), "threads left: {:?}", manager_threads());
}

#[test]
fn dropping_a_manager_joins_its_supervisors_and_its_reaper_even_during_a_backoff() {
    let p = Project::new("joined");
    let hour = Duration::from_hours(1);
    // The real clock, a backoff and a reaper period far longer than the test: a
    // thread that kept the manager alive through them, or slept them out, would
    // outlive the drop.
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            restart: RestartPolicy {
                initial_backoff: hour,
                max_backoff: hour,
                ..RestartPolicy::default()
            },
            clock: SystemClock::shared(),
            reap_interval: Some(hour),
            ..p.options()
        },
    );
    let id = m.load(&LoadSpec::new("counter").idle_ttl(hour)).unwrap();
    m.load(&LoadSpec::new("counter").instance("other")).unwrap();
    // A thread names itself once it runs, a moment after it was spawned.
    let expected = ["cjm-reaper", "cjm-supervise-c", "cjm-supervise-o"];
    assert!(
        cjm_testkit::eventually(Duration::from_secs(10), || manager_threads() == expected)
            .is_some(),
        "a supervisor per worker, and a reaper for the instance with an idle timeout: {:?}",
        manager_threads()
    );
    let mut events = m.subscribe();
    crash(&m, &id);
    wait_for(
        &mut events,
        |e| matches!(e, ManagerEvent::RestartScheduled { delay, .. } if *delay == hour),
    );
    assert_eq!(m.state(&id), Some(InstanceState::Crashed));
    let pid = m.info("other").unwrap().pid.unwrap();
    drop(m);
    // A forked worker is its forkserver's child, reaped there a moment later.
    assert!(
        cjm_testkit::eventually(Duration::from_secs(10), || exited(pid)).is_some(),
        "dropping the manager stopped worker {pid}"
    );
    assert_no_manager_threads_left();
}

#[test]
fn a_manager_dropped_while_a_supervisor_restarts_its_worker_is_shut_down_by_that_supervisor() {
    let p = Project::new("dropped-on-supervisor");
    let m = p.manager();
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    // The restart's `initialize` waits for the test: the supervisor holds the
    // manager meanwhile, so it drops the last handle when it is done.
    fs_err::write(p.marker("hold-init"), "").unwrap();
    crash(&m, &id);
    let held = p.marker("init-held");
    assert!(
        cjm_testkit::eventually(Duration::from_secs(20), || fs_err::read_to_string(&held)
            .is_ok_and(|pid| !pid.is_empty()))
        .is_some(),
        "the restart never reached initialize"
    );
    let restarted: u32 = fs_err::read_to_string(&held).unwrap().parse().unwrap();
    drop(m);
    assert!(!exited(restarted), "the supervisor still holds the manager");
    fs_err::remove_file(p.marker("hold-init")).unwrap();
    assert!(
        cjm_testkit::eventually(Duration::from_secs(20), || exited(restarted)).is_some(),
        "the supervisor dropped the manager, which stopped worker {restarted}"
    );
    assert_no_manager_threads_left();
}
