//! The structured failure record kept on a finished job.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{ErrorCategory, ResourceShortfall};
use crate::timestamp::isoformat_utc;

/// A failure summary recorded on a job: enough for a UI to show what went wrong
/// and offer a retry without running the plugin again.
///
/// Its JSON form is field for field, in order, what the reference writes for its
/// `JobError` dataclass (`dataclasses.asdict` with `occurred_at` as
/// `datetime.isoformat()`), so a worker's `_job_error` chunk parses into it and a
/// stored record reads back unchanged. Absent optional fields serialise as `null`,
/// as `asdict` writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    /// How the failure is routed.
    pub category: ErrorCategory,
    /// The exception's text (`str(exc)`); empty under [`TracebackPolicy::None`].
    pub message: String,
    /// Whether it is safe to retry the job automatically.
    pub retriable: bool,
    /// The exception's Python `repr()`, e.g. `KeyError('model')`.
    pub original_exc_repr: String,
    /// The formatted Python traceback, under [`TracebackPolicy::Full`].
    pub traceback: Option<String>,
    /// A backoff hint from a transient error, in seconds.
    pub retry_after_seconds: Option<f64>,
    /// The inputs that failed validation, from an input error.
    pub fields_invalid: Option<Vec<String>>,
    /// What ran short, from a resource error.
    pub resource_shortfall: Option<ResourceShortfall>,
    /// The plugin that failed.
    pub plugin_name: Option<String>,
    /// The plugin instance that failed.
    pub plugin_instance_id: Option<String>,
    /// When the failure was recorded, as [`isoformat_utc`] writes it.
    pub occurred_at: Option<String>,
}

impl JobError {
    /// A record with the four required fields and every optional one absent.
    pub fn new(
        category: ErrorCategory,
        message: impl Into<String>,
        retriable: bool,
        original_exc_repr: impl Into<String>,
    ) -> Self {
        Self {
            category,
            message: message.into(),
            retriable,
            original_exc_repr: original_exc_repr.into(),
            traceback: None,
            retry_after_seconds: None,
            fields_invalid: None,
            resource_shortfall: None,
            plugin_name: None,
            plugin_instance_id: None,
            occurred_at: None,
        }
    }

    /// Sets [`occurred_at`](Self::occurred_at) from a wall-clock time.
    #[must_use]
    pub fn with_occurred_at(mut self, time: SystemTime) -> Self {
        self.occurred_at = Some(isoformat_utc(time));
        self
    }

    /// Whether the record came from a cancellation, which the reference tells
    /// apart by the exception's repr because its category is `transient`.
    pub fn is_cancellation(&self) -> bool {
        self.original_exc_repr.starts_with("PluginCancelledError")
    }
}

/// How much of an exception is kept on a [`JobError`]; serialises as the
/// reference's `full`, `repr_only`, `none`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TracebackPolicy {
    /// Message, repr and the full traceback.
    #[default]
    Full,
    /// Message and repr, no traceback.
    ReprOnly,
    /// No traceback and an empty message. As in the reference, the repr is still
    /// kept, and it usually contains the message.
    None,
}
