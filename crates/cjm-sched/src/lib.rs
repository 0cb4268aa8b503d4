//! Resource-aware scheduling for cjm: what the machine has, what each plugin
//! instance is expected to need, and whether a call may start now.
//!
//! - **Monitors.** [`process`] reads each worker's memory and CPU from procfs,
//!   counting every process it started, with per-call peaks; [`machine`] reads
//!   available memory (capped by a cgroup limit), swap and memory pressure;
//!   [`gpu`] reads GPUs through NVML, loaded at run time, or from a scripted fake
//!   ([`gpu::FakeGpu`]), and says why there are none where there are none.
//! - **Footprints.** [`footprint`] turns a manifest's declared `resources` and
//!   the empirical record of earlier calls into what a call is expected to need.
//! - **Decisions.** [`fit::Scheduler`] admits a call when its footprint fits,
//!   counting what admitted calls reserved, picks idle workers to evict when it
//!   does not, and otherwise says why the call waits or why it can never run.
//!   [`policy`] holds the reference's three policies beside it.
//!
//! What it never does: start, stop or call a worker, sample on the call path, or
//! sleep to wait for memory. The manager owns the workers; it builds the
//! [`fit::View`] from the latest samples, carries out each decision and reports
//! back. This crate never imports the manager.

pub mod amount;
pub mod fit;
pub mod footprint;
pub mod gpu;
pub mod machine;
pub mod policy;
pub mod process;

pub use crate::fit::{Decision, FitOptions, Permit, Scheduler};
pub use crate::footprint::{Basis, Expected, Footprint};
pub use crate::gpu::{GpuDevice, GpuSample, Gpus};
pub use crate::machine::MachineSample;
pub use crate::policy::Policy;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m` even when a thread panicked while holding it: the scheduler's
/// ledger is whole between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
