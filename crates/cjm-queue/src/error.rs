//! What can go wrong with the queue, each error saying what happened, to which
//! job or file, and what to do next.

use std::path::PathBuf;

use cjm_manager::ManagerError;

/// A queue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue's database could not be opened or prepared.
    #[error("cannot open the job queue at {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("the job queue at {} could not {action}: {source}", path.display())]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What it was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// Another host works this queue.
    #[error(
        "the job queue at {} is worked by another host ({holder}); one host works a queue file at a time",
        path.display()
    )]
    Busy {
        /// The database file.
        path: PathBuf,
        /// Who holds it, as its lock file says.
        holder: String,
    },
    /// A file beside the database could not be used.
    #[error("the job queue cannot {action} {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What it was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stored job could not be read back.
    #[error("job {job} in the queue at {} is damaged: {reason}", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// The job.
        job: String,
        /// What is wrong.
        reason: String,
    },
    /// A job's arguments or result cannot be stored.
    #[error("cannot store {what} of a job on instance {instance}: {reason}")]
    Unstorable {
        /// The instance.
        instance: String,
        /// "the arguments" or "the result".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No job has this id.
    #[error("no job {0:?} in the queue")]
    NoJob(String),
    /// The job did not end within the wait.
    #[error("job {job} was still {status} after waiting {:.1} s", waited.as_secs_f64())]
    WaitTimedOut {
        /// The job.
        job: String,
        /// Where it stood.
        status: crate::JobStatus,
        /// How long the wait was.
        waited: std::time::Duration,
    },
    /// The manager refused the job at submit (an instance not loaded, or disabled).
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The queue was stopped.
    #[error("the job queue was stopped")]
    Stopped,
    /// The host that works the queue answered with an error.
    #[error("the queue's host said: {0}")]
    Host(String),
    /// No host works the queue (nothing listens on its socket).
    #[error("no host works this queue (nothing listens on {})", .0.display())]
    NoHost(std::path::PathBuf),
    /// A uniform sequence's lists of arguments differ in length.
    #[error(
        "a uniform sequence needs as many sets of keyword arguments as of arguments \
         ({args} vs {kwargs})"
    )]
    Mismatch {
        /// How many sets of positional arguments.
        args: usize,
        /// How many sets of keyword arguments.
        kwargs: usize,
    },
}

impl QueueError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Busy { .. } => Some(
                "stop the other host (`cjm-ctl jobs work` or the application using this queue), or give this one its own queue file".into(),
            ),
            Self::Open { .. } | Self::Sql { .. } | Self::Io { .. } => Some(
                "check that the data directory is writable and has space; `cjm-ctl doctor` checks it".into(),
            ),
            Self::Damaged { .. } => Some(
                "the job cannot be run; cancel it (`cjm-ctl jobs cancel ID`) and submit it again".into(),
            ),
            Self::Unstorable { .. } => Some(
                "pass arguments the worker boundary carries (numbers, strings, bytes, lists, maps, arrays)".into(),
            ),
            Self::NoJob(_) => Some("`cjm-ctl jobs list` lists the queue's jobs".into()),
            Self::WaitTimedOut { .. } => Some(
                "wait longer, or `cjm-ctl jobs show ID` to see why it waits".into(),
            ),
            Self::Manager(e) => e.hint(),
            Self::Stopped => Some("start the queue again (`JobQueue::start`)".into()),
            Self::Host(_) => Some("see the host's log (`cjm-ctl jobs work` prints it)".into()),
            Self::NoHost(_) => Some(
                "start one with `cjm-ctl jobs work`; until then the job waits in the queue".into(),
            ),
            Self::Mismatch { .. } => Some(
                "pass one set of keyword arguments per step, or none at all".into(),
            ),
        }
    }
}
