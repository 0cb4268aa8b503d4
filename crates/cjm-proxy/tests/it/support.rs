//! What the proxy's tests share: fixture specs, the suite's start method, and
//! waits on what a worker or a fixture does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cjm_proto::Value;
use cjm_proxy::{Event, StartMethod, Worker, WorkerSpec};

pub(crate) use cjm_testkit::{eventually, python};

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// How the suite starts its workers: `CJM_TEST_START_METHOD=forkserver` runs it
/// on forked workers, anything else on executed ones. A test about one start
/// method sets it on its spec itself and says why.
pub(crate) fn start_method() -> StartMethod {
    if std::env::var("CJM_TEST_START_METHOD").as_deref() == Ok("forkserver") {
        StartMethod::Forkserver
    } else {
        StartMethod::Spawn
    }
}

pub(crate) fn spec(class: &str) -> WorkerSpec {
    let mut s = WorkerSpec::new(class.to_lowercase(), python(), "fixture_plugins", class)
        .python_path(fixtures())
        .start_method(start_method());
    s.start_timeout = Duration::from_secs(20);
    s.stop_grace = Duration::from_millis(500);
    s
}

/// A worker of the fixture `class`, started the suite's way; a suite run on
/// forked workers checks that it really was forked (not executed after a
/// forkserver failed).
pub(crate) fn spawn(class: &str) -> Worker {
    let w = Worker::spawn(spec(class)).unwrap_or_else(|e| panic!("spawning {class}: {e}"));
    let host = std::process::id() as i32;
    let parent = ppid(w.pid() as i32);
    match start_method() {
        StartMethod::Forkserver => assert_ne!(parent, host, "{class}: forked, not executed"),
        StartMethod::Spawn => assert_eq!(parent, host, "{class}: executed by the host"),
    }
    w
}

pub(crate) fn s(x: &str) -> Value {
    Value::from(x)
}

pub(crate) fn kw(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Whether a process exists (and is not a zombie).
pub(crate) fn alive(pid: i32) -> bool {
    match fs_err::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// A live process's parent.
pub(crate) fn ppid(pid: i32) -> i32 {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("ppid field")
}

/// Waits (bounded) until a fixture has created `path`.
#[track_caller]
pub(crate) fn wait_for_file(path: &Path) {
    assert!(
        eventually(Duration::from_secs(20), || path.exists()).is_some(),
        "{} never appeared",
        path.display()
    );
}

/// Waits until the worker acknowledges cancel phase `phase` of call `id` (the
/// suite's nextest timeout bounds it).
#[track_caller]
pub(crate) fn wait_for_cancel_ack(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    id: u64,
    phase: &str,
) {
    loop {
        match events.blocking_recv() {
            Some(Event::CancelAck { call, phase: p }) if call == id && p == phase => return,
            Some(_) => {}
            None => panic!("the worker's events ended before it acknowledged {phase}"),
        }
    }
}

/// Waits (bounded) until the worker reports call `id` as the one it is running.
pub(crate) fn wait_running(w: &Worker, id: u64) {
    let running = eventually(Duration::from_secs(10), || {
        w.worker_stats_blocking(Duration::from_secs(5))
            .ok()
            .and_then(|st| st.get("current_call").and_then(Value::as_i64))
            == Some(id as i64)
    });
    assert!(running.is_some(), "call {id} never started running");
}
