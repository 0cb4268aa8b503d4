//! Validation of a plugin's configuration against the JSON Schema its manifest
//! carries in `code.config_schema`, before any worker is spawned.
//!
//! This crate owns one question: does this config fit this plugin's schema, and if
//! not, what exactly is wrong with it? [`ConfigSchema::compile`] turns a manifest's
//! schema into a validator once per plugin; [`ConfigSchema::validate`] then checks a
//! config in microseconds, fills in the schema's defaults, and either returns what
//! the plugin will receive or a [`ConfigError`] listing every bad field at once, each
//! with its JSON path, the offending value and the rule it breaks. It never reads
//! files, never fetches anything (a schema's external `$ref`s are refused), and never
//! logs: warnings are returned to the caller.
//!
//! The reference (`cjm-plugin-system` 0.0.34) only rejects unknown keys. This crate
//! also checks types, ranges, enums, patterns, lengths and the rest of JSON Schema;
//! see [`ConfigSchema::validate`] for what the plugin receives and where that differs
//! from the reference.
//!
//! ```
//! use cjm_schema::{ConfigSchema, Strictness};
//! use serde_json::json;
//!
//! let schema = json!({
//!     "type": "object",
//!     "properties": {
//!         "model": {"type": "string", "enum": ["tiny", "base"], "default": "base"},
//!         "threshold": {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": 0.5},
//!     },
//! });
//! let schema = ConfigSchema::compile("whisper", schema.as_object()).unwrap();
//!
//! let config = json!({"threshold": 0.25});
//! let validated = schema.validate(config.as_object().unwrap(), Strictness::Strict).unwrap();
//! assert_eq!(validated.config["model"], "base");
//!
//! let config = json!({"model": "huge", "threshold": 1.5, "colour": "blue"});
//! let error = schema.validate(config.as_object().unwrap(), Strictness::Strict).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "invalid configuration for plugin `whisper`\n\
//!      \x20 - /model: must be one of \"tiny\", \"base\" (got \"huge\")\n\
//!      \x20 - /threshold: must be ≤ 1.0 (got 1.5)\n\
//!      \x20 - /colour: unknown key (accepted: model, threshold) (got \"blue\")",
//! );
//! ```

mod describe;
mod error;
mod schema;

pub use crate::{
    error::{ConfigError, ConfigProblem, SchemaError},
    schema::{ConfigSchema, Strictness, Validated},
};
