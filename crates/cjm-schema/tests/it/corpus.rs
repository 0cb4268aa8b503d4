//! Bad configs, each reported with the right path, value and rule: the
//! reference's own schema first, then hand-written schemas for what its
//! generator cannot express.

use serde_json::json;

use super::{case, check, object, whisper};
use cjm_schema::{ConfigSchema, Strictness};

#[track_caller]
fn check_case(name: &str, expected: &[&str]) {
    check(&whisper(), &case(name), expected);
}

#[test]
fn valid_configs_pass() {
    for name in [
        "empty",
        "all_valid",
        "integral_float_for_integer",
        "null_for_nullable",
    ] {
        check_case(name, &[]);
    }
}

#[test]
fn a_value_of_the_wrong_type_names_both_types() {
    check_case(
        "wrong_type",
        &[r#"/beam_size: must be an integer, found a string (got "five")"#],
    );
    check_case(
        "boolean_for_integer",
        &["/beam_size: must be an integer, found a boolean (got true)"],
    );
    check_case(
        "null_for_string",
        &["/model_dir: must be a string, found null (got null)"],
    );
}

#[test]
fn a_number_out_of_range_names_the_bound() {
    check_case("above_maximum", &["/threshold: must be ≤ 1.0 (got 1.5)"]);
    check_case("below_minimum", &["/beam_size: must be ≥ 1 (got 0)"]);
}

#[test]
fn a_value_outside_the_enum_lists_the_allowed_ones() {
    check_case(
        "not_in_enum",
        &[r#"/model: must be one of "tiny", "base", "large-v3" (got "huge")"#],
    );
}

#[test]
fn a_string_that_misses_its_pattern_or_length_says_which() {
    check_case(
        "pattern_mismatch",
        &[r#"/language: must match ^[a-z]{2}$ (got "english")"#],
    );
    check_case(
        "too_long",
        &[r#"/prompt: must be at most 20 characters long (got "xxxxxxxxxxxxxxxxxxxxx")"#],
    );
}

#[test]
fn an_unknown_key_lists_the_accepted_ones_and_the_likely_typo() {
    let accepted = "device, model, threshold, beam_size, language, prompt, word_timestamps, languages, model_dir";
    check_case(
        "unknown_key",
        &[&format!(
            "/beam_sise: unknown key; did you mean `beam_size`? (accepted: {accepted}) (got 3)"
        )],
    );
    check_case(
        "unknown_keys",
        &[
            &format!("/zeta: unknown key (accepted: {accepted}) (got 1)"),
            &format!("/alpha: unknown key (accepted: {accepted}) (got 2)"),
        ],
    );
}

#[test]
fn a_bad_array_item_is_reported_at_its_index() {
    check_case(
        "array_item_wrong_type",
        &["/languages/2: must be a string, found a number (got 3)"],
    );
}

#[test]
fn every_problem_is_listed_in_schema_order_with_unknown_keys_last() {
    check_case(
        "three_problems",
        &[
            r#"/model: must be one of "tiny", "base", "large-v3" (got "huge")"#,
            "/threshold: must be ≤ 1.0 (got 2)",
            "/languages/1: must be a string, found a number (got 7)",
        ],
    );
    let error = whisper()
        .validate(&case("problems_and_unknown_key"), Strictness::Strict)
        .unwrap_err();
    let paths: Vec<&str> = error.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["/beam_size", "/colour"]);
}

#[test]
fn exclusive_bounds_and_multiples_are_reported() {
    let schema = json!({
        "type": "object",
        "properties": {
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "step": {"type": "integer", "multipleOf": 8},
        },
    });
    let schema = ConfigSchema::compile("resize", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({"ratio": 0})),
        &["/ratio: must be > 0 (got 0)"],
    );
    check(
        &schema,
        &object(json!({"ratio": 1})),
        &["/ratio: must be < 1 (got 1)"],
    );
    check(
        &schema,
        &object(json!({"ratio": 0.5, "step": 12})),
        &["/step: must be a multiple of 8 (got 12)"],
    );
}

#[test]
fn a_missing_required_field_is_reported_without_a_value() {
    let schema = json!({
        "type": "object",
        "properties": {
            "api_url": {"type": "string"},
            "timeout": {"type": "number", "default": 30},
        },
        "required": ["api_url", "timeout"],
    });
    let schema = ConfigSchema::compile("remote", schema.as_object()).unwrap();
    check(&schema, &object(json!({})), &["/api_url: is required"]);
    let error = schema
        .validate(&object(json!({})), Strictness::Strict)
        .unwrap_err();
    assert_eq!(error.problems[0].value, None);
    assert_eq!(error.problems[0].keyword, "required");
    // `timeout` is required too, and its default satisfies it.
    let validated = schema
        .validate(
            &object(json!({"api_url": "http://localhost"})),
            Strictness::Strict,
        )
        .unwrap();
    assert_eq!(validated.config["timeout"], 30);
}

#[test]
fn a_nested_object_field_is_reported_at_its_full_path() {
    let schema = json!({
        "type": "object",
        "properties": {
            "vad": {
                "type": "object",
                "properties": {
                    "min_silence_ms": {"type": "integer", "minimum": 0},
                    "threshold": {"type": "number"},
                },
                "required": ["threshold"],
                "additionalProperties": false,
            },
        },
    });
    let schema = ConfigSchema::compile("whisper", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({"vad": {"min_silence_ms": -5, "treshold": 0.5}})),
        &[
            "/vad/min_silence_ms: must be ≥ 0 (got -5)",
            "/vad/threshold: is required",
            "/vad/treshold: unknown key; did you mean `threshold`? \
             (accepted: min_silence_ms, threshold) (got 0.5)",
        ],
    );
}

#[test]
fn an_alternative_of_the_right_type_is_checked_as_if_alone() {
    // How pydantic writes `Optional[int] = Field(None, ge=1)`.
    let schema = json!({
        "type": "object",
        "properties": {
            "batch": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": null},
        },
    });
    let schema = ConfigSchema::compile("batcher", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({"batch": 0})),
        &["/batch: must be ≥ 1 (got 0)"],
    );
    check(
        &schema,
        &object(json!({"batch": "8"})),
        &[r#"/batch: must be an integer or null, found a string (got "8")"#],
    );
    check(&schema, &object(json!({"batch": null})), &[]);
}

#[test]
fn keys_that_look_like_numbers_or_hold_slashes_get_exact_paths() {
    let schema = json!({
        "type": "object",
        "properties": {
            "10": {"type": "integer"},
            "a/b~c": {"type": "array", "items": {"type": "boolean"}},
        },
    });
    let schema = ConfigSchema::compile("odd", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({"10": "x", "a/b~c": [true, 1]})),
        &[
            r#"/10: must be an integer, found a string (got "x")"#,
            "/a~1b~0c/1: must be a boolean, found a number (got 1)",
        ],
    );
}

#[test]
fn a_long_value_is_cut_short_in_the_message_but_kept_whole() {
    let prompt = "x".repeat(100);
    let error = whisper()
        .validate(&object(json!({"prompt": prompt})), Strictness::Strict)
        .unwrap_err();
    let line = error.problems[0].to_string();
    assert!(line.ends_with("xxxxx…)"), "{line}");
    assert!(line.chars().count() < 120, "{line}");
    assert_eq!(error.problems[0].value, Some(json!(prompt)));
}

#[test]
fn other_rules_read_as_words_too() {
    let schema = json!({
        "type": "object",
        "properties": {
            "mode": {"const": "fast"},
            "name": {"type": ["string", "null"], "minLength": 3},
            "tags": {"type": "array", "minItems": 2, "uniqueItems": true},
            "env": {"type": "object", "propertyNames": {"pattern": "^[A-Z_]+$"}},
        },
    });
    let schema = ConfigSchema::compile("misc", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({
            "mode": "slow",
            "name": 5,
            "tags": ["a", "a"],
            "env": {"path": "/bin"},
        })),
        &[
            r#"/mode: must be "fast" (got "slow")"#,
            "/name: must be a string or null, found a number (got 5)",
            r#"/tags: must not contain the same item twice (got ["a","a"])"#,
            "/env/path: key name must match ^[A-Z_]+$",
        ],
    );
    check(
        &schema,
        &object(json!({"name": "ab", "tags": ["a"]})),
        &[
            r#"/name: must be at least 3 characters long (got "ab")"#,
            r#"/tags: must have at least 2 items (got ["a"])"#,
        ],
    );
}
