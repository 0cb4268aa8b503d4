//! The host side of one cjm worker.
//!
//! [`Worker`] starts a plugin's interpreter with a clean environment and a private
//! channel, checks the protocol handshake, and then carries calls (blocking or
//! async), streams, pushed progress and logs, phased cancellation, statistics and
//! typed death. It never decides *which* workers should exist (the manager does)
//! and never touches environments or manifests.

mod cgroup;
mod child;
mod completion;
mod deadline;
mod env;
mod error;
mod event;
mod forkserver;
mod handshake;
mod lock;
mod logs;
mod oom;
mod pending;
mod process;
mod shared;
mod spec;
mod stats;
mod worker;

pub use cgroup::{CgroupMemory, isolation as cgroup_isolation, memory_accounting};
pub use error::{Death, WorkerError};
pub use event::Event;
pub use forkserver::running as forkservers;
pub use logs::LOG_ROTATE_BYTES;
pub use spec::{StartMethod, WorkerSpec};
pub use stats::WorkerStats;
pub use worker::{CallOptions, CallStream, CancelPolicy, CancelStep, PendingCall, Worker};
