//! [`RetryPolicy`]: whether a failed job runs again, by its error's category
//! and `retriable` flag (the reference's classification: a plugin's own error
//! class says both, a bare exception is classified by its type), and after
//! how long (exponential backoff with a cap).

use std::time::Duration;

use cjm_core::{ErrorCategory, JobError};

/// When a failed job is tried again.
///
/// Only errors marked `retriable` are; cancellations never are, nor fatal
/// errors. Each category has its own number of retries: a transient error
/// (a timeout, a lost connection) is worth a few; out-of-memory is retried by
/// the manager first (it evicts and restarts the worker), so the queue adds
/// fewer; bad input gives the same answer again, so none by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after a transient error (`PluginTransientError`, a timeout).
    pub transient: u32,
    /// Retries after a resource error (`PluginResourceError`, out of memory).
    pub resource: u32,
    /// Retries after an input error (`PluginInputError`).
    pub user_input: u32,
    /// The wait before the first retry; each further one doubles it.
    pub backoff: Duration,
    /// The longest wait between tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three retries after a transient error, one after a resource error,
    /// none after bad input; 1 s, then 2 s, 4 s, … up to 60 s.
    fn default() -> Self {
        Self {
            transient: 3,
            resource: 1,
            user_input: 0,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_mins(1),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub const fn never() -> Self {
        Self {
            transient: 0,
            resource: 0,
            user_input: 0,
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// How many retries an error of `category` gets.
    pub const fn retries(&self, category: ErrorCategory) -> u32 {
        match category {
            ErrorCategory::Transient => self.transient,
            ErrorCategory::Resource => self.resource,
            ErrorCategory::UserInput => self.user_input,
            ErrorCategory::Fatal => 0,
        }
    }

    /// After a job's try number `tried` (0: the first run) failed with
    /// `error`, how long to wait before the next try; `None`: it is not
    /// tried again.
    pub fn next(&self, error: &JobError, tried: i64) -> Option<Duration> {
        let tried = u32::try_from(tried).unwrap_or(u32::MAX);
        if !error.retriable || tried >= self.retries(error.category) {
            return None;
        }
        let factor = 1u32.checked_shl(tried.min(31)).unwrap_or(u32::MAX);
        Some(
            self.backoff
                .checked_mul(factor)
                .unwrap_or(self.max_backoff)
                .min(self.max_backoff),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(category: ErrorCategory, retriable: bool) -> JobError {
        JobError::new(category, "it failed", retriable, "E()")
    }

    #[test]
    fn retriable_errors_retry_per_category_with_doubling_capped_backoff() {
        let p = RetryPolicy {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3),
            ..RetryPolicy::default()
        };
        let transient = error(ErrorCategory::Transient, true);
        let waits: Vec<_> = (0..4).map(|n| p.next(&transient, n)).collect();
        assert_eq!(
            waits,
            [
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(3)),
                None
            ]
        );
        assert_eq!(
            p.next(&error(ErrorCategory::Resource, true), 0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(p.next(&error(ErrorCategory::Resource, true), 1), None);
        assert_eq!(p.next(&error(ErrorCategory::UserInput, true), 0), None);
        assert_eq!(p.next(&error(ErrorCategory::Fatal, true), 0), None);
        assert_eq!(p.next(&error(ErrorCategory::Transient, false), 0), None);
        assert_eq!(RetryPolicy::never().next(&transient, 0), None);
    }
}
