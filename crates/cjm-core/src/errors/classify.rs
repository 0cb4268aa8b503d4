//! Classification of the Python exceptions a worker reports.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{ErrorCategory, JobError, PluginErrorKind, ResourceShortfall, TracebackPolicy};
use crate::timestamp::isoformat_utc;

/// What a worker reports about an exception raised by plugin code: enough to build
/// the [`JobError`] the reference's `map_bare_exception_to_job_error` would build
/// from the live exception.
///
/// Class names may be qualified (`builtins.ValueError`,
/// `cjm_plugin_system.core.errors.PluginInputError`) or plain (`ValueError`).
/// The `declared_*` fields are the class's `category` and `default_retriable`
/// attributes; they count only when the MRO shows a `PluginError`, as the
/// reference reads them only from `PluginError` instances. Likewise
/// `fields_invalid`, `retry_after_seconds` and `resource_shortfall` count only for
/// subclasses of the reference class that defines them, whatever else the
/// exception carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaisedException {
    /// The exception's class.
    pub type_name: String,
    /// The class's method resolution order, the class itself first. When empty,
    /// `type_name` alone is walked.
    #[serde(default)]
    pub mro: Vec<String>,
    /// `str(exc)`.
    pub message: String,
    /// `repr(exc)`.
    pub repr: String,
    /// `"".join(traceback.format_exception(exc))`.
    #[serde(default)]
    pub traceback: Option<String>,
    /// The class's `category` attribute, for `PluginError` subclasses.
    #[serde(default)]
    pub declared_category: Option<String>,
    /// The class's `default_retriable` attribute, for `PluginError` subclasses.
    #[serde(default)]
    pub declared_retriable: Option<bool>,
    /// The exception's `fields_invalid` attribute.
    #[serde(default)]
    pub fields_invalid: Option<Vec<String>>,
    /// The exception's `retry_after_seconds` attribute.
    #[serde(default)]
    pub retry_after_seconds: Option<f64>,
    /// The exception's `resource_shortfall` attribute.
    #[serde(default)]
    pub resource_shortfall: Option<ResourceShortfall>,
}

/// What the [`JobError`] records besides the exception: who raised it, when, and
/// how much detail to keep. The reference's keyword arguments to
/// `map_bare_exception_to_job_error`, with the time always given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobErrorContext {
    /// The plugin that raised.
    pub plugin_name: Option<String>,
    /// The plugin instance that raised.
    pub plugin_instance_id: Option<String>,
    /// How much detail to keep.
    pub traceback_policy: TracebackPolicy,
    /// When the failure happened.
    pub occurred_at: SystemTime,
}

impl JobErrorContext {
    /// A context with no plugin named and the full traceback kept.
    pub fn new(occurred_at: SystemTime) -> Self {
        Self {
            plugin_name: None,
            plugin_instance_id: None,
            traceback_policy: TracebackPolicy::Full,
            occurred_at,
        }
    }

    /// Names the plugin that raised.
    #[must_use]
    pub fn with_plugin(mut self, name: impl Into<String>) -> Self {
        self.plugin_name = Some(name.into());
        self
    }

    /// Names the plugin instance that raised.
    #[must_use]
    pub fn with_instance(mut self, instance_id: impl Into<String>) -> Self {
        self.plugin_instance_id = Some(instance_id.into());
        self
    }

    /// Sets how much detail to keep.
    #[must_use]
    pub fn with_traceback_policy(mut self, policy: TracebackPolicy) -> Self {
        self.traceback_policy = policy;
        self
    }
}

/// The reference's `_BARE_EXCEPTION_CATEGORY_MAP`: built-in exception classes and
/// their categories. The MRO walk takes the first ancestor listed, so
/// `FileNotFoundError` is an input error though its base `OSError` is transient.
const BARE_EXCEPTION_CATEGORIES: [(&str, ErrorCategory); 13] = [
    ("FileNotFoundError", ErrorCategory::UserInput),
    ("NotADirectoryError", ErrorCategory::UserInput),
    ("IsADirectoryError", ErrorCategory::UserInput),
    ("PermissionError", ErrorCategory::UserInput),
    ("KeyError", ErrorCategory::UserInput),
    ("ValueError", ErrorCategory::UserInput),
    ("TypeError", ErrorCategory::UserInput),
    ("TimeoutError", ErrorCategory::Transient),
    ("ConnectionError", ErrorCategory::Transient),
    ("InterruptedError", ErrorCategory::Transient),
    ("BlockingIOError", ErrorCategory::Transient),
    ("MemoryError", ErrorCategory::Resource),
    ("OSError", ErrorCategory::Transient),
];

/// The root of the reference's hierarchy, which declares no category itself.
const PLUGIN_ERROR_BASE: &str = "PluginError";

/// One entry of an MRO, split into its module (if qualified) and class name.
struct Ancestor<'a> {
    module: Option<&'a str>,
    name: &'a str,
}

impl<'a> Ancestor<'a> {
    fn parse(entry: &'a str) -> Self {
        match entry.rsplit_once('.') {
            Some((module, name)) => Self {
                module: Some(module),
                name,
            },
            None => Self {
                module: None,
                name: entry,
            },
        }
    }

    /// The category the bare-exception table gives this class, if it is a
    /// built-in listed there. A user class that happens to be called `KeyError`
    /// but lives elsewhere is not one.
    fn bare_category(&self) -> Option<ErrorCategory> {
        if !matches!(self.module, None | Some("builtins")) {
            return None;
        }
        BARE_EXCEPTION_CATEGORIES
            .iter()
            .find(|(name, _)| *name == self.name)
            .map(|&(_, category)| category)
    }

    /// The reference class this is, matched by class name in any module so that
    /// both the reference's classes and cjm's re-exports of them count.
    fn plugin_kind(&self) -> Option<PluginErrorKind> {
        PluginErrorKind::from_class_name(self.name)
    }

    fn is_plugin_error(&self) -> bool {
        self.name == PLUGIN_ERROR_BASE || self.plugin_kind().is_some()
    }
}

impl RaisedException {
    /// A report with only the class, message and repr, as for an exception with
    /// no attributes the classification reads. `type_name` stands in for the MRO.
    pub fn new(
        type_name: impl Into<String>,
        message: impl Into<String>,
        repr: impl Into<String>,
    ) -> Self {
        Self {
            type_name: type_name.into(),
            mro: Vec::new(),
            message: message.into(),
            repr: repr.into(),
            traceback: None,
            declared_category: None,
            declared_retriable: None,
            fields_invalid: None,
            retry_after_seconds: None,
            resource_shortfall: None,
        }
    }

    fn ancestors(&self) -> impl Iterator<Item = Ancestor<'_>> {
        let entries = if self.mro.is_empty() {
            std::slice::from_ref(&self.type_name)
        } else {
            self.mro.as_slice()
        };
        entries.iter().map(|entry| Ancestor::parse(entry))
    }

    fn is_plugin_error(&self) -> bool {
        self.ancestors().any(|ancestor| ancestor.is_plugin_error())
    }

    /// The most derived reference class in the MRO.
    fn nearest_plugin_kind(&self) -> Option<PluginErrorKind> {
        self.ancestors().find_map(|ancestor| ancestor.plugin_kind())
    }

    fn is_instance_of(&self, kind: PluginErrorKind) -> bool {
        self.ancestors()
            .filter_map(|ancestor| ancestor.plugin_kind())
            .any(|found| found.is_subclass_of(kind))
    }

    /// The exception's category, as the reference's `classify_exception` gives it.
    ///
    /// A `PluginError` subclass reports the category it declares (or, if the
    /// worker did not say, that of the nearest reference class in its MRO). Any
    /// other exception takes the category of the first ancestor in the
    /// bare-exception table. The rest are fatal: the unknown is never retried.
    ///
    /// Where the reference would crash instead (a bare `PluginError`, which
    /// declares no category) or record a category outside the four (a subclass
    /// declaring its own string), this falls back to the nearest reference class,
    /// then to [`ErrorCategory::Fatal`].
    pub fn category(&self) -> ErrorCategory {
        if self.is_plugin_error() {
            return self
                .declared_category
                .as_deref()
                .and_then(|declared| declared.parse().ok())
                .or_else(|| self.nearest_plugin_kind().map(PluginErrorKind::category))
                .unwrap_or(ErrorCategory::Fatal);
        }
        self.ancestors()
            .find_map(|ancestor| ancestor.bare_category())
            .unwrap_or(ErrorCategory::Fatal)
    }

    /// Whether the failure may be retried: a `PluginError` subclass's declared
    /// `default_retriable` (so a cancellation is not), otherwise the category's
    /// default.
    pub fn retriable(&self) -> bool {
        let category = self.category();
        if !self.is_plugin_error() {
            return category.default_retriable();
        }
        self.declared_retriable
            .or_else(|| {
                self.nearest_plugin_kind()
                    .map(PluginErrorKind::default_retriable)
            })
            .unwrap_or_else(|| category.default_retriable())
    }

    /// The [`JobError`] the reference's `map_bare_exception_to_job_error` builds
    /// for this exception.
    pub fn to_job_error(&self, context: &JobErrorContext) -> JobError {
        let keep_message = context.traceback_policy != TracebackPolicy::None;
        JobError {
            category: self.category(),
            message: if keep_message {
                self.message.clone()
            } else {
                String::new()
            },
            retriable: self.retriable(),
            original_exc_repr: self.repr.clone(),
            traceback: match context.traceback_policy {
                TracebackPolicy::Full => self.traceback.clone(),
                TracebackPolicy::ReprOnly | TracebackPolicy::None => None,
            },
            retry_after_seconds: self
                .retry_after_seconds
                .filter(|_| self.is_instance_of(PluginErrorKind::Transient)),
            fields_invalid: self
                .fields_invalid
                .clone()
                .filter(|_| self.is_instance_of(PluginErrorKind::Input)),
            resource_shortfall: self
                .resource_shortfall
                .filter(|_| self.is_instance_of(PluginErrorKind::Resource)),
            plugin_name: context.plugin_name.clone(),
            plugin_instance_id: context.plugin_instance_id.clone(),
            occurred_at: Some(isoformat_utc(context.occurred_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised(mro: &[&str]) -> RaisedException {
        RaisedException {
            mro: mro.iter().map(|&entry| entry.to_owned()).collect(),
            ..RaisedException::new(mro[0], "m", "X('m')")
        }
    }

    #[test]
    fn a_bare_plugin_error_is_fatal_where_the_reference_would_crash() {
        let exc = raised(&["PluginError", "Exception", "BaseException", "object"]);
        assert_eq!(exc.category(), ErrorCategory::Fatal);
        assert!(!exc.retriable());
    }

    #[test]
    fn an_undeclared_category_falls_back_to_the_nearest_reference_class() {
        let mut exc = raised(&[
            "mine.Slow",
            "x.PluginTimeoutError",
            "x.PluginTransientError",
        ]);
        exc.declared_category = Some("sideways".into());
        assert_eq!(exc.category(), ErrorCategory::Transient);
        assert!(exc.retriable());
    }

    #[test]
    fn a_user_class_named_like_a_builtin_is_not_that_builtin() {
        let exc = raised(&["mine.KeyError", "builtins.Exception", "builtins.object"]);
        assert_eq!(exc.category(), ErrorCategory::Fatal);
    }

    #[test]
    fn an_empty_mro_walks_the_type_name_alone() {
        let exc = RaisedException::new("TimeoutError", "slow", "TimeoutError('slow')");
        assert_eq!(exc.category(), ErrorCategory::Transient);
    }
}
