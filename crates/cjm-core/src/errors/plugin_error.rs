//! The typed error the host raises when a plugin call fails.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    ErrorCategory, JobError, PluginErrorKind, ResourceShortfall,
    pyrepr::{repr_exception, repr_str},
};
use crate::timestamp::isoformat_utc;

/// The plugin, and the instance of it, that an error is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginRef {
    /// The plugin's name.
    pub name: String,
    /// The instance, when it is not the plugin's default one.
    pub instance_id: Option<String>,
}

impl PluginRef {
    /// The plugin's default instance.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            instance_id: None,
        }
    }

    /// One named instance of the plugin.
    pub fn instance(name: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            instance_id: Some(instance_id.into()),
        }
    }
}

/// Shows `` `whisper` `` or `` `whisper` (instance `whisper-a1b2c3`) ``; an
/// instance named like its plugin is the default one and is not repeated.
impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.name)?;
        match &self.instance_id {
            Some(instance) if *instance != self.name => write!(f, " (instance `{instance}`)"),
            _ => Ok(()),
        }
    }
}

/// How far cancellation had to go before the job stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelPhase {
    /// The plugin saw the request at a `check_cancel()` and stopped itself.
    Cooperative,
    /// An exception was raised into the running Python thread.
    Interrupted,
    /// The worker's process group was killed after the grace period.
    Killed,
}

impl fmt::Display for CancelPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cooperative => "cooperatively",
            Self::Interrupted => "by interrupting its call",
            Self::Killed => "by killing its worker",
        })
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerExit {
    /// It exited with this status.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl WorkerExit {
    /// Python's `Popen.returncode` for this exit: the status, or the signal
    /// negated.
    pub const fn python_returncode(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => -signal,
        }
    }
}

/// A plugin call that failed, with the plugin it failed on.
///
/// Each variant but [`Raised`](Self::Raised) mirrors one of the reference's
/// exception classes ([`kind`](Self::kind)), and so has its category and retry
/// default. `Raised` carries the record of an exception plugin code raised in its
/// worker. The message says what failed; [`hint`](Self::hint) suggests what to do
/// about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin rejected its input (`PluginInputError`).
    #[error("plugin {plugin} rejected its input: {message}")]
    Input {
        /// The plugin.
        plugin: PluginRef,
        /// What was wrong.
        message: String,
        /// The inputs that failed validation.
        fields_invalid: Vec<String>,
    },
    /// The plugin failed in a way a retry may fix (`PluginTransientError`).
    #[error("plugin {plugin} failed temporarily: {message}")]
    Transient {
        /// The plugin.
        plugin: PluginRef,
        /// What failed.
        message: String,
        /// How long to wait before retrying, in seconds.
        retry_after_seconds: Option<f64>,
    },
    /// The plugin ran out of a resource (`PluginResourceError`).
    #[error("plugin {plugin} ran out of resources: {message}")]
    Resource {
        /// The plugin.
        plugin: PluginRef,
        /// What ran out.
        message: String,
        /// How much more was needed.
        shortfall: Option<ResourceShortfall>,
    },
    /// The plugin failed for good (`PluginFatalError`).
    #[error("plugin {plugin} failed: {message}")]
    Fatal {
        /// The plugin.
        plugin: PluginRef,
        /// What failed.
        message: String,
    },
    /// A job was submitted to a disabled plugin (`PluginDisabledError`).
    #[error("plugin {plugin} is disabled")]
    Disabled {
        /// The plugin.
        plugin: PluginRef,
    },
    /// A job was submitted to a plugin that was never loaded
    /// (`PluginNotLoadedError`).
    #[error("plugin {plugin} is not loaded")]
    NotLoaded {
        /// The plugin.
        plugin: PluginRef,
    },
    /// The job's timeout fired before the plugin finished (`PluginTimeoutError`).
    #[error("plugin {plugin} timed out after {:.1}s", timeout.as_secs_f64())]
    Timeout {
        /// The plugin.
        plugin: PluginRef,
        /// The timeout that fired.
        timeout: Duration,
    },
    /// The job was cancelled (`PluginCancelledError`).
    #[error("plugin {plugin} was cancelled {phase}")]
    Cancelled {
        /// The plugin.
        plugin: PluginRef,
        /// How far cancellation had to go.
        phase: CancelPhase,
    },
    /// The worker died mid-call in a way that suggests it ran out of memory
    /// (`WorkerOOMError`).
    #[error("worker for plugin {plugin} {}, probably out of memory", describe_exit(*exit))]
    WorkerOom {
        /// The plugin.
        plugin: PluginRef,
        /// How the worker ended, when known.
        exit: Option<WorkerExit>,
    },
    /// The plugin's configuration does not fit its schema (`PluginConfigError`).
    #[error("invalid configuration for plugin {plugin}: {message}")]
    Config {
        /// The plugin.
        plugin: PluginRef,
        /// What is wrong with it.
        message: String,
        /// The configuration keys at fault.
        fields_invalid: Vec<String>,
    },
    /// Plugin code raised an exception in its worker.
    #[error("{}", describe_raised(.0))]
    Raised(Box<JobError>),
}

fn describe_exit(exit: Option<WorkerExit>) -> String {
    match exit {
        Some(WorkerExit::Code(code)) => format!("exited with status {code}"),
        Some(WorkerExit::Signal(signal)) => format!("was killed by signal {signal}"),
        None => "died".to_owned(),
    }
}

fn describe_raised(job_error: &JobError) -> String {
    let plugin = job_error.plugin_name.as_ref().map(|name| PluginRef {
        name: name.clone(),
        instance_id: job_error.plugin_instance_id.clone(),
    });
    let plugin = plugin.map_or_else(
        || "a plugin".to_owned(),
        |plugin| format!("plugin {plugin}"),
    );
    let detail = if job_error.message.is_empty() {
        &job_error.original_exc_repr
    } else {
        &job_error.message
    };
    format!("{plugin} raised a {} error: {detail}", job_error.category)
}

impl PluginError {
    /// The reference exception class this error mirrors; `None` for
    /// [`Raised`](Self::Raised), whose class is the plugin's own.
    pub fn kind(&self) -> Option<PluginErrorKind> {
        match self.origin() {
            Origin::Host(kind) => Some(kind),
            Origin::Plugin(_) => None,
        }
    }

    fn origin(&self) -> Origin<'_> {
        Origin::Host(match self {
            Self::Input { .. } => PluginErrorKind::Input,
            Self::Transient { .. } => PluginErrorKind::Transient,
            Self::Resource { .. } => PluginErrorKind::Resource,
            Self::Fatal { .. } => PluginErrorKind::Fatal,
            Self::Disabled { .. } => PluginErrorKind::Disabled,
            Self::NotLoaded { .. } => PluginErrorKind::NotLoaded,
            Self::Timeout { .. } => PluginErrorKind::Timeout,
            Self::Cancelled { .. } => PluginErrorKind::Cancelled,
            Self::WorkerOom { .. } => PluginErrorKind::WorkerOom,
            Self::Config { .. } => PluginErrorKind::Config,
            Self::Raised(job_error) => return Origin::Plugin(job_error),
        })
    }

    /// The plugin the error is about; for [`Raised`](Self::Raised), the one its
    /// record names, if any.
    pub fn plugin(&self) -> Option<PluginRef> {
        match self {
            Self::Input { plugin, .. }
            | Self::Transient { plugin, .. }
            | Self::Resource { plugin, .. }
            | Self::Fatal { plugin, .. }
            | Self::Disabled { plugin }
            | Self::NotLoaded { plugin }
            | Self::Timeout { plugin, .. }
            | Self::Cancelled { plugin, .. }
            | Self::WorkerOom { plugin, .. }
            | Self::Config { plugin, .. } => Some(plugin.clone()),
            Self::Raised(job_error) => job_error.plugin_name.as_ref().map(|name| PluginRef {
                name: name.clone(),
                instance_id: job_error.plugin_instance_id.clone(),
            }),
        }
    }

    /// How the failure is routed.
    pub fn category(&self) -> ErrorCategory {
        match self.origin() {
            Origin::Host(kind) => kind.category(),
            Origin::Plugin(job_error) => job_error.category,
        }
    }

    /// Whether the job may be retried automatically.
    pub fn retriable(&self) -> bool {
        match self.origin() {
            Origin::Host(kind) => kind.default_retriable(),
            Origin::Plugin(job_error) => job_error.retriable,
        }
    }

    /// A next step for whoever reads the error, shown after its message.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Input { fields_invalid, .. } => fields_hint("check these inputs", fields_invalid),
            Self::Transient {
                retry_after_seconds,
                ..
            } => Some(retry_hint(*retry_after_seconds)),
            Self::Resource { shortfall, .. } => Some(resource_hint(shortfall.as_ref())),
            Self::Fatal { .. } | Self::Cancelled { .. } => None,
            Self::Disabled { .. } => Some("enable the plugin, then submit the job again".into()),
            Self::NotLoaded { .. } => Some("load the plugin before submitting jobs to it".into()),
            Self::Timeout { .. } => {
                Some("raise the job's timeout, or check why the plugin is slow".into())
            }
            Self::WorkerOom { .. } => Some(
                "free memory or choose a lighter configuration for the plugin, then retry".into(),
            ),
            Self::Config { fields_invalid, .. } => {
                fields_hint("fix these configuration keys", fields_invalid)
                    .or_else(|| Some("check the configuration against the plugin's schema".into()))
            }
            Self::Raised(job_error) => match job_error.category {
                ErrorCategory::UserInput => job_error
                    .fields_invalid
                    .as_deref()
                    .and_then(|fields| fields_hint("check these inputs", fields)),
                ErrorCategory::Transient if job_error.is_cancellation() => None,
                ErrorCategory::Transient if job_error.retriable => {
                    Some(retry_hint(job_error.retry_after_seconds))
                }
                ErrorCategory::Resource => {
                    Some(resource_hint(job_error.resource_shortfall.as_ref()))
                }
                ErrorCategory::Transient | ErrorCategory::Fatal => None,
            },
        }
    }

    /// The [`JobError`] the reference records for the exception this error
    /// mirrors: the reference's message text and repr (so stored records and UIs
    /// read the same whichever host wrote them), no traceback (the failure
    /// happened in the host, not in plugin code), stamped `occurred_at`. For
    /// [`Raised`](Self::Raised), the record it carries, unchanged.
    pub fn to_job_error(&self, occurred_at: SystemTime) -> JobError {
        let kind = match self.origin() {
            Origin::Host(kind) => kind,
            Origin::Plugin(job_error) => return job_error.clone(),
        };
        let mut job_error = JobError::new(
            kind.category(),
            self.reference_message(),
            kind.default_retriable(),
            "",
        );
        job_error.original_exc_repr = repr_exception(kind.class_name(), &job_error.message);
        match self {
            Self::Input { fields_invalid, .. } | Self::Config { fields_invalid, .. } => {
                job_error.fields_invalid = Some(fields_invalid.clone());
            }
            // The reference's disabled error is an input error whose list is empty.
            Self::Disabled { .. } => job_error.fields_invalid = Some(Vec::new()),
            Self::Transient {
                retry_after_seconds,
                ..
            } => job_error.retry_after_seconds = *retry_after_seconds,
            Self::Resource { shortfall, .. } => job_error.resource_shortfall = *shortfall,
            _ => {}
        }
        if let Some(plugin) = self.plugin() {
            job_error.plugin_name = Some(plugin.name);
            job_error.plugin_instance_id = plugin.instance_id;
        }
        job_error.occurred_at = Some(isoformat_utc(occurred_at));
        job_error
    }

    /// `str(exc)` of the reference exception this error mirrors.
    fn reference_message(&self) -> String {
        match self {
            Self::Input { message, .. }
            | Self::Transient { message, .. }
            | Self::Resource { message, .. }
            | Self::Fatal { message, .. }
            | Self::Config { message, .. } => message.clone(),
            Self::Disabled { plugin } => format!("Plugin {} is disabled", repr_str(&plugin.name)),
            Self::NotLoaded { plugin } => {
                format!("Plugin {} is not loaded", repr_str(&plugin.name))
            }
            Self::Timeout { plugin, timeout } => format!(
                "Plugin {} timed out after {:.1}s",
                repr_str(&plugin.name),
                timeout.as_secs_f64()
            ),
            Self::Cancelled { plugin, .. } => {
                format!("Plugin {} cancelled by operator", repr_str(&plugin.name))
            }
            Self::WorkerOom { plugin, exit } => {
                let returncode = exit.map_or_else(String::new, |exit| {
                    format!(" (returncode={})", exit.python_returncode())
                });
                format!(
                    "Worker for plugin {} died from kill-signal{returncode}; assuming OOM",
                    repr_str(&plugin.name)
                )
            }
            Self::Raised(job_error) => job_error.message.clone(),
        }
    }
}

/// Where a [`PluginError`] came from: the host, mirroring a reference class, or
/// plugin code, carrying its record.
enum Origin<'a> {
    Host(PluginErrorKind),
    Plugin(&'a JobError),
}

impl From<JobError> for PluginError {
    fn from(job_error: JobError) -> Self {
        Self::Raised(Box::new(job_error))
    }
}

fn fields_hint(lead: &str, fields: &[String]) -> Option<String> {
    (!fields.is_empty()).then(|| format!("{lead}: {}", fields.join(", ")))
}

fn retry_hint(retry_after_seconds: Option<f64>) -> String {
    match retry_after_seconds {
        Some(seconds) => format!("retrying after {seconds}s may succeed"),
        None => "retrying may succeed".to_owned(),
    }
}

fn resource_hint(shortfall: Option<&ResourceShortfall>) -> String {
    match shortfall {
        Some(shortfall) => format!(
            "it needed {} MB of {} but {} MB were available; free some, then retry",
            shortfall.needed,
            shortfall.resource.describe(),
            shortfall.available
        ),
        None => "free memory or disk space, then retry".to_owned(),
    }
}
