use cjm_core::{JobErrorContext, RaisedException, TracebackPolicy};
use serde_json::Value;

use crate::{errors_fixture, fixture_time};

/// Every number as a float. The reference's dataclasses keep whatever a plugin
/// passed, so `needed=1000` is written `1000`; the Rust fields are `f64` and write
/// `1000.0`. JSON readers see the same number.
fn floats(value: &Value) -> Value {
    match value {
        Value::Number(number) => serde_json::json!(number.as_f64().unwrap()),
        Value::Array(items) => items.iter().map(floats).collect(),
        Value::Object(entries) => entries
            .iter()
            .map(|(key, item)| (key.clone(), floats(item)))
            .collect(),
        other => other.clone(),
    }
}

/// Maps one reported exception the way the fixture's case says and compares with
/// what the reference's `map_bare_exception_to_job_error` produced.
#[track_caller]
fn check(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let raised: RaisedException = serde_json::from_value(case["raised"].clone()).unwrap();
    let policy: TracebackPolicy = serde_json::from_value(case["traceback_policy"].clone()).unwrap();
    let mut context =
        JobErrorContext::new(fixture_time(&case["occurred_at"])).with_traceback_policy(policy);
    context.plugin_name = serde_json::from_value(case["plugin_name"].clone()).unwrap();
    context.plugin_instance_id =
        serde_json::from_value(case["plugin_instance_id"].clone()).unwrap();

    assert_eq!(raised.category().as_str(), case["category"], "{name}");
    let job_error = serde_json::to_value(raised.to_job_error(&context)).unwrap();
    assert_eq!(floats(&job_error), floats(&case["job_error"]), "{name}");
}

#[test]
fn reported_exceptions_map_to_the_reference_job_error() {
    let fixture = errors_fixture();
    let cases = fixture["classification"].as_array().unwrap();
    assert!(cases.len() >= 250, "{} cases", cases.len());
    for case in cases {
        check(case);
    }
}

#[test]
fn the_fixture_covers_every_bare_exception_the_reference_maps() {
    let fixture = errors_fixture();
    let covered: Vec<&str> = fixture["classification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["raised"]["mro"][0].as_str().unwrap())
        .collect();
    for class in fixture["bare_exception_category_map"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            covered.contains(&class.as_str()),
            "no case raises {class} itself"
        );
    }
}

#[test]
fn a_worker_report_round_trips_through_json() {
    let fixture = errors_fixture();
    for case in fixture["classification"].as_array().unwrap() {
        let raised: RaisedException = serde_json::from_value(case["raised"].clone()).unwrap();
        let again = serde_json::to_value(&raised).unwrap();
        assert_eq!(floats(&again), floats(&case["raised"]), "{}", case["name"]);
    }
}

#[test]
fn a_minimal_worker_report_needs_only_type_message_and_repr() {
    let raised: RaisedException = serde_json::from_str(
        r#"{"type_name": "builtins.MemoryError", "message": "", "repr": "MemoryError()"}"#,
    )
    .unwrap();
    assert_eq!(raised.category().as_str(), "resource");
    assert!(raised.retriable());
}
