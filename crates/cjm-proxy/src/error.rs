//! What goes wrong with a worker: [`WorkerError`] (it did not start, did not
//! greet, could not load the plugin, the plugin failed, the worker died, a frame
//! was malformed), each with a hint, and [`Death`], how a worker process ended.

use std::fmt;
use std::path::PathBuf;

use cjm_core::{JobError, PluginError, WorkerExit};
use cjm_proto::ProtoError;

/// How a worker process ended, as the host saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Death {
    /// Exit status or signal, when the process was reaped.
    pub exit: Option<WorkerExit>,
    /// Killed by the kernel's out-of-memory killer, by the evidence in
    /// [`oom_evidence`](Self::oom_evidence).
    pub probable_oom: bool,
    /// What shows the OOM killer did it: the kernel log's line for the pid, or
    /// the memory cgroup's OOM-kill count rising while the worker ran. A SIGKILL
    /// without such evidence is reported as sent from outside cjm.
    pub oom_evidence: Option<String>,
    /// The host killed it (stop, cancel, restart).
    pub killed_by_host: bool,
    /// The last lines the worker wrote to stderr.
    pub stderr_tail: Vec<String>,
    /// The worker's log file, which holds everything it printed.
    pub log_file: Option<PathBuf>,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exit {
            Some(WorkerExit::Code(c)) => write!(f, "exited with status {c}")?,
            Some(WorkerExit::Signal(s)) => write!(f, "was killed by {} ({s})", signal_name(s))?,
            None => f.write_str("died")?,
        }
        match (&self.oom_evidence, self.exit) {
            (Some(evidence), _) => {
                write!(f, ", by the kernel's out-of-memory killer ({evidence})")?;
            }
            (None, Some(WorkerExit::Signal(libc::SIGKILL))) if !self.killed_by_host => f.write_str(
                ", sent from outside cjm (no sign of the out-of-memory killer in the memory cgroup's counters or the kernel log)",
            )?,
            _ => {}
        }
        if self.killed_by_host {
            f.write_str(" (stopped by the host)")?;
        }
        if !self.stderr_tail.is_empty() {
            write!(f, "; last stderr lines:")?;
            for l in &self.stderr_tail {
                write!(f, "\n  | {l}")?;
            }
        }
        Ok(())
    }
}

/// What can go wrong with a worker or a call to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The interpreter could not be started.
    #[error("cannot start a worker for plugin `{plugin}`: running {} failed", python.display())]
    Spawn {
        /// The plugin.
        plugin: String,
        /// The interpreter we tried to run.
        python: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The worker started but did not complete the handshake.
    #[error(
        "worker for plugin `{plugin}` did not start: {reason}{}{}",
        exit.map_or_else(String::new, |e| format!(" ({})", Death { exit: Some(e), ..Death::default() })),
        tail(stderr_tail)
    )]
    Handshake {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        reason: String,
        /// How the worker ended, when it exited by itself before greeting.
        exit: Option<WorkerExit>,
        /// The last lines it wrote to stderr.
        stderr_tail: Vec<String>,
    },
    /// The worker started but importing or constructing the plugin raised.
    #[error("plugin `{plugin}` could not be loaded: {}", error.message)]
    Load {
        /// The plugin.
        plugin: String,
        /// The exception, classified.
        error: Box<JobError>,
    },
    /// The plugin failed the call (including cancellation and timeouts).
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The worker process died while the call was in flight (or before it).
    #[error("worker for plugin `{plugin}` {death}")]
    Died {
        /// The plugin.
        plugin: String,
        /// How it died.
        death: Death,
    },
    /// The worker sent a frame the host could not decode, or a value the host could
    /// not encode.
    #[error("protocol error with the worker for plugin `{plugin}`")]
    Protocol {
        /// The plugin.
        plugin: String,
        /// The codec's error.
        #[source]
        source: ProtoError,
    },
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = String::from("; last stderr lines:");
    for l in lines {
        s.push_str("\n  | ");
        s.push_str(l);
    }
    s
}

impl WorkerError {
    /// A suggestion for what to do next, printed after the message.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Spawn { python, .. } => Some(format!(
                "check that {} exists and is executable (is the plugin's environment installed?)",
                python.display()
            )),
            Self::Handshake { .. } => Some(
                "check that the environment has the cjm-worker package installed and matches this host's version (`cjm-ctl doctor`)".into(),
            ),
            Self::Load { .. } => Some(
                "check the plugin's module and class names in its manifest and that its dependencies are installed in its environment".into(),
            ),
            Self::Plugin(e) => e.hint(),
            Self::Died { death, .. } if death.probable_oom => Some(
                "give the machine more memory or run fewer plugins at once; the job can be retried".into(),
            ),
            Self::Died { death, .. } => Some(match &death.log_file {
                Some(log) => format!(
                    "see the worker's log, {}, for what it printed before dying; calls can be retried after a restart",
                    log.display()
                ),
                None => "calls can be retried after a restart; give the worker a log file (WorkerSpec::log_file) to keep what it printed".into(),
            }),
            Self::Protocol { .. } => Some("the worker's cjm-worker package may not match this host; reinstall the plugin".into()),
        }
    }

    /// The error as the reference's `JobError` record.
    pub fn to_job_error(&self, at: std::time::SystemTime) -> JobError {
        match self {
            Self::Plugin(e) => e.to_job_error(at),
            Self::Load { error, .. } => (**error).clone(),
            Self::Died { plugin, death } => {
                let as_plugin_error = if death.probable_oom {
                    PluginError::WorkerOom {
                        plugin: cjm_core::PluginRef::new(plugin.clone()),
                        exit: death.exit,
                    }
                } else {
                    PluginError::Transient {
                        plugin: cjm_core::PluginRef::new(plugin.clone()),
                        message: format!("worker {death}"),
                        retry_after_seconds: None,
                    }
                };
                as_plugin_error.to_job_error(at)
            }
            other => PluginError::Fatal {
                plugin: cjm_core::PluginRef::new(other.plugin()),
                message: other.to_string(),
            }
            .to_job_error(at),
        }
    }

    /// The plugin the error is about.
    pub fn plugin(&self) -> String {
        match self {
            Self::Spawn { plugin, .. }
            | Self::Handshake { plugin, .. }
            | Self::Load { plugin, .. }
            | Self::Died { plugin, .. }
            | Self::Protocol { plugin, .. } => plugin.clone(),
            Self::Plugin(e) => e.plugin().map(|p| p.name).unwrap_or_default(),
        }
    }
}
