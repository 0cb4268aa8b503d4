//! The reference's queue vocabulary: [`JobStatus`], [`JobEventType`],
//! [`CancelPhase`], [`Job`], [`JobEvent`], [`QueueStats`], with the reference's
//! string values, and what a submit may ask for ([`Submit`]).

use std::time::{Duration, SystemTime};

use cjm_core::JobError;
use cjm_proto::Value;
use serde_json::Map;

/// Where a job stands (the reference's `JobStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting to run.
    Pending,
    /// Running on its instance's worker.
    Running,
    /// Ran and returned a result.
    Completed,
    /// Ran and failed, or could not run.
    Failed,
    /// Cancelled before or while it ran.
    Cancelled,
}

impl JobStatus {
    /// The reference's value: `pending`, `running`, `completed`, `failed`, `cancelled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status named by the reference's value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job is over (completed, failed or cancelled).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event says (the reference's `JobEventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEventType {
    /// The status changed; payload `{"from", "to"}`.
    StateTransition,
    /// Progress or the status message changed.
    ProgressChanged,
    /// A sequence moved to its next member.
    SequenceAdvanced,
    /// A resource sample of the job's worker.
    ResourceSnapshot,
    /// New log lines for the job.
    LogAppended,
    /// Why the scheduler holds the job back changed.
    BlockReasonChanged,
    /// A cancellation moved to its next phase.
    CancelPhaseChanged,
    /// A retry begins.
    RetryStarted,
}

impl JobEventType {
    /// The reference's value, e.g. `state_transition`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StateTransition => "state_transition",
            Self::ProgressChanged => "progress_changed",
            Self::SequenceAdvanced => "sequence_advanced",
            Self::ResourceSnapshot => "resource_snapshot",
            Self::LogAppended => "log_appended",
            Self::BlockReasonChanged => "block_reason_changed",
            Self::CancelPhaseChanged => "cancel_phase_changed",
            Self::RetryStarted => "retry_started",
        }
    }
}

/// The phase of a cancellation (the reference's `CancelPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelPhase {
    /// Asked the plugin to stop; waiting for it.
    Cooperative,
    /// The plugin did not stop in time; its worker is being killed.
    Force,
    /// The worker is being restarted after the kill.
    Reloading,
    /// The cancellation is complete.
    Completed,
}

impl CancelPhase {
    /// The reference's value, e.g. `cooperative`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cooperative => "cooperative",
            Self::Force => "force",
            Self::Reloading => "reloading",
            Self::Completed => "completed",
        }
    }

    /// The phase named by the reference's value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cooperative" => Self::Cooperative,
            "force" => Self::Force,
            "reloading" => Self::Reloading,
            "completed" => Self::Completed,
            _ => return None,
        })
    }
}

/// A job as the queue knows it (the reference's `Job`).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Its id (a UUID).
    pub id: String,
    /// The instance it runs on.
    pub plugin_instance_id: String,
    /// `execute`'s positional arguments.
    pub args: Vec<Value>,
    /// `execute`'s keyword arguments.
    pub kwargs: Vec<(String, Value)>,
    /// Where it stands.
    pub status: JobStatus,
    /// Higher runs first; a waiting job gains a level per
    /// [`QueueOptions::aging`](crate::QueueOptions::aging).
    pub priority: i64,
    /// When it was submitted.
    pub submitted_at: SystemTime,
    /// When it last started to run.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub completed_at: Option<SystemTime>,
    /// 0.0 to 1.0, or -1.0 when unknown.
    pub progress: f64,
    /// What it is doing, in words.
    pub status_message: String,
    /// What `execute` returned, once completed.
    pub result: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<JobError>,
    /// Its sequence, when it is a member of one.
    pub sequence_id: Option<String>,
    /// Its place in the sequence.
    pub sequence_index: Option<i64>,
    /// When a cancel was asked for.
    pub cancel_requested_at: Option<SystemTime>,
    /// How far a cancellation has come.
    pub cancel_phase: Option<CancelPhase>,
    /// Why the scheduler holds it back, while it does.
    pub block_reason: Option<String>,
    /// How many times it was tried again.
    pub retry_count: i64,
    /// Whether it may run again after its host died while it ran.
    pub idempotent: bool,
    /// The key that makes a second submit return this job.
    pub idempotency_key: Option<String>,
    /// The longest it may run.
    pub timeout: Option<Duration>,
    /// Its worker's latest periodic snapshot, while it runs (kept in the
    /// host's memory, not the store: `None` once it ended, and when read
    /// from another process).
    pub last_resource_snapshot: Option<ResourceSnapshot>,
}

/// One event (the reference's `JobEvent`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// What it says.
    pub kind: JobEventType,
    /// The job.
    pub job_id: String,
    /// The job's instance.
    pub plugin_instance_id: String,
    /// The job's sequence.
    pub sequence_id: Option<String>,
    /// The job's place in its sequence.
    pub sequence_index: Option<i64>,
    /// When it happened.
    pub timestamp: SystemTime,
    /// The event's details (for a state transition, `{"from": …, "to": …}`).
    pub payload: Map<String, serde_json::Value>,
}

/// Counts of jobs by status (the reference's `QueueStats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Waiting to run.
    pub total_pending: u64,
    /// Running now.
    pub total_running: u64,
    /// Completed, in the kept history.
    pub total_completed: u64,
    /// Failed, in the kept history.
    pub total_failed: u64,
    /// Cancelled, in the kept history.
    pub total_cancelled: u64,
}

/// A job to submit: the reference's `submit(instance, *args, priority, **kwargs)`
/// and what cjm adds.
#[derive(Debug, Clone, Default)]
pub struct Submit {
    /// The instance it runs on.
    pub instance: String,
    /// `execute`'s positional arguments.
    pub args: Vec<Value>,
    /// `execute`'s keyword arguments.
    pub kwargs: Vec<(String, Value)>,
    /// Higher runs first.
    pub priority: i64,
    /// A second submit with the same key returns the first job instead.
    pub idempotency_key: Option<String>,
    /// Run it again if its host dies while it runs (else it fails, saying so).
    pub idempotent: bool,
    /// Fail it if it runs longer than this.
    pub timeout: Option<Duration>,
}

impl Submit {
    /// A job on `instance` with these arguments, priority 0.
    pub fn new(
        instance: impl Into<String>,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Self {
        Self {
            instance: instance.into(),
            args,
            kwargs,
            ..Self::default()
        }
    }

    /// At this priority.
    #[must_use]
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    /// With this idempotency key.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Safe to run again after a host death.
    #[must_use]
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Failing after `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Milliseconds since the Unix epoch, as the store keeps times.
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A time the store kept.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// One step of a sequence (the reference's `SequenceStep`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SequenceStep {
    /// The instance the step runs on.
    pub plugin_instance_id: String,
    /// `execute`'s positional arguments.
    pub args: Vec<Value>,
    /// `execute`'s keyword arguments.
    pub kwargs: Vec<(String, Value)>,
    /// The step's priority; 0: the sequence's.
    pub priority: i64,
}

impl SequenceStep {
    /// A step on `instance` with these arguments.
    pub fn new(
        instance: impl Into<String>,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Self {
        Self {
            plugin_instance_id: instance.into(),
            args,
            kwargs,
            priority: 0,
        }
    }
}

/// How one step of a sequence came out (the reference's `StepResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// The step's job.
    pub job_id: String,
    /// Whether its job completed.
    pub success: bool,
    /// What it returned, when it completed.
    pub result: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<JobError>,
}

/// A sequence of jobs run one after another (the reference's `JobSequence`).
///
/// Its status is `running` until every step was tried (`completed`; a
/// best-effort sequence completes even with failed steps, its results say
/// which), a step failed with `fail_fast` set (`failed`), or it or a step was
/// cancelled (`cancelled`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSequence {
    /// Its id (a UUID).
    pub id: String,
    /// Its steps, as submitted.
    pub steps: Vec<SequenceStep>,
    /// Whether the first failed step ends it.
    pub fail_fast: bool,
    /// The priority of its steps that have none of their own.
    pub priority: i64,
    /// The step running or next to run.
    pub current_index: i64,
    /// That step's job, while the sequence runs.
    pub current_job_id: Option<String>,
    /// How each step that ended came out, in order.
    pub results: Vec<StepResult>,
    /// Where it stands.
    pub status: JobStatus,
    /// When it was submitted.
    pub submitted_at: SystemTime,
    /// When it ended.
    pub completed_at: Option<SystemTime>,
}

impl ResourceSnapshot {
    /// As the `snapshot` of a `RESOURCE_SNAPSHOT` event: the reference's
    /// field names, the time in seconds since the epoch.
    pub fn to_json(&self) -> serde_json::Value {
        let at = self
            .timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        serde_json::json!({
            "timestamp": at.as_secs_f64(),
            "worker_pid": self.worker_pid,
            "cpu_percent": self.cpu_percent,
            "memory_rss_mb": self.memory_rss_mb,
            "gpu_index": self.gpu_index,
            "gpu_memory_mb": self.gpu_memory_mb,
            "gpu_type": self.gpu_type,
            "gpu_total_mb": self.gpu_total_mb,
            "gpu_load_percent": self.gpu_load_percent,
        })
    }
}

/// A job's worker at one moment (the reference's `ResourceSnapshot`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSnapshot {
    /// When it was taken.
    pub timestamp: SystemTime,
    /// The worker's pid.
    pub worker_pid: u32,
    /// The worker's CPU use since the previous snapshot of it (0 at the first).
    pub cpu_percent: f64,
    /// What the worker and its children hold resident, MB.
    pub memory_rss_mb: f64,
    /// The GPU the worker is pinned to.
    pub gpu_index: Option<u32>,
    /// What the worker holds on it, MB.
    pub gpu_memory_mb: Option<f64>,
    /// The GPU's kind, as its driver names it.
    pub gpu_type: Option<String>,
    /// The GPU's memory, MB.
    pub gpu_total_mb: Option<f64>,
    /// The GPU's utilisation, where the driver reports it.
    pub gpu_load_percent: Option<f64>,
}
