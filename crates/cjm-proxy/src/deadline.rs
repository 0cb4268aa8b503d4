//! Deadlines on a worker's clock (`WorkerSpec::clock`) for the waits the proxy
//! sets itself while starting, stopping and cancelling a worker: the start
//! timeout, the cleanup timeout and stop grace of a stop and its escalation, and
//! the cancel grace of each phase. The proxy's safety bounds (how long to wait
//! for a killed worker's status, or for its output to drain past a descendant
//! that holds its pipes) are [`Deadline::real`]: no test clock may stretch them.
//!
//! The waits themselves still block in real time, on a channel, a condvar or a
//! short sleep: nothing can block on an injected clock, and `ManualClock::sleep`
//! returns at once, so a loop on `clock.sleep` would spin. Each real wait lasts at
//! most [`RECHECK`], then the clock is read again: with the system clock that is
//! the same deadline as before; with a `ManualClock` a deadline passes only when
//! the test moves the clock past it, and the wait notices within [`RECHECK`].
//!
//! The call path does not come here: see `completion.rs`.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use cjm_core::{SharedClock, SystemClock};

/// The longest one real wait lasts before the clock is read again.
const RECHECK: Duration = Duration::from_millis(50);

/// A moment on a clock, and how far ahead it was set.
pub(crate) struct Deadline {
    clock: SharedClock,
    at: Duration,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now on `clock`.
    pub(crate) fn after(clock: &SharedClock, limit: Duration) -> Self {
        Self {
            clock: SharedClock::clone(clock),
            at: clock.now().saturating_add(limit),
            limit,
        }
    }

    /// `limit` from now on the system's clock.
    pub(crate) fn real(limit: Duration) -> Self {
        Self::after(&SystemClock::shared(), limit)
    }

    /// How far ahead it was set (for messages).
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// How long the next real wait may last: what is left, at most [`RECHECK`];
    /// `None` once the deadline has passed.
    pub(crate) fn next_wait(&self) -> Option<Duration> {
        let left = self.at.checked_sub(self.clock.now())?;
        (!left.is_zero()).then(|| left.min(RECHECK))
    }

    /// Receives from `rx` unless the deadline passes first.
    pub(crate) fn recv<T>(&self, rx: &Receiver<T>) -> Result<T, RecvTimeoutError> {
        loop {
            let Some(wait) = self.next_wait() else {
                return Err(RecvTimeoutError::Timeout);
            };
            match rx.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cjm_core::{Clock, ManualClock};

    use super::*;

    #[test]
    fn a_deadline_on_a_manual_clock_passes_only_when_the_clock_is_moved() {
        let clock = Arc::new(ManualClock::default());
        let shared: SharedClock = clock.clone();
        let deadline = Deadline::after(&shared, Duration::from_secs(30));
        assert_eq!(deadline.next_wait(), Some(RECHECK));
        clock.advance(Duration::from_secs(29));
        assert_eq!(deadline.next_wait(), Some(RECHECK));
        clock.advance(Duration::from_secs(1));
        assert_eq!(deadline.next_wait(), None);
        assert_eq!(deadline.limit(), Duration::from_secs(30));
    }

    #[test]
    fn a_receive_gives_up_at_the_deadline_and_takes_what_comes_before() {
        let clock = Arc::new(ManualClock::default());
        let shared: SharedClock = clock.clone();
        let (tx, rx) = std::sync::mpsc::channel::<u8>();
        let deadline = Deadline::after(&shared, Duration::from_secs(30));
        // Moved past the deadline from another thread while the receive waits.
        let mover = std::thread::spawn(move || clock.sleep(Duration::from_secs(31)));
        assert_eq!(deadline.recv(&rx), Err(RecvTimeoutError::Timeout));
        mover.join().unwrap();
        tx.send(7).unwrap();
        assert_eq!(Deadline::real(Duration::from_secs(30)).recv(&rx), Ok(7));
        drop(tx);
        assert_eq!(
            Deadline::real(Duration::from_secs(30)).recv(&rx),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
