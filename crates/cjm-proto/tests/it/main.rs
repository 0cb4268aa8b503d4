//! Integration tests of `cjm-proto`, one module per area.
//!
//! Channels are real socketpairs and shared memory is real memfds; both ends live in
//! this process. Run under `cargo nextest` (one process per test); the [`leaks`]
//! tests count the process's descriptors and re-run themselves alone otherwise.

mod channel;
mod forkserver;
mod hostile;
mod leaks;
mod messages;
mod props;
mod shm;
mod spill;
mod support;
mod values;
