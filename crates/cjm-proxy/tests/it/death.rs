use std::time::Duration;

use cjm_core::WorkerExit;
use cjm_proto::Value;
use cjm_proxy::WorkerError;

use crate::support::{s, spawn};

#[track_caller]
fn check(how: &str, exit: WorkerExit, oom: bool) {
    let w = spawn("Crasher");
    // A second call queued behind the crashing one fails with the same death,
    // whether it was sent before the worker died or is refused because it has.
    let first = w.start("execute", vec![s(how)], vec![]).unwrap();
    let second = w.start("execute", vec![s("exit")], vec![]);
    for outcome in [first.wait(), second.and_then(cjm_proxy::PendingCall::wait)] {
        let err = outcome.unwrap_err();
        let WorkerError::Died { death, .. } = &err else {
            panic!("{how}: {err:?}")
        };
        assert_eq!(death.exit, Some(exit), "{how}");
        assert_eq!(death.probable_oom, oom, "{how}");
        assert!(
            death
                .stderr_tail
                .iter()
                .any(|l| l.contains("about to crash")),
            "{how}: {:?}",
            death.stderr_tail
        );
    }
    // Later calls fail at once, and a restart brings the plugin back.
    assert!(matches!(
        w.execute_blocking(vec![], vec![]),
        Err(WorkerError::Died { .. })
    ));
    w.restart_blocking().unwrap();
    assert_eq!(
        w.execute_blocking(vec![s("none")], vec![]).unwrap(),
        s("unreachable")
    );
}

#[test]
fn a_worker_that_exits_mid_call_fails_every_in_flight_call() {
    check("exit", WorkerExit::Code(3), false);
}

#[test]
fn a_sigkill_from_outside_is_not_blamed_on_memory_without_evidence() {
    // The fixture kills itself with SIGKILL: no OOM killer was involved, and
    // neither the cgroup's counter nor the kernel log says otherwise.
    check("sigkill", WorkerExit::Signal(libc::SIGKILL), false);
    let w = spawn("Crasher");
    let err = w.execute_blocking(vec![s("sigkill")], vec![]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "was killed by SIGKILL (9), sent from outside cjm (no sign of the out-of-memory killer"
        ) && !text.contains("by the kernel's out-of-memory killer"),
        "{text}"
    );
    assert!(
        !err.hint().unwrap_or_default().contains("more memory"),
        "{:?}",
        err.hint()
    );
}

#[test]
fn a_segfault_is_reported_with_its_signal() {
    check("segfault", WorkerExit::Signal(libc::SIGSEGV), false);
}

#[test]
fn garbage_on_stdout_does_not_disturb_the_channel() {
    let w = spawn("Echo");
    let mut events = w.events();
    let out = w
        .execute_blocking(vec![], crate::support::kw(&[("action", s("garbage"))]))
        .unwrap();
    assert_eq!(out, s("survived"));
    assert_eq!(
        w.execute_blocking(vec![Value::Int(7)], vec![]).unwrap(),
        Value::Int(7)
    );
    let got_output = crate::support::eventually(Duration::from_secs(5), || {
        matches!(
            events.try_recv(),
            Ok(cjm_proxy::Event::Output {
                stream: "stdout",
                ..
            })
        )
    });
    assert!(got_output.is_some(), "stdout lines arrive as output events");
}

#[test]
fn prints_land_in_the_log_file() {
    let dir = std::env::temp_dir().join(format!("cjm-log-{}", std::process::id()));
    let log = dir.join("logs/echo.log");
    let w = cjm_proxy::Worker::spawn(crate::support::spec("Echo").log_file(&log)).unwrap();
    w.execute_blocking(vec![], crate::support::kw(&[("action", s("print"))]))
        .unwrap();
    w.stop_blocking();
    let text = fs_err::read_to_string(&log).unwrap();
    assert!(text.contains("--- Starting echo at"), "{text}");
    assert!(
        text.contains("hello from stdout") && text.contains("hello from stderr"),
        "{text}"
    );
    let _ = fs_err::remove_dir_all(&dir);
}

/// A memory cgroup with a limit the worker will pass, where this machine lets the
/// test make one (root, a cgroup v1 memory hierarchy or a v2 one with the memory
/// controller); `None` elsewhere.
fn memory_limited_cgroup(limit_mib: u64) -> Option<std::path::PathBuf> {
    let name = format!("cjm-oom-test-{}", std::process::id());
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").join(&name);
    if fs_err::create_dir(&v1).is_ok() {
        let bytes = (limit_mib * 1024 * 1024).to_string();
        if fs_err::write(v1.join("memory.limit_in_bytes"), &bytes).is_ok() {
            // No swap to spill into, where the kernel has the knob.
            let _ = fs_err::write(v1.join("memory.memsw.limit_in_bytes"), &bytes);
            return Some(v1);
        }
        let _ = fs_err::remove_dir(&v1);
    }
    let v2 = std::path::Path::new("/sys/fs/cgroup").join(&name);
    if fs_err::create_dir(&v2).is_ok() {
        if fs_err::write(v2.join("memory.max"), format!("{limit_mib}M")).is_ok() {
            let _ = fs_err::write(v2.join("memory.swap.max"), "0");
            return Some(v2);
        }
        let _ = fs_err::remove_dir(&v2);
    }
    None
}

#[test]
fn a_worker_the_oom_killer_ends_is_reported_as_oom_with_the_evidence() {
    let Some(cgroup) = memory_limited_cgroup(100) else {
        eprintln!("no memory cgroup can be made here: the OOM case is not checked");
        return;
    };
    let w = spawn("Echo");
    fs_err::write(cgroup.join("cgroup.procs"), w.pid().to_string()).unwrap();
    let err = w
        .execute_blocking(
            vec![],
            crate::support::kw(&[("action", s("allocate")), ("mib", Value::Int(400))]),
        )
        .unwrap_err();
    let _ = fs_err::remove_dir(&cgroup);
    let WorkerError::Died { death, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        death.exit,
        Some(WorkerExit::Signal(libc::SIGKILL)),
        "{death}"
    );
    assert!(death.probable_oom, "{death}");
    let evidence = death.oom_evidence.clone().unwrap_or_default();
    assert!(
        evidence.contains(&format!("Killed process {}", w.pid()))
            || evidence.contains("OOM-kill count"),
        "{evidence}"
    );
    assert!(
        err.to_string()
            .contains("by the kernel's out-of-memory killer"),
        "{err}"
    );
    assert!(
        err.hint().unwrap_or_default().contains("more memory"),
        "{:?}",
        err.hint()
    );
}
