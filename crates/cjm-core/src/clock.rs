//! The one injectable clock: every crate that stamps, waits or times out asks a
//! [`Clock`] instead of reading the system's clocks, so a test can drive supervision
//! backoff, idle reaping, store timestamps and worker timeouts without waiting.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Where a component gets the time and waits.
///
/// `now` is monotonic (for deadlines, backoff and idle times); `wall` is the calendar
/// time written into records (`updated_at`, `occurred_at`, log stamps).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time since some fixed point of this clock.
    fn now(&self) -> Duration;
    /// Wall-clock time, for timestamps that leave the process.
    fn wall(&self) -> SystemTime;
    /// Waits `d`. A test clock returns at once and moves its time on by `d`.
    fn sleep(&self, d: Duration);
}

/// A clock shared between the components that read it.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clocks: [`Instant`] for `now`, [`SystemTime`] for `wall`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(Self::default())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock that moves only when told to, or when someone sleeps on it: a sleep
/// returns at once and advances both `now` and `wall` by its length.
#[derive(Debug)]
pub struct ManualClock {
    elapsed: Mutex<Duration>,
    wall_start: SystemTime,
}

impl ManualClock {
    /// A manual clock whose wall time starts at `wall_start`.
    pub fn starting_at(wall_start: SystemTime) -> Self {
        Self {
            elapsed: Mutex::new(Duration::ZERO),
            wall_start,
        }
    }

    /// Moves the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner) += d;
    }
}

impl Default for ManualClock {
    /// Starts at 2026-01-01T00:00:00Z, so stamps in tests are reproducible.
    fn default() -> Self {
        // 20,454 days after the epoch.
        Self::starting_at(SystemTime::UNIX_EPOCH + Duration::from_hours(24 * 20_454))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wall(&self) -> SystemTime {
        self.wall_start + self.now()
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_slept_on_or_advanced() {
        let clock = ManualClock::default();
        let wall = clock.wall();
        assert_eq!(clock.now(), Duration::ZERO);
        clock.sleep(Duration::from_secs(3));
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.now(), Duration::from_millis(3500));
        assert_eq!(clock.wall(), wall + Duration::from_millis(3500));
        assert_eq!(
            crate::isoformat_utc(wall),
            "2026-01-01T00:00:00+00:00",
            "the default start is fixed"
        );
    }

    #[test]
    fn the_system_clock_is_monotonic_and_near_the_system_time() {
        let clock = SystemClock::default();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        let drift = SystemTime::now()
            .duration_since(clock.wall())
            .unwrap_or_default();
        assert!(
            drift < Duration::from_mins(1),
            "wall is the system time: {drift:?}"
        );
    }
}
