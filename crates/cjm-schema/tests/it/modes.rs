//! Strict and lenient modes, defaults, and schemas that accept anything.

use serde_json::{Map, Value, json};

use super::{case, check, fixture, object, whisper};
use cjm_schema::{ConfigSchema, Strictness};

#[test]
fn lenient_mode_drops_unknown_keys_with_a_warning_naming_each() {
    let validated = whisper()
        .validate(&case("unknown_keys"), Strictness::Lenient)
        .unwrap();
    assert!(!validated.config.contains_key("zeta"));
    assert!(!validated.config.contains_key("alpha"));
    assert_eq!(validated.warnings.len(), 2);
    assert!(validated.warnings[0].starts_with("dropped `zeta`: unknown key (accepted: device, "));
    assert!(validated.warnings[1].starts_with("dropped `alpha`: unknown key"));
}

#[test]
fn lenient_mode_still_reports_every_other_problem() {
    let error = whisper()
        .validate(&case("problems_and_unknown_key"), Strictness::Lenient)
        .unwrap_err();
    let lines: Vec<String> = error.problems.iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["/beam_size: must be ≤ 10 (got 11)"]);
}

#[test]
fn strict_mode_is_the_default() {
    assert_eq!(Strictness::default(), Strictness::Strict);
}

#[test]
fn defaults_are_the_ones_the_reference_extracts() {
    let defaults = whisper().defaults();
    assert_eq!(Value::Object(defaults.clone()), fixture()["defaults"]);
    let order: Vec<&String> = defaults.keys().collect();
    let reference: Vec<&String> = fixture()["defaults"].as_object().unwrap().keys().collect();
    assert_eq!(order, reference);
}

#[test]
fn missing_properties_get_their_defaults_and_set_ones_keep_their_values() {
    let validated = whisper()
        .validate(
            &object(json!({"beam_size": 3, "language": null})),
            Strictness::Strict,
        )
        .unwrap();
    assert!(validated.warnings.is_empty());
    let mut expected = object(fixture()["defaults"].clone());
    expected.insert("beam_size".into(), json!(3));
    assert_eq!(validated.config, expected);
    // The user's keys come first, in their order; then the defaults, in the schema's.
    let keys: Vec<&str> = validated.config.keys().map(String::as_str).collect();
    assert_eq!(&keys[..3], ["beam_size", "language", "model"]);
}

#[test]
fn an_empty_config_becomes_the_defaults() {
    let validated = whisper().validate(&Map::new(), Strictness::Strict).unwrap();
    assert_eq!(Value::Object(validated.config), fixture()["defaults"]);
}

#[test]
fn a_default_that_breaks_its_own_schema_is_passed_through_without_blame() {
    // `model_dir: str = None` gives `"type": "string", "default": null`.
    assert_eq!(
        fixture()["schema"]["properties"]["model_dir"],
        json!({"type": "string", "default": null})
    );
    let validated = whisper().validate(&Map::new(), Strictness::Strict).unwrap();
    assert_eq!(validated.config["model_dir"], Value::Null);
    // The same null, set by the user, is theirs to fix.
    check(
        &whisper(),
        &case("null_for_string"),
        &["/model_dir: must be a string, found null (got null)"],
    );
}

#[test]
fn a_property_without_a_default_stays_missing() {
    let validated = whisper().validate(&Map::new(), Strictness::Strict).unwrap();
    assert!(!validated.config.contains_key("device"));
}

#[test]
fn no_schema_or_an_empty_one_accepts_any_object_as_it_is() {
    let config = object(json!({"anything": [1, {"goes": null}], "at": "all"}));
    for schema in [None, Some(&Map::new())] {
        let schema = ConfigSchema::compile("free", schema).unwrap();
        assert!(schema.defaults().is_empty());
        for mode in [Strictness::Strict, Strictness::Lenient] {
            let validated = schema.validate(&config, mode).unwrap();
            assert_eq!(validated.config, config);
            assert!(validated.warnings.is_empty());
        }
    }
}

#[test]
fn a_schema_without_properties_accepts_any_key_as_the_reference_does() {
    let schema = json!({"type": "object", "description": "no fields declared"});
    let schema = ConfigSchema::compile("free", schema.as_object()).unwrap();
    check(&schema, &object(json!({"x": 1})), &[]);
}

#[test]
fn empty_properties_accept_no_key() {
    let schema = json!({"type": "object", "properties": {}});
    let schema = ConfigSchema::compile("bare", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({"x": 1})),
        &["/x: unknown key (it accepts none) (got 1)"],
    );
}

#[test]
fn a_schema_that_admits_other_keys_has_no_unknown_keys() {
    let schema = json!({
        "type": "object",
        "properties": {"model": {"type": "string"}},
        "additionalProperties": {"type": "integer"},
    });
    let schema = ConfigSchema::compile("open", schema.as_object()).unwrap();
    check(&schema, &object(json!({"model": "tiny", "extra": 1})), &[]);
    check(
        &schema,
        &object(json!({"extra": "one"})),
        &[r#"/extra: must be an integer, found a string (got "one")"#],
    );
}

#[test]
fn additional_properties_false_at_the_top_reports_each_unknown_key_once() {
    let schema = json!({
        "type": "object",
        "properties": {"model": {"type": "string"}},
        "additionalProperties": false,
    });
    let schema = ConfigSchema::compile("closed", schema.as_object()).unwrap();
    check(
        &schema,
        &object(json!({"modl": "tiny"})),
        &["/modl: unknown key; did you mean `model`? (accepted: model) (got \"tiny\")"],
    );
    let validated = schema
        .validate(&object(json!({"modl": "tiny"})), Strictness::Lenient)
        .unwrap();
    assert!(validated.config.is_empty());
    assert_eq!(validated.warnings.len(), 1);
}

// A compiled schema is shared between threads (the manager caches one per plugin).
const _: () = {
    const fn shareable<T: Send + Sync + Clone>() {}
    shareable::<ConfigSchema>();
};

#[test]
fn one_compiled_schema_validates_on_several_threads_at_once() {
    let schema = whisper();
    let verdicts: Vec<(bool, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let schema = schema.clone();
                s.spawn(move || {
                    let good = object(json!({"model": "tiny", "beam_size": i + 1}));
                    let bad = object(json!({"beam_size": "many"}));
                    (
                        schema.validate(&good, Strictness::Strict).is_ok(),
                        schema.validate(&bad, Strictness::Strict).is_err(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(verdicts, vec![(true, true); 4]);
}
