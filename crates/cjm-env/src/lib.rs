//! cjm's plugin environments.
//!
//! One isolated Python environment per *requirement set*: an [`EnvRequest`] names the
//! interpreter, the requirements, the local wheels (the host's own `cjm-worker`) and
//! the index options, and its [`EnvKey`] hashes everything that changes what gets
//! installed. Identical requests share one environment; concurrent requests for one
//! key build it once (a file lock); a build happens in a temporary folder renamed
//! into place only when complete, so a failed install leaves nothing behind; the
//! resolved set is kept beside the environment (`requirements.lock`).
//!
//! It never touches the host's or the user's Python, and knows nothing about plugins,
//! manifests or processes beyond running the environment tool.

mod error;
mod key;
mod store;

pub use error::EnvError;
pub use key::{Backend, EnvKey, EnvRequest};
pub use store::{Env, EnvStore};
