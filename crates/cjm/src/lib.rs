//! cjm: process-isolated Python plugins for Rust hosts.
pub use cjm_core as core;
pub use cjm_proto as proto;
pub use cjm_proxy as proxy;
