//! A plugin's compiled config schema, and validation of configs against it.

use std::collections::HashSet;

use jsonschema::{Retrieve, Uri, ValidationError, Validator, error::ValidationErrorKind};
use serde_json::{Map, Value};

use crate::{
    describe::{Found, Segment, describe, show_value, unknown_key_rule},
    error::{ConfigError, SchemaError, UNKNOWN_KEY_KEYWORD},
};

/// What to do with config keys the schema does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Strictness {
    /// Unknown keys are problems, reported with the rest (the default, as in the
    /// reference).
    #[default]
    Strict,
    /// Unknown keys are dropped and each is reported as a warning, for configs
    /// written for a newer version of the plugin (the reference's `strict=False`).
    Lenient,
}

/// A config that fits its schema: what the plugin receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The config, with the schema's default filled in for each property it did
    /// not set; in lenient mode, without its unknown keys.
    pub config: Map<String, Value>,
    /// One line per unknown key dropped in lenient mode, for the caller to log.
    pub warnings: Vec<String>,
}

/// A plugin's config schema, compiled once and reused for every config.
#[derive(Debug, Clone)]
pub struct ConfigSchema {
    plugin: String,
    /// `None` for a plugin with no schema: every object passes.
    validator: Option<Validator>,
    /// The schema itself, to find what a nested object accepts.
    schema: Value,
    /// The top-level keys the config may have, in the schema's order; `None` when
    /// any key is accepted.
    accepted: Option<Vec<String>>,
    defaults: Map<String, Value>,
}

impl ConfigSchema {
    /// Compiles the schema of `plugin`'s config.
    ///
    /// With no schema, or an empty one, every config is accepted as it is, as in
    /// the reference. Otherwise the schema's draft is taken from its `$schema`
    /// (2020-12 when absent, as for the schemas `dataclass_to_jsonschema` writes),
    /// and the schema is checked against that draft's meta-schema: a schema that
    /// is not valid JSON Schema, has a `pattern` that is not a regular
    /// expression, refers to an external document, or cannot describe an object
    /// is a [`SchemaError`] naming the plugin.
    ///
    /// `format` is an annotation, as JSON Schema 2020-12 says and as the
    /// reference treats it: `"format": "uri"` is shown to users but not checked.
    pub fn compile(plugin: &str, schema: Option<&Map<String, Value>>) -> Result<Self, SchemaError> {
        let Some(schema) = schema.filter(|schema| !schema.is_empty()) else {
            return Ok(Self {
                plugin: plugin.to_owned(),
                validator: None,
                schema: Value::Bool(true),
                accepted: None,
                defaults: Map::new(),
            });
        };
        let schema_error = |location: &str, detail: String| SchemaError {
            plugin: plugin.to_owned(),
            location: location.to_owned(),
            detail,
        };
        if let Some(types) = schema.get("type")
            && !declares_object(types)
        {
            return Err(schema_error(
                "/type",
                format!("a config is an object, but the schema only allows {types}"),
            ));
        }
        let schema = Value::Object(schema.clone());
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .with_retriever(NoRetrieval)
            .build(&schema)
            .map_err(|error| invalid_schema(plugin, &schema, error))?;

        let properties = schema.get("properties").and_then(Value::as_object);
        let defaults = properties
            .into_iter()
            .flatten()
            .filter_map(|(key, property)| Some((key.clone(), property.get("default")?.clone())))
            .collect();
        Ok(Self {
            plugin: plugin.to_owned(),
            validator: Some(validator),
            accepted: properties
                .filter(|_| !accepts_undeclared_keys(&schema))
                .map(|properties| properties.keys().cloned().collect()),
            schema,
            defaults,
        })
    }

    /// The plugin the schema belongs to.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The default of each top-level property that has one (`default`), in the
    /// schema's order: the reference's `_extract_defaults_from_schema`, and what
    /// a plugin given no config receives.
    pub fn defaults(&self) -> Map<String, Value> {
        self.defaults.clone()
    }

    /// Checks `config` and returns what the plugin receives: `config` with the
    /// default filled in for each top-level property it does not set.
    ///
    /// The defaults are filled in *before* validation, so a `required` property
    /// that has a default is satisfied by it. A default that breaks its own
    /// property's schema (a Python `str` field defaulting to `None` is written as
    /// `"type": "string", "default": null`) is passed through without complaint:
    /// the plugin chose it, and the reference passes it too.
    ///
    /// A key the schema's `properties` does not declare is unknown, unless the
    /// schema has no `properties` at all (as in the reference) or admits other
    /// keys itself (`additionalProperties` other than `false`, or
    /// `patternProperties`). In [`Strictness::Strict`] mode each unknown key is a
    /// problem; in [`Strictness::Lenient`] mode it is dropped with a warning.
    ///
    /// On failure, the error lists every problem: wrong types, out-of-range
    /// numbers, values outside an `enum`, strings that do not match their
    /// `pattern` (searched for anywhere in the string, as JSON Schema says; the
    /// reference's plugin-side check anchors it at the start), unknown keys,
    /// missing required fields, bad array items and nested fields alike.
    pub fn validate(
        &self,
        config: &Map<String, Value>,
        mode: Strictness,
    ) -> Result<Validated, ConfigError> {
        let mut merged = Map::with_capacity(config.len().max(self.defaults.len()));
        let mut found = Vec::new();
        let mut warnings = Vec::new();
        for (key, value) in config {
            if self.accepts(key) {
                merged.insert(key.clone(), value.clone());
                continue;
            }
            let rule = unknown_key_rule(key, self.accepted.as_deref().unwrap_or_default());
            match mode {
                Strictness::Strict => found.push(Found {
                    segments: vec![Segment::Key(key.clone())],
                    value: Some(value.clone()),
                    rule,
                    keyword: UNKNOWN_KEY_KEYWORD.to_owned(),
                }),
                Strictness::Lenient => warnings.push(format!("dropped `{key}`: {rule}")),
            }
        }
        let mut filled = HashSet::new();
        for (key, default) in &self.defaults {
            if !merged.contains_key(key) {
                merged.insert(key.clone(), default.clone());
                filled.insert(key.as_str());
            }
        }

        let mut instance = Value::Object(merged);
        if let Some(validator) = &self.validator {
            for error in validator.iter_errors(&instance) {
                describe(error, &instance, &self.schema, &mut found);
            }
        }
        found.retain(|problem| match problem.segments.first() {
            Some(Segment::Key(key)) => !filled.contains(key.as_str()),
            _ => true,
        });

        if found.is_empty() {
            let config = instance
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            return Ok(Validated { config, warnings });
        }
        // Like the schema's form: its properties in order, then unknown keys in
        // the config's order, each field's problems by path (indices numerically).
        found.sort_by_cached_key(|problem| {
            let position = match problem.segments.first() {
                Some(Segment::Key(key)) => self.position(key),
                _ => Some(0),
            };
            // Unknown keys keep the config's order (the sort is stable).
            let segments = position.map(|_| problem.segments.clone());
            (position.is_none(), position, segments)
        });
        Err(ConfigError {
            plugin: self.plugin.clone(),
            problems: found.into_iter().map(Found::into_problem).collect(),
        })
    }

    fn accepts(&self, key: &str) -> bool {
        self.accepted
            .as_ref()
            .is_none_or(|accepted| accepted.iter().any(|known| known == key))
    }

    fn position(&self, key: &str) -> Option<usize> {
        let properties = self.schema.get("properties")?.as_object()?;
        properties.keys().position(|known| known == key)
    }
}

/// The [`SchemaError`] for `error`, found compiling `schema`.
fn invalid_schema(plugin: &str, schema: &Value, error: ValidationError<'_>) -> SchemaError {
    // The meta-schema check places its errors at the offending part of the
    // schema; the compiler (e.g. of a `pattern`) places them at the keyword.
    let location = [error.instance_path(), error.schema_path()]
        .into_iter()
        .map(|location| location.as_str().to_owned())
        .find(|location| !location.is_empty() && schema.pointer(location).is_some())
        .unwrap_or_default();
    let fallback = error.to_string();
    if matches!(error.kind(), ValidationErrorKind::Referencing(_)) {
        return SchemaError {
            plugin: plugin.to_owned(),
            location,
            detail: fallback,
        };
    }
    let mut found = Vec::new();
    describe(error, schema, &Value::Null, &mut found);
    let detail = found.into_iter().next().map_or(fallback, |found| {
        let problem = found.into_problem();
        match problem.value {
            Some(value) => format!("{} (got {})", problem.rule, show_value(&value)),
            None => problem.rule,
        }
    });
    SchemaError {
        plugin: plugin.to_owned(),
        location,
        detail,
    }
}

/// Whether a schema's `type` lets the config, an object, through.
fn declares_object(types: &Value) -> bool {
    match types {
        Value::String(name) => name == "object",
        Value::Array(names) => names.iter().any(|name| name == "object"),
        // Not a type at all: the meta-schema check says so.
        _ => true,
    }
}

/// Whether the schema itself admits keys its `properties` does not declare.
fn accepts_undeclared_keys(schema: &Value) -> bool {
    schema.get("patternProperties").is_some()
        || schema
            .get("additionalProperties")
            .is_some_and(|additional| *additional != Value::Bool(false))
}

/// Refuses every external reference: a plugin's schema must not make the host
/// read its files or reach the network, whatever features other crates enable
/// in `jsonschema`. The drafts' own meta-schemas are built in and need no
/// retrieval.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(
            format!("refusing to fetch `{uri}`: a config schema must not refer to other documents")
                .into(),
        )
    }
}
