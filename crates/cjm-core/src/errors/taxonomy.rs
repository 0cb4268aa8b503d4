//! Categories and the reference's exception classes.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// How a failure is routed: whether the user can fix it, a retry may help, memory
/// or disk must be freed first, or nothing will help.
///
/// Serialises as the reference's strings: `user_input`, `transient`, `resource`,
/// `fatal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    /// Bad config, an invalid argument, a missing file: the user can fix it.
    UserInput,
    /// A timeout, a network blip, brief contention: a retry may succeed.
    Transient,
    /// GPU memory, RAM or disk ran out: a retry may succeed once some is freed.
    Resource,
    /// A bug or an irrecoverable state: retrying will not help.
    Fatal,
}

impl ErrorCategory {
    /// Every category, in the reference's order.
    pub const ALL: [Self; 4] = [
        Self::UserInput,
        Self::Transient,
        Self::Resource,
        Self::Fatal,
    ];

    /// The reference's string for this category.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserInput => "user_input",
            Self::Transient => "transient",
            Self::Resource => "resource",
            Self::Fatal => "fatal",
        }
    }

    /// Whether a failure of this category is retried when nothing more specific
    /// says so (the reference's `_CATEGORY_RETRIABLE_DEFAULTS`): everything but
    /// [`Fatal`](Self::Fatal).
    pub const fn default_retriable(self) -> bool {
        !matches!(self, Self::Fatal)
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCategory {
    type Err = UnknownCategory;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|category| category.as_str() == value)
            .ok_or_else(|| UnknownCategory {
                value: value.to_owned(),
            })
    }
}

/// A string that names no [`ErrorCategory`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error category `{value}`")]
pub struct UnknownCategory {
    /// The string that was given.
    pub value: String,
}

/// The resource a [`ResourceShortfall`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortfallResource {
    /// GPU memory, in MB (`gpu_vram_mb`).
    GpuVramMb,
    /// System RAM, in MB (`system_ram_mb`).
    SystemRamMb,
    /// Disk space, in MB (`disk_mb`).
    DiskMb,
}

impl ShortfallResource {
    /// The reference's string for this resource.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::GpuVramMb => "gpu_vram_mb",
            Self::SystemRamMb => "system_ram_mb",
            Self::DiskMb => "disk_mb",
        }
    }

    /// A short human name: `GPU memory`, `RAM`, `disk space`.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::GpuVramMb => "GPU memory",
            Self::SystemRamMb => "RAM",
            Self::DiskMb => "disk space",
        }
    }
}

impl fmt::Display for ShortfallResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gap between what a plugin needed and what was available when it failed
/// with a resource error, in MB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceShortfall {
    /// Which resource ran short.
    pub resource: ShortfallResource,
    /// How much the plugin said it needed.
    pub needed: f64,
    /// How much was available at the time.
    pub available: f64,
}

/// The reference's exception classes (`cjm_plugin_system.core.errors`), each with
/// the category and retry default it declares and the class it inherits from.
///
/// The hierarchy, as in the reference:
///
/// ```text
/// PluginError
/// ├── PluginInputError (also a ValueError)   user_input  retriable
/// │   ├── PluginDisabledError
/// │   └── PluginConfigError
/// ├── PluginTransientError                   transient   retriable
/// │   ├── PluginTimeoutError
/// │   └── PluginCancelledError                           not retriable
/// ├── PluginResourceError                    resource    retriable
/// │   └── WorkerOOMError
/// └── PluginFatalError                       fatal       not retriable
///     └── PluginNotLoadedError
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginErrorKind {
    /// `PluginInputError`: the user can fix it.
    Input,
    /// `PluginTransientError`: a retry may succeed.
    Transient,
    /// `PluginResourceError`: a resource ran out.
    Resource,
    /// `PluginFatalError`: retrying will not help.
    Fatal,
    /// `PluginDisabledError`: the plugin is disabled.
    Disabled,
    /// `PluginNotLoadedError`: the plugin was never loaded.
    NotLoaded,
    /// `PluginTimeoutError`: a per-job timeout fired.
    Timeout,
    /// `PluginCancelledError`: the job was cancelled; transient but never retried.
    Cancelled,
    /// `WorkerOOMError`: the worker was killed mid-call, probably out of memory.
    WorkerOom,
    /// `PluginConfigError`: a config has unknown or invalid keys.
    Config,
}

impl PluginErrorKind {
    /// Every kind, bases first, in the reference's order.
    pub const ALL: [Self; 10] = [
        Self::Input,
        Self::Transient,
        Self::Resource,
        Self::Fatal,
        Self::Disabled,
        Self::NotLoaded,
        Self::Timeout,
        Self::Cancelled,
        Self::WorkerOom,
        Self::Config,
    ];

    /// The Python class name, e.g. `PluginInputError` or `WorkerOOMError`.
    pub const fn class_name(self) -> &'static str {
        match self {
            Self::Input => "PluginInputError",
            Self::Transient => "PluginTransientError",
            Self::Resource => "PluginResourceError",
            Self::Fatal => "PluginFatalError",
            Self::Disabled => "PluginDisabledError",
            Self::NotLoaded => "PluginNotLoadedError",
            Self::Timeout => "PluginTimeoutError",
            Self::Cancelled => "PluginCancelledError",
            Self::WorkerOom => "WorkerOOMError",
            Self::Config => "PluginConfigError",
        }
    }

    /// The kind whose Python class name is `name` (unqualified).
    pub fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.class_name() == name)
    }

    /// The kind this one's class inherits from, or `None` for the four category
    /// bases, which inherit `PluginError` directly.
    pub const fn parent(self) -> Option<Self> {
        match self {
            Self::Input | Self::Transient | Self::Resource | Self::Fatal => None,
            Self::Disabled | Self::Config => Some(Self::Input),
            Self::Timeout | Self::Cancelled => Some(Self::Transient),
            Self::WorkerOom => Some(Self::Resource),
            Self::NotLoaded => Some(Self::Fatal),
        }
    }

    /// Whether this kind's class is `other`'s class or inherits from it.
    pub fn is_subclass_of(self, other: Self) -> bool {
        self == other
            || self
                .parent()
                .is_some_and(|parent| parent.is_subclass_of(other))
    }

    /// Whether the class is also a Python `ValueError`, as every input error is so
    /// that `except ValueError:` keeps catching them.
    pub fn is_value_error(self) -> bool {
        self.is_subclass_of(Self::Input)
    }

    /// The category the class declares, inherited from its base.
    pub const fn category(self) -> ErrorCategory {
        match self {
            Self::Input | Self::Disabled | Self::Config => ErrorCategory::UserInput,
            Self::Transient | Self::Timeout | Self::Cancelled => ErrorCategory::Transient,
            Self::Resource | Self::WorkerOom => ErrorCategory::Resource,
            Self::Fatal | Self::NotLoaded => ErrorCategory::Fatal,
        }
    }

    /// Whether the class's failures are retried by default: its category's
    /// default, except that a cancellation was an operator's decision and is never
    /// retried.
    pub const fn default_retriable(self) -> bool {
        match self {
            Self::Cancelled => false,
            _ => self.category().default_retriable(),
        }
    }
}

impl fmt::Display for PluginErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class_name())
    }
}
