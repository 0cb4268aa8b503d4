//! The errors: a schema that cannot be compiled, and a config that does not fit.

use std::fmt;

use cjm_core::{PluginError, PluginRef};
use serde_json::Value;

use crate::describe::show_value;

/// The keyword [`ConfigProblem::keyword`] names for a key the schema does not
/// declare, whether cjm found it (top level) or the schema's own
/// `additionalProperties: false` did (nested objects).
pub(crate) const UNKNOWN_KEY_KEYWORD: &str = "additionalProperties";

/// A plugin's config schema that is not a usable JSON Schema.
///
/// This is the plugin's fault, not the user's: no config can be checked against it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "config schema of plugin `{plugin}` is not a valid JSON Schema{}: {detail}",
    at(location)
)]
pub struct SchemaError {
    /// The plugin whose manifest carries the schema.
    pub plugin: String,
    /// Where in the schema the problem is, as a JSON pointer (empty for the
    /// whole schema).
    pub location: String,
    /// What is wrong there.
    pub detail: String,
}

fn at(location: &str) -> String {
    if location.is_empty() {
        String::new()
    } else {
        format!(" at {location}")
    }
}

impl SchemaError {
    /// A next step for whoever reads the error.
    pub fn hint(&self) -> String {
        format!(
            "the schema comes from the plugin's manifest (`code.config_schema`); fix the \
             plugin's config class or its manifest, then regenerate the manifest of `{}`",
            self.plugin
        )
    }
}

/// A config that does not fit its plugin's schema: every problem found, at once.
///
/// Its [`Display`](fmt::Display) names the plugin and puts each problem on its own
/// line; [`hint`](Self::hint) says what to do. [`into_plugin_error`](Self::into_plugin_error)
/// turns it into the reference's `PluginConfigError`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The plugin whose config it is.
    pub plugin: String,
    /// Every problem, ordered like the schema's properties (unknown keys last),
    /// then by path. Never empty.
    pub problems: Vec<ConfigProblem>,
}

/// One bad field of a config.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// Where the field is, as a JSON pointer: `/threshold`, `/languages/2`,
    /// `/vad/min_silence_ms`. Empty for the config as a whole.
    pub path: String,
    /// The offending value; `None` when the problem is that there is none (a
    /// required field is missing).
    pub value: Option<Value>,
    /// The rule broken, in words: `must be ≤ 1.0`, `is required`,
    /// `must be an integer, found a string`.
    pub rule: String,
    /// The JSON Schema keyword behind the rule (`maximum`, `required`, `type`,
    /// …); `additionalProperties` for an unknown key.
    pub keyword: String,
}

impl ConfigProblem {
    /// Whether the problem is a key the schema does not declare.
    pub fn is_unknown_key(&self) -> bool {
        self.keyword == UNKNOWN_KEY_KEYWORD
    }

    /// The top-level config key the problem is under, if any.
    fn top_level_key(&self) -> Option<String> {
        let first = self.path.strip_prefix('/')?.split('/').next()?;
        Some(first.replace("~1", "/").replace("~0", "~"))
    }
}

/// `/threshold: must be ≤ 1.0 (got 1.5)`; a long value is cut short.
impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(the config)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.rule)?;
        if let Some(value) = &self.value {
            write!(f, " (got {})", show_value(value))?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration for plugin `{}`", self.plugin)?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A next step for whoever reads the error: which fields to fix, and for
    /// unknown keys, that lenient validation would drop them instead.
    pub fn hint(&self) -> String {
        let (unknown, bad): (Vec<&ConfigProblem>, Vec<&ConfigProblem>) = self
            .problems
            .iter()
            .partition(|problem| problem.is_unknown_key());
        let mut steps = Vec::new();
        if !bad.is_empty() {
            steps.push(format!(
                "fix {} to fit the plugin's config schema",
                path_list(&bad)
            ));
        }
        if !unknown.is_empty() {
            steps.push(format!(
                "remove the unknown {} {} (the keys it accepts are listed above), or use lenient \
                 mode, which drops unknown keys with a warning",
                if unknown.len() == 1 { "key" } else { "keys" },
                path_list(&unknown)
            ));
        }
        steps.join("; ")
    }

    /// The top-level config keys at fault, sorted and without repeats: the
    /// reference's `fields_invalid`.
    pub fn fields_invalid(&self) -> Vec<String> {
        let mut fields: Vec<String> = self
            .problems
            .iter()
            .filter_map(ConfigProblem::top_level_key)
            .collect();
        fields.sort();
        fields.dedup();
        fields
    }

    /// The reference's `PluginConfigError` for this config: the problems on one
    /// line as its message and [`fields_invalid`](Self::fields_invalid). Its
    /// [`PluginError::to_job_error`] is the record a job keeps.
    pub fn into_plugin_error(self, instance_id: Option<&str>) -> PluginError {
        let fields_invalid = self.fields_invalid();
        let message = self
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        PluginError::Config {
            plugin: match instance_id {
                Some(instance) => PluginRef::instance(self.plugin, instance),
                None => PluginRef::new(self.plugin),
            },
            message,
            fields_invalid,
        }
    }
}

/// The error for the plugin's default instance.
impl From<ConfigError> for PluginError {
    fn from(error: ConfigError) -> Self {
        error.into_plugin_error(None)
    }
}

fn path_list(problems: &[&ConfigProblem]) -> String {
    let mut paths: Vec<&str> = problems
        .iter()
        .map(|problem| {
            if problem.path.is_empty() {
                "the config as a whole"
            } else {
                problem.path.as_str()
            }
        })
        .collect();
    paths.dedup();
    paths.join(", ")
}
