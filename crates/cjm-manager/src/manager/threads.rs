//! The manager's own threads (one supervisor per started worker, the idle
//! reaper, the resource monitor and the empirical recorder) and the shutdown signal they wait on. Every
//! thread is owned here and joined when the manager goes; none holds the manager
//! alive while it waits.

use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use cjm_core::Clock;

use crate::instance::lock;

/// The longest piece of a backoff slept at once; how late a shutdown can notice.
const BACKOFF_SLICE: Duration = Duration::from_millis(20);

/// Set once, when the last manager handle is dropped; wakes whoever waits on it.
#[derive(Debug, Default)]
pub(super) struct Shutdown {
    closed: Mutex<bool>,
    changed: Condvar,
}

impl Shutdown {
    fn close(&self) {
        *lock(&self.closed) = true;
        self.changed.notify_all();
    }

    /// Waits `period` of real time, or until shutdown; `true` when shut down.
    ///
    /// This is the one wait on the system's time rather than the manager's clock:
    /// it paces the reaper, which must wake at once on shutdown (a clock's `sleep`
    /// cannot be interrupted) and must not spin on a `ManualClock`, whose `sleep`
    /// returns at once. Whether an instance is idle is still judged on the clock.
    pub(super) fn wait(&self, period: Duration) -> bool {
        let closed = lock(&self.closed);
        let (closed, _) = self
            .changed
            .wait_timeout_while(closed, period, |closed| !*closed)
            .unwrap_or_else(PoisonError::into_inner);
        *closed
    }

    /// Waits `delay` on `clock` (a restart's backoff); `false` when the manager
    /// shut down first.
    ///
    /// The clock's `sleep` is what makes a test clock's backoff instant, and it
    /// cannot be woken, so the delay is slept in slices of at most
    /// [`BACKOFF_SLICE`], checking for shutdown between them: a manager dropped
    /// during a 30 s backoff is gone within one slice, not 30 s later.
    pub(super) fn backoff(&self, clock: &dyn Clock, delay: Duration) -> bool {
        let deadline = clock.now() + delay;
        loop {
            if *lock(&self.closed) {
                return false;
            }
            let left = deadline.saturating_sub(clock.now());
            if left.is_zero() {
                return true;
            }
            clock.sleep(left.min(BACKOFF_SLICE));
        }
    }
}

/// The handles of the manager's threads, and their shutdown signal.
#[derive(Debug, Default)]
pub(super) struct Threads {
    shutdown: Arc<Shutdown>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
    reaper: Mutex<Option<JoinHandle<()>>>,
    monitor: Mutex<Option<JoinHandle<()>>>,
    recorder: Mutex<Option<JoinHandle<()>>>,
}

impl Threads {
    /// The signal a thread waits on, to be moved into it.
    pub(super) fn shutdown(&self) -> Arc<Shutdown> {
        Arc::clone(&self.shutdown)
    }

    /// Starts a supervisor thread named `name`. Handles of supervisors that have
    /// finished are joined on the way, so they do not pile up.
    pub(super) fn spawn_supervisor(
        &self,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let handle = std::thread::Builder::new().name(name).spawn(body)?;
        let mut all = lock(&self.supervisors);
        let (done, running): (Vec<_>, Vec<_>) = all.drain(..).partition(JoinHandle::is_finished);
        *all = running;
        all.push(handle);
        drop(all);
        for h in done {
            // A supervisor that panicked has nothing left to clean up.
            let _ = h.join();
        }
        Ok(())
    }

    /// Starts the reaper thread with `body`, unless it runs already.
    pub(super) fn start_reaper(&self, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
        start_once(&self.reaper, "cjm-reaper", body)
    }

    /// Starts the resource monitor thread with `body`, unless it runs already.
    pub(super) fn start_monitor(&self, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
        start_once(&self.monitor, "cjm-monitor", body)
    }

    /// Starts the empirical recorder thread with `body`.
    pub(super) fn start_recorder(&self, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
        start_once(&self.recorder, "cjm-recorder", body)
    }

    /// Tells every thread to stop waiting (the first step of shutting down).
    pub(super) fn close(&self) {
        self.shutdown.close();
    }

    /// Joins every thread but the calling one: the last manager handle can be
    /// dropped on a supervisor or the reaper itself, which then finishes on its
    /// own right after (it sees the shutdown and returns).
    pub(super) fn join(&self) {
        let me = std::thread::current().id();
        let mut handles = std::mem::take(&mut *lock(&self.supervisors));
        handles.extend(lock(&self.reaper).take());
        handles.extend(lock(&self.monitor).take());
        handles.extend(lock(&self.recorder).take());
        for h in handles {
            if h.thread().id() != me {
                // A thread that panicked has reported it already; nothing to add.
                let _ = h.join();
            }
        }
    }
}

/// Starts the thread `name` with `body` into `slot`, unless one runs there.
fn start_once(
    slot: &Mutex<Option<JoinHandle<()>>>,
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    let mut slot = lock(slot);
    if slot.is_none() {
        *slot = Some(std::thread::Builder::new().name(name.into()).spawn(body)?);
    }
    Ok(())
}
