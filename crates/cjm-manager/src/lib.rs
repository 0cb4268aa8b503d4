//! cjm's plugin manager: the one object an application embeds.
//!
//! A [`Manager`] discovers installed plugins (their manifests), loads instances of
//! them (several per plugin, each its own worker and configuration), starts their
//! workers eagerly or on first use, supervises them (a crashed worker is restarted
//! with exponential backoff; too many crashes quarantine the instance as
//! crash-looping), enables and disables them, caps their concurrency, and stops
//! idle ones. Every state change is readable ([`Manager::state`]) and reported as
//! a [`ManagerEvent`]. Time comes from an injectable [`Clock`].
//!
//! ```no_run
//! use cjm_manager::{LoadSpec, Manager, ManagerOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = cjm_core::load_config(&Default::default(), &|k| std::env::var(k).ok(), &std::env::current_dir()?)?;
//! let manager = Manager::new(cfg, ManagerOptions::default());
//! let id = manager.load(&LoadSpec::new("cjm-text-plugin-shout"))?;
//! let out = manager.execute(&id, vec![], vec![("text".into(), "hi".into())])?;
//! println!("{}", out.to_json());
//! # Ok(()) }
//! ```

mod binding;
mod error;
mod instance;
pub mod launch;
mod manager;
mod persist;
mod state;

pub use crate::{
    binding::PluginBinding,
    error::ManagerError,
    manager::{
        CallCancel, CallReport, DeviceResources, ExecuteStream, ForkserverResources, InstanceInfo,
        InstanceResources, LoadSpec, Manager, ManagerOptions, Resources, WaitingCall,
    },
    state::{CrashRecord, InstanceState, ManagerEvent, RestartPolicy},
};
pub use cjm_core::{Clock, ManualClock, SharedClock, SystemClock};
pub use cjm_proxy::{CancelPolicy, CancelStep, StartMethod};
pub use cjm_sched::{Expected, FitOptions, Footprint, Gpus, Policy};
pub use cjm_schema::{ConfigError, ConfigProblem};
pub use cjm_stores::SecretValue;
