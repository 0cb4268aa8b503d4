//! The spec's clock reaches the proxy: the wall stamps it writes come from it.

use std::sync::Arc;
use std::time::Duration;

use cjm_core::{ManualClock, PluginError};
use cjm_proxy::{Worker, WorkerError};
use cjm_testkit::Scratch;

use crate::support::{s, spec};

#[test]
fn a_manual_clock_on_the_spec_stamps_errors_and_the_log_with_its_wall_time() {
    let scratch = Scratch::new("proxy-clock");
    let log = scratch.join("raiser.log");
    // 2026-01-01T00:00:00Z, nowhere near the machine's time.
    let clock = Arc::new(ManualClock::default());
    let w = Worker::spawn(spec("Raiser").clock(clock.clone()).log_file(&log)).unwrap();
    clock.advance(Duration::from_secs(90));
    let err = w.execute_blocking(vec![s("value")], vec![]).unwrap_err();
    let WorkerError::Plugin(PluginError::Raised(job)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        job.occurred_at.as_deref(),
        Some("2026-01-01T00:01:30+00:00"),
        "{job:?}"
    );
    w.stop_blocking();
    let text = fs_err::read_to_string(&log).unwrap();
    assert!(
        text.contains("--- Starting raiser at 2026-01-01T00:00:00+00:00 ---"),
        "{text}"
    );

    // A plugin that fails to load is stamped the same way.
    let err = Worker::spawn(spec("BrokenInit").clock(clock.clone())).unwrap_err();
    let WorkerError::Load { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        error.occurred_at.as_deref(),
        Some("2026-01-01T00:01:30+00:00")
    );
}
