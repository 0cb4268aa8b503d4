use std::path::PathBuf;
use std::time::Duration;

use cjm_proto::Value;
use cjm_proxy::{StartMethod, Worker, WorkerSpec};

pub(crate) use cjm_testkit::python;

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub(crate) fn spec(class: &str) -> WorkerSpec {
    let mut s = WorkerSpec::new(class.to_lowercase(), python(), "fixture_plugins", class)
        .python_path(fixtures());
    s.start_timeout = Duration::from_secs(20);
    s.stop_grace = Duration::from_millis(500);
    // `CJM_TEST_START_METHOD=forkserver` runs the whole suite on forked workers.
    if std::env::var("CJM_TEST_START_METHOD").as_deref() == Ok("forkserver") {
        s.start_method = StartMethod::Forkserver;
    }
    s
}

pub(crate) fn spawn(class: &str) -> Worker {
    Worker::spawn(spec(class)).unwrap_or_else(|e| panic!("spawning {class}: {e}"))
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

/// Waits (bounded) until `pred` holds, polling /proc-style state that has no event
/// to wait on; returns how long it took.
pub(crate) fn eventually(limit: Duration, mut pred: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    loop {
        if pred() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::yield_now();
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
