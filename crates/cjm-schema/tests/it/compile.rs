//! Schemas that cannot be compiled, each an error naming the plugin.

use serde_json::{Value, json};

use super::{check, object};
use cjm_schema::{ConfigSchema, SchemaError};

#[track_caller]
fn compile_error(schema: &Value) -> SchemaError {
    let error = ConfigSchema::compile("whisper", schema.as_object()).unwrap_err();
    assert_eq!(error.plugin, "whisper");
    assert!(error.to_string().contains("plugin `whisper`"), "{error}");
    error
}

#[test]
fn a_schema_that_breaks_the_meta_schema_is_an_error_naming_plugin_and_place() {
    let error = compile_error(&json!({
        "type": "object",
        "properties": {"model": {"type": "strin"}},
    }));
    assert_eq!(error.location, "/properties/model/type");
    let error = compile_error(&json!({
        "type": "object",
        "properties": {"beam_size": {"type": "integer", "minimum": "one"}},
    }));
    assert_eq!(error.location, "/properties/beam_size/minimum");
}

#[test]
fn a_pattern_that_is_not_a_regular_expression_is_an_error() {
    let error = compile_error(&json!({
        "type": "object",
        "properties": {"language": {"type": "string", "pattern": "^[a-z"}},
    }));
    assert_eq!(error.location, "/properties/language/pattern", "{error:?}");
}

#[test]
fn a_schema_that_cannot_describe_an_object_is_an_error() {
    let error = compile_error(&json!({"type": "array", "items": {"type": "string"}}));
    assert_eq!(error.location, "/type");
    assert!(error.detail.contains("\"array\""), "{error}");
    let allowed = json!({"type": ["object", "null"], "properties": {}});
    ConfigSchema::compile("whisper", allowed.as_object()).unwrap();
}

#[test]
fn external_references_are_never_fetched() {
    for target in ["file:///etc/passwd", "https://example.invalid/schema.json"] {
        let error = compile_error(&json!({
            "type": "object",
            "properties": {"model": {"$ref": target}},
        }));
        assert!(error.detail.contains(target), "{error}");
    }
}

#[test]
fn local_references_and_older_drafts_work_offline() {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "definitions": {"size": {"type": "integer", "minimum": 1}},
        "properties": {"beam_size": {"$ref": "#/definitions/size"}},
    });
    let schema = ConfigSchema::compile("whisper", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({"beam_size": 0})),
        &["/beam_size: must be ≥ 1 (got 0)"],
    );
}

#[test]
fn formats_are_annotations_not_checks() {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"endpoint": {"type": "string", "format": "uri"}},
    });
    let schema = ConfigSchema::compile("remote", schema.as_object()).unwrap();
    check(&schema, &object(json!({"endpoint": "not a uri"})), &[]);
}
