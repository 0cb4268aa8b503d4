//! Instance states, the events that report them, and the crash policy.

use std::fmt;
use std::time::Duration;

use cjm_core::WorkerExit;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Loaded, no worker running (lazy start, idle timeout, or after `stop`).
    Stopped,
    /// Its worker is being spawned and initialized.
    Starting,
    /// Its worker is up and no call is running.
    Ready,
    /// At least one call is running.
    Busy,
    /// Its worker is being stopped.
    Stopping,
    /// Its worker died; a restart is scheduled.
    Crashed,
    /// Rejects work until enabled; its worker stays as it was.
    Disabled,
    /// Crashed too often: no more restarts until an operator resets it.
    CrashLooping,
}

impl InstanceState {
    /// The lowercase name used in events and on the API (`crash-looping`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Busy => "busy",
            Self::Stopping => "stopping",
            Self::Crashed => "crashed",
            Self::Disabled => "disabled",
            Self::CrashLooping => "crash-looping",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's death, as supervision records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashRecord {
    /// The plugin.
    pub plugin: String,
    /// The instance.
    pub instance_id: String,
    /// The worker's pid.
    pub pid: u32,
    /// Exit status or signal, when known.
    pub exit: Option<WorkerExit>,
    /// The likely cause in words: `killed by SIGSEGV`, `probably out of memory`, …
    pub cause: String,
    /// The worker's last stderr lines.
    pub stderr_tail: Vec<String>,
    /// When, on the manager's clock.
    pub at: Duration,
}

impl fmt::Display for CrashRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker {} of plugin {} (instance {}) {}",
            self.pid, self.plugin, self.instance_id, self.cause
        )
    }
}

/// What the manager reports as it goes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ManagerEvent {
    /// An instance changed state.
    State {
        /// The instance.
        instance_id: String,
        /// The plugin.
        plugin: String,
        /// The state it left.
        from: InstanceState,
        /// The state it is in.
        to: InstanceState,
    },
    /// A worker died on its own.
    Crashed(CrashRecord),
    /// A crashed worker will be restarted after `delay`.
    RestartScheduled {
        /// The instance.
        instance_id: String,
        /// The backoff before the restart.
        delay: Duration,
        /// Crashes within the policy's window, this one included.
        recent_crashes: usize,
    },
    /// Too many crashes: the instance is quarantined.
    CrashLooping {
        /// The instance.
        instance_id: String,
        /// Why, in words.
        reason: String,
    },
    /// An idle instance's worker was stopped to make room for a call.
    Evicted {
        /// The instance evicted.
        instance_id: String,
        /// Its plugin.
        plugin: String,
        /// The instance the room was made for.
        for_instance: String,
    },
    /// A call waits to be admitted; `reason` says what for, in words a person
    /// can act on. Sent each time the call looks again.
    Waiting {
        /// The instance the call is for.
        instance_id: String,
        /// Why it waits.
        reason: String,
    },
    /// A call that waited was admitted (it runs now).
    Admitted {
        /// The instance the call is for.
        instance_id: String,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// A call ran out of memory; an idle worker is evicted, its own restarted,
    /// and it is tried again.
    OutOfMemory {
        /// The instance.
        instance_id: String,
        /// The try that failed (1 for the first).
        attempt: usize,
        /// How it failed.
        error: String,
    },
    /// A plugin's live config schema no longer matches its manifest.
    Drift {
        /// The instance.
        instance_id: String,
        /// The warning, with both hashes and the fix.
        message: String,
    },
}

impl ManagerEvent {
    /// The instance it is about.
    pub fn instance_id(&self) -> &str {
        match self {
            Self::State { instance_id, .. }
            | Self::RestartScheduled { instance_id, .. }
            | Self::CrashLooping { instance_id, .. }
            | Self::Evicted { instance_id, .. }
            | Self::Waiting { instance_id, .. }
            | Self::Admitted { instance_id, .. }
            | Self::OutOfMemory { instance_id, .. }
            | Self::Drift { instance_id, .. } => instance_id,
            Self::Crashed(record) => &record.instance_id,
        }
    }
}

/// How crashed workers are restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The wait before the first restart; doubled after each crash in the window.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// More than this many crashes within `window` marks the instance crash-looping.
    pub max_crashes: usize,
    /// The window crashes are counted in.
    pub window: Duration,
}

impl Default for RestartPolicy {
    /// 0.5 s, doubling to 30 s; more than 5 crashes in 60 s is a crash loop.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_crashes: 5,
            window: Duration::from_mins(1),
        }
    }
}

/// One instance's recent crashes, and what to do about the next one.
#[derive(Debug, Default, Clone)]
pub(crate) struct CrashHistory {
    times: Vec<Duration>,
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Restart after this delay.
    Restart(Duration),
    /// Stop restarting.
    Quarantine,
}

impl CrashHistory {
    /// Records a crash at `now` and decides.
    pub(crate) fn crashed(&mut self, now: Duration, policy: &RestartPolicy) -> (Verdict, usize) {
        self.times
            .retain(|t| now.saturating_sub(*t) <= policy.window);
        self.times.push(now);
        let recent = self.times.len();
        if recent > policy.max_crashes {
            return (Verdict::Quarantine, recent);
        }
        let doublings = u32::try_from(recent - 1).unwrap_or(u32::MAX).min(20);
        let delay = policy
            .initial_backoff
            .saturating_mul(1 << doublings)
            .min(policy.max_backoff);
        (Verdict::Restart(delay), recent)
    }

    /// Forgets every crash (an operator's reset).
    pub(crate) fn clear(&mut self) {
        self.times.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_a_crash_loop_is_declared() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            max_crashes: 3,
            window: Duration::from_secs(10),
        };
        let mut h = CrashHistory::default();
        let s = Duration::from_secs;
        assert_eq!(
            h.crashed(s(0), &policy),
            (Verdict::Restart(Duration::from_millis(100)), 1)
        );
        assert_eq!(
            h.crashed(s(1), &policy),
            (Verdict::Restart(Duration::from_millis(200)), 2)
        );
        assert_eq!(
            h.crashed(s(2), &policy),
            (Verdict::Restart(Duration::from_millis(350)), 3)
        );
        assert_eq!(h.crashed(s(3), &policy), (Verdict::Quarantine, 4));
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let policy = RestartPolicy {
            max_crashes: 1,
            window: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let mut h = CrashHistory::default();
        assert!(matches!(
            h.crashed(Duration::from_secs(0), &policy).0,
            Verdict::Restart(_)
        ));
        assert!(matches!(
            h.crashed(Duration::from_secs(11), &policy),
            (Verdict::Restart(_), 1)
        ));
        assert_eq!(
            h.crashed(Duration::from_secs(12), &policy).0,
            Verdict::Quarantine
        );
    }
}
