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
//! It never touches the host's or the user's Python.
//!
//! On top of the store, an [`Installer`] turns a plugins.yaml entry into a
//! registered plugin: environment, introspection inside it (the reference's
//! `<module>.meta.get_plugin_metadata()` convention, or a `cjm.plugins` entry point),
//! then a v2.0 manifest. A failed install leaves no manifest behind.

mod conda;
mod error;
mod install;
mod key;
mod runtime;
mod source;
mod store;

pub use conda::{CondaRuntime, CondaSource};
pub use error::{EnvError, InstallError};
pub use install::{Installed, Installer, Stage};
pub use key::{EnvKey, EnvRequest, LocalSource};
pub use runtime::{
    UV_VERSION, download, find_on_path, find_uv, micromamba_url, runtime_dir, setup_micromamba,
    setup_micromamba_from, setup_uv,
};
pub use source::{source_hash, source_name};
pub use store::{Env, EnvStore};
