//! cjm-schema's integration tests, one module per area. `tests/fixtures/whisper.json`
//! was written by the Python reference (`gen_schemas.py` beside it): a schema from
//! its `dataclass_to_jsonschema`, the defaults it extracts, and named configs with
//! its verdicts on them. The tests only read it.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns read fixtures; a malformed fixture should fail the test"
)]

mod compile;
mod corpus;
mod messages;
mod modes;
mod reference;

use std::sync::OnceLock;

use cjm_schema::{ConfigSchema, Strictness};
use serde_json::{Map, Value};

/// `tests/fixtures/whisper.json`.
fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/whisper.json");
        serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
    })
}

/// The reference's schema for `WhisperConfig`, compiled for plugin `whisper`.
fn whisper() -> ConfigSchema {
    ConfigSchema::compile("whisper", fixture()["schema"].as_object()).unwrap()
}

/// The config of the fixture's case `name`.
fn case(name: &str) -> Map<String, Value> {
    fixture()["cases"][name]["config"]
        .as_object()
        .unwrap_or_else(|| panic!("no case `{name}` in whisper.json"))
        .clone()
}

/// `value`, which must be a JSON object, as a map.
fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Asserts that strict validation of `config` against `schema` reports exactly
/// `expected`, each problem as its message line shows it (path, rule, value), in
/// order; an empty `expected` means the config passes.
#[track_caller]
fn check(schema: &ConfigSchema, config: &Map<String, Value>, expected: &[&str]) {
    let got: Vec<String> = match schema.validate(config, Strictness::Strict) {
        Ok(_) => Vec::new(),
        Err(error) => {
            assert_eq!(error.plugin, schema.plugin());
            assert!(!error.problems.is_empty(), "an error with no problems");
            error.problems.iter().map(ToString::to_string).collect()
        }
    };
    assert_eq!(got, expected, "config: {}", Value::Object(config.clone()));
}
