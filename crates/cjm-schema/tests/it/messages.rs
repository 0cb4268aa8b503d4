//! The text of errors and hints, and the reference's error shape.

use std::time::{Duration, SystemTime};

use cjm_core::{ErrorCategory, PluginError, PluginErrorKind};
use serde_json::json;

use super::{case, object, whisper};
use cjm_schema::{ConfigSchema, Strictness};

#[test]
fn an_error_names_the_plugin_and_puts_each_problem_on_its_own_line() {
    let error = whisper()
        .validate(&case("three_problems"), Strictness::Strict)
        .unwrap_err();
    insta::assert_snapshot!(error, @r#"
    invalid configuration for plugin `whisper`
      - /model: must be one of "tiny", "base", "large-v3" (got "huge")
      - /threshold: must be ≤ 1.0 (got 2)
      - /languages/1: must be a string, found a number (got 7)
    "#);
    insta::assert_snapshot!(error.hint(), @"fix /model, /threshold, /languages/1 to fit the plugin's config schema");
}

#[test]
fn the_hint_for_unknown_keys_mentions_lenient_mode() {
    let error = whisper()
        .validate(&case("problems_and_unknown_key"), Strictness::Strict)
        .unwrap_err();
    insta::assert_snapshot!(error, @r#"
    invalid configuration for plugin `whisper`
      - /beam_size: must be ≤ 10 (got 11)
      - /colour: unknown key (accepted: device, model, threshold, beam_size, language, prompt, word_timestamps, languages, model_dir) (got "blue")
    "#);
    insta::assert_snapshot!(error.hint(), @"fix /beam_size to fit the plugin's config schema; remove the unknown key /colour (the keys it accepts are listed above), or use lenient mode, which drops unknown keys with a warning");
}

#[test]
fn an_error_becomes_the_references_plugin_config_error() {
    let error = whisper()
        .validate(&case("problems_and_unknown_key"), Strictness::Strict)
        .unwrap_err();
    assert_eq!(error.fields_invalid(), ["beam_size", "colour"]);

    let plugin_error = error.clone().into_plugin_error(Some("whisper-a1b2c3"));
    assert_eq!(plugin_error.kind(), Some(PluginErrorKind::Config));
    assert_eq!(plugin_error.category(), ErrorCategory::UserInput);
    insta::assert_snapshot!(plugin_error, @r#"invalid configuration for plugin `whisper` (instance `whisper-a1b2c3`): /beam_size: must be ≤ 10 (got 11); /colour: unknown key (accepted: device, model, threshold, beam_size, language, prompt, word_timestamps, languages, model_dir) (got "blue")"#);

    let at = SystemTime::UNIX_EPOCH + Duration::from_hours(498_831);
    let job_error = PluginError::from(error).to_job_error(at);
    assert_eq!(job_error.category, ErrorCategory::UserInput);
    assert!(job_error.retriable);
    assert_eq!(
        job_error.fields_invalid,
        Some(vec!["beam_size".into(), "colour".into()])
    );
    assert_eq!(job_error.plugin_name.as_deref(), Some("whisper"));
    assert!(
        job_error
            .original_exc_repr
            .starts_with("PluginConfigError('/beam_size: must be")
    );
}

#[test]
fn fields_invalid_are_top_level_keys() {
    let schema = json!({
        "type": "object",
        "properties": {"a/b": {"type": "array", "items": {"type": "integer"}}},
        "required": ["c"],
    });
    let schema = ConfigSchema::compile("odd", schema.as_object()).unwrap();
    let error = schema
        .validate(&object(json!({"a/b": [1, "x", "y"]})), Strictness::Strict)
        .unwrap_err();
    assert_eq!(error.fields_invalid(), ["a/b", "c"]);
}

#[test]
fn a_schema_error_says_where_the_schema_is_wrong() {
    let schema = json!({"type": "object", "properties": {"model": {"type": "strin"}}});
    let error = ConfigSchema::compile("whisper", schema.as_object()).unwrap_err();
    insta::assert_snapshot!(error, @r#"config schema of plugin `whisper` is not a valid JSON Schema at /properties/model/type: must be one of "array", "boolean", "integer", "null", "number", "object", "string" (got "strin")"#);
    insta::assert_snapshot!(error.hint(), @"the schema comes from the plugin's manifest (`code.config_schema`); fix the plugin's config class or its manifest, then regenerate the manifest of `whisper`");

    let schema = json!({"type": "object", "properties": {"lang": {"pattern": "^[a-z"}}});
    let error = ConfigSchema::compile("whisper", schema.as_object()).unwrap_err();
    insta::assert_snapshot!(error, @r#"config schema of plugin `whisper` is not a valid JSON Schema at /properties/lang/pattern: must be a valid regex (got "^[a-z")"#);

    let schema = json!({"type": "object", "properties": {"lang": {"$ref": "file:///etc/passwd"}}});
    let error = ConfigSchema::compile("whisper", schema.as_object()).unwrap_err();
    insta::assert_snapshot!(error, @"config schema of plugin `whisper` is not a valid JSON Schema: Resource 'file:///etc/passwd' is not present in a registry and retrieving it failed: refusing to fetch `file:///etc/passwd`: a config schema must not refer to other documents");
}
