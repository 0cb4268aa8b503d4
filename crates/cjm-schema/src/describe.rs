//! Validation errors in words: each `jsonschema` error becomes one or more
//! problems with a path into the config, the offending value and the rule.

use jsonschema::{
    JsonType, ValidationError,
    error::{TypeKind, ValidationErrorKind},
};
use serde_json::Value;

use crate::error::{ConfigProblem, UNKNOWN_KEY_KEYWORD};

/// The longest value shown in a message, in characters.
const MAX_SHOWN_VALUE: usize = 60;
/// The most allowed values or accepted keys listed in one rule.
const MAX_LISTED: usize = 20;

/// One step of a path into the config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Segment {
    /// An array index.
    Index(usize),
    /// An object key.
    Key(String),
}

/// A problem before its path is written out.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) segments: Vec<Segment>,
    pub(crate) value: Option<Value>,
    pub(crate) rule: String,
    pub(crate) keyword: String,
}

impl Found {
    pub(crate) fn into_problem(self) -> ConfigProblem {
        let mut path = String::new();
        for segment in &self.segments {
            path.push('/');
            match segment {
                Segment::Index(index) => path.push_str(&index.to_string()),
                Segment::Key(key) => path.push_str(&key.replace('~', "~0").replace('/', "~1")),
            }
        }
        ConfigProblem {
            path,
            value: self.value,
            rule: self.rule,
            keyword: self.keyword,
        }
    }
}

/// Adds the problems `error` reports about `config` (the instance validated
/// against `schema`) to `out`.
pub(crate) fn describe(
    error: ValidationError<'_>,
    config: &Value,
    schema: &Value,
    out: &mut Vec<Found>,
) {
    let segments = segments(error.instance_path().as_str(), config);
    let schema_path = error.schema_path().as_str().to_owned();
    let parts = error.into_parts();
    let instance = parts.instance.into_owned();
    let keyword = parts.kind.keyword().to_owned();
    let problem = |rule: String| Found {
        segments: segments.clone(),
        value: Some(instance.clone()),
        rule,
        keyword: keyword.clone(),
    };
    match parts.kind {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            // The keyword sits beside the `properties` that say what is accepted.
            let accepted: Vec<String> = schema
                .pointer(parent_pointer(&schema_path))
                .and_then(|object_schema| object_schema.get("properties"))
                .and_then(Value::as_object)
                .map(|properties| properties.keys().cloned().collect())
                .unwrap_or_default();
            for key in unexpected {
                let mut path = segments.clone();
                path.push(Segment::Key(key.clone()));
                out.push(Found {
                    segments: path,
                    value: instance.get(&key).cloned(),
                    rule: unknown_key_rule(&key, &accepted),
                    keyword: UNKNOWN_KEY_KEYWORD.to_owned(),
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let mut path = segments.clone();
            path.push(Segment::Key(match property {
                Value::String(name) => name,
                other => other.to_string(),
            }));
            out.push(Found {
                segments: path,
                value: None,
                rule: "is required".to_owned(),
                keyword,
            });
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            let before = out.len();
            describe_alternatives(context, config, schema, &segments, &instance, out);
            if out.len() == before {
                out.push(problem(format!(
                    "must match one of the schemas in `{keyword}`, but matches none"
                )));
            }
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => out.push(problem(
            "must match exactly one of the schemas in `oneOf`, but matches several".to_owned(),
        )),
        ValidationErrorKind::PropertyNames { error } => {
            let name = error.instance().as_ref().clone();
            let rule = rule(error.kind(), &name);
            let mut path = segments.clone();
            path.push(Segment::Key(match &name {
                Value::String(name) => name.clone(),
                other => other.to_string(),
            }));
            out.push(Found {
                segments: path,
                value: None,
                rule: format!("key name {rule}"),
                keyword,
            });
        }
        kind => out.push(problem(rule(&kind, &instance))),
    }
}

/// The problems of an `anyOf`/`oneOf` none of whose schemas matched, when they can
/// be said more plainly than "matches none": if the value has the type of exactly
/// one alternative (`Optional[int]` with a minimum, say), that alternative's
/// problems; if it has the type of none, one type problem naming them all.
fn describe_alternatives(
    context: Vec<Vec<ValidationError<'static>>>,
    config: &Value,
    schema: &Value,
    at: &[Segment],
    instance: &Value,
    out: &mut Vec<Found>,
) {
    let is_own_type_error = |error: &ValidationError<'_>| {
        matches!(error.kind(), ValidationErrorKind::Type { .. })
            && segments(error.instance_path().as_str(), config) == at
    };
    let (wrong_type, right_type): (Vec<_>, Vec<_>) = context
        .into_iter()
        .partition(|errors| errors.iter().any(is_own_type_error));
    match right_type.len() {
        1 => {
            for errors in right_type {
                for error in errors {
                    describe(error, config, schema, out);
                }
            }
        }
        0 => {
            let mut expected = Vec::new();
            for error in wrong_type.iter().flatten().filter(|e| is_own_type_error(e)) {
                if let ValidationErrorKind::Type { kind } = error.kind() {
                    for json_type in type_kinds(kind) {
                        if !expected.contains(&json_type) {
                            expected.push(json_type);
                        }
                    }
                }
            }
            out.push(Found {
                segments: at.to_vec(),
                value: Some(instance.clone()),
                rule: type_rule(&expected, instance),
                keyword: "type".to_owned(),
            });
        }
        _ => {}
    }
}

/// The rule broken, for the errors about one value.
fn rule(kind: &ValidationErrorKind, instance: &Value) -> String {
    match kind {
        ValidationErrorKind::Type { kind } => type_rule(&type_kinds(kind), instance),
        ValidationErrorKind::Minimum { limit } => format!("must be ≥ {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be ≤ {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be > {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be < {limit}"),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            format!("must be a multiple of {multiple_of}")
        }
        ValidationErrorKind::Enum { options } => match options.as_array() {
            Some(options) => format!("must be one of {}", list(options.iter().map(show_value))),
            None => format!("must be one of {options}"),
        },
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be {}", show_value(expected_value))
        }
        ValidationErrorKind::Pattern { pattern } => format!("must match {pattern}"),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {} long", count(*limit, "character"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {} long", count(*limit, "character"))
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("must have at least {}", count(*limit, "item"))
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("must have at most {}", count(*limit, "item"))
        }
        ValidationErrorKind::AdditionalItems { limit } => {
            format!("must have at most {}", count(*limit as u64, "item"))
        }
        ValidationErrorKind::MinProperties { limit } => {
            format!("must have at least {}", count(*limit, "key"))
        }
        ValidationErrorKind::MaxProperties { limit } => {
            format!("must have at most {}", count(*limit, "key"))
        }
        ValidationErrorKind::UniqueItems => "must not contain the same item twice".to_owned(),
        ValidationErrorKind::Contains => {
            "must contain an item that matches the schema in `contains`".to_owned()
        }
        ValidationErrorKind::UnevaluatedItems { unexpected } => {
            format!("has items no schema allows: {}", unexpected.join(", "))
        }
        ValidationErrorKind::Format { format } => format!("must be a valid {format}"),
        ValidationErrorKind::ContentEncoding { content_encoding } => {
            format!("must be {content_encoding}-encoded")
        }
        ValidationErrorKind::ContentMediaType { content_media_type } => {
            format!("must be a valid {content_media_type} document")
        }
        ValidationErrorKind::FromUtf8 { .. } => "must decode to UTF-8 text".to_owned(),
        ValidationErrorKind::Not { .. } => "must not match the schema in `not`".to_owned(),
        ValidationErrorKind::FalseSchema => "is not allowed here".to_owned(),
        ValidationErrorKind::Custom { message, .. } => message.clone(),
        ValidationErrorKind::BacktrackLimitExceeded { error } => {
            format!("could not be checked against its pattern: {error}")
        }
        ValidationErrorKind::RegexEngineFailure { message } => {
            format!("could not be checked against its pattern: {message}")
        }
        ValidationErrorKind::Referencing(error) => {
            format!("could not be checked: the schema's reference failed: {error}")
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            format!("has unknown keys: {}", unexpected.join(", "))
        }
        ValidationErrorKind::Required { property } => format!("must have {property}"),
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            format!("must match one of the schemas in `{}`", kind.keyword())
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            "must match exactly one of the schemas in `oneOf`".to_owned()
        }
        ValidationErrorKind::PropertyNames { error } => {
            format!(
                "has a bad key name: {}",
                rule(error.kind(), error.instance())
            )
        }
    }
}

/// The rule for unknown `key`: the keys accepted, and the likely one meant.
pub(crate) fn unknown_key_rule(key: &str, accepted: &[String]) -> String {
    if accepted.is_empty() {
        return "unknown key (it accepts none)".to_owned();
    }
    let listed = list(accepted.iter().cloned());
    match cjm_core::did_you_mean(key, accepted.iter().map(String::as_str)) {
        Some(meant) => format!("unknown key; did you mean `{meant}`? (accepted: {listed})"),
        None => format!("unknown key (accepted: {listed})"),
    }
}

fn type_kinds(kind: &TypeKind) -> Vec<JsonType> {
    match kind {
        TypeKind::Single(json_type) => vec![*json_type],
        TypeKind::Multiple(set) => set.iter().collect(),
    }
}

/// `must be an integer, found a string`.
fn type_rule(expected: &[JsonType], instance: &Value) -> String {
    // `null` reads best last: "a string or null".
    let (nulls, others): (Vec<JsonType>, Vec<JsonType>) = expected
        .iter()
        .partition(|json_type| **json_type == JsonType::Null);
    let expected: Vec<&str> = others.into_iter().chain(nulls).map(a_type).collect();
    let found = match instance {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("must be {}, found {found}", expected.join(" or "))
}

fn a_type(json_type: JsonType) -> &'static str {
    match json_type {
        JsonType::Null => "null",
        JsonType::Boolean => "a boolean",
        JsonType::Integer => "an integer",
        JsonType::Number => "a number",
        JsonType::String => "a string",
        JsonType::Array => "an array",
        JsonType::Object => "an object",
    }
}

/// `a`, `a, b, c`, or the first [`MAX_LISTED`] and how many more.
fn list(items: impl ExactSizeIterator<Item = String>) -> String {
    let total = items.len();
    let mut shown: Vec<String> = items.take(MAX_LISTED).collect();
    if total > MAX_LISTED {
        shown.push(format!("… ({} more)", total - MAX_LISTED));
    }
    shown.join(", ")
}

fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `value` as compact JSON, cut to [`MAX_SHOWN_VALUE`] characters.
pub(crate) fn show_value(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_SHOWN_VALUE {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_SHOWN_VALUE - 1).collect();
    cut.push('…');
    cut
}

/// The segments of JSON pointer `pointer` into `root`, each an index or a key
/// according to what it walks through (a key may look like a number).
fn segments(pointer: &str, root: &Value) -> Vec<Segment> {
    let mut current = Some(root);
    let mut out = Vec::new();
    for raw in pointer.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        let segment = match (current, token.parse::<usize>()) {
            (Some(Value::Array(items)), Ok(index)) => {
                current = items.get(index);
                Segment::Index(index)
            }
            (node, _) => {
                current = node.and_then(|node| node.get(&token));
                Segment::Key(token)
            }
        };
        out.push(segment);
    }
    out
}

/// The pointer to the schema object a keyword's pointer ends in.
fn parent_pointer(pointer: &str) -> &str {
    pointer.rsplit_once('/').map_or("", |(parent, _)| parent)
}
