//! cjm: process-isolated Python plugins for Rust hosts.
//!
//! Each plugin runs in its own Python interpreter (its own environment, its own
//! dependencies) in its own worker process, reached over a private socketpair.
//! This facade re-exports the layers so a host depends on one crate:
//!
//! - [`core`] — the error taxonomy, `JobError`, hashing and plugin metadata;
//! - [`proto`] — the wire protocol: values, buffers, shared memory;
//! - [`proxy`] — one worker: spawn, call, stream, cancel, stop;
//! - [`manifest`] — plugin manifests, plugins.yaml, discovery;
//! - [`stores`] — the reference's config, secret and empirical stores;
//! - [`schema`] — plugin config schemas: validation and the reference's messages;
//! - [`env`](mod@env) — plugin environments and the install pipeline;
//! - [`manager`] — the plugin manager: instances, lifecycle, supervision,
//!   validated configuration, secrets;
//! - [`launch`] — a worker started from a manifest, and its drift check;
//! - [`create_pipeline`] — all of it in one call.
//!
//! ```no_run
//! use cjm::proto::Value;
//! use cjm::proxy::{Worker, WorkerSpec};
//!
//! # fn main() -> Result<(), cjm::proxy::WorkerError> {
//! // The plugin's environment, module and class (its manifest says where).
//! let spec = WorkerSpec::new("echo", "/envs/echo/bin/python", "echo_plugin", "EchoPlugin");
//! let worker = Worker::spawn(spec)?;
//! let reply = worker.execute_blocking(vec![Value::from("hello")], vec![])?;
//! println!("{}", reply.to_json());
//! worker.stop_blocking();
//! # Ok(())
//! # }
//! ```

mod pipeline;

pub use cjm_core as core;
pub use cjm_env as env;
pub use cjm_manager as manager;
pub use cjm_manager::launch;
pub use cjm_manifest as manifest;
pub use cjm_proto as proto;
pub use cjm_proxy as proxy;
pub use cjm_queue as queue;
pub use cjm_sched as sched;
pub use cjm_schema as schema;
pub use cjm_stores as stores;
pub use pipeline::{Pipeline, PipelineError, create_pipeline, create_pipeline_with};
