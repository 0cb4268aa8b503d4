//! Agreement with the reference's verdicts on the fixture's configs: its
//! manager's unknown-key check and its plugin-side field check.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{fixture, whisper};
use cjm_schema::Strictness;

/// Each case's name, config and the fields the reference rejects it for (empty
/// when it accepts the config).
fn cases() -> Vec<(&'static str, &'static Value, BTreeSet<String>)> {
    fixture()["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, case)| {
            let mut fields = BTreeSet::new();
            if let Some(keys) = case["unknown_keys"].as_array() {
                fields.extend(keys.iter().map(|key| key.as_str().unwrap().to_owned()));
            }
            if let Some(message) = case["field_error"].as_str() {
                // `threshold: 1.5 is greater than maximum 1.0`
                fields.insert(message.split_once(':').unwrap().0.to_owned());
            }
            (name.as_str(), &case["config"], fields)
        })
        .collect()
}

#[test]
fn every_config_the_reference_rejects_is_rejected_for_the_same_fields() {
    for (name, config, reference) in cases() {
        if reference.is_empty() {
            continue;
        }
        let error = whisper()
            .validate(config.as_object().unwrap(), Strictness::Strict)
            .expect_err(name);
        let ours: BTreeSet<String> = error.fields_invalid().into_iter().collect();
        assert!(
            ours.is_superset(&reference),
            "{name}: {ours:?} vs {reference:?}"
        );
    }
}

#[test]
fn unknown_keys_are_the_ones_the_reference_finds() {
    for (name, config, _) in cases() {
        let reference = &fixture()["cases"][name]["unknown_keys"];
        let lenient = whisper()
            .validate(config.as_object().unwrap(), Strictness::Lenient)
            .map(|validated| validated.warnings.len())
            .unwrap_or_default();
        let mut ours: Vec<String> =
            match whisper().validate(config.as_object().unwrap(), Strictness::Strict) {
                Ok(_) => Vec::new(),
                Err(error) => error
                    .problems
                    .iter()
                    .filter(|problem| problem.is_unknown_key())
                    .map(|problem| problem.path[1..].to_owned())
                    .collect(),
            };
        ours.sort();
        match reference.as_array() {
            Some(keys) => {
                let keys: Vec<&str> = keys.iter().map(|key| key.as_str().unwrap()).collect();
                assert_eq!(ours, keys, "{name}");
                // In lenient mode, the reference logs them; we return one warning each.
                if !fixture()["cases"][name]["field_error"].is_string() {
                    assert_eq!(lenient, keys.len(), "{name}");
                }
            }
            None => assert!(ours.is_empty(), "{name}: {ours:?}"),
        }
    }
}

/// The reference checks no types; a value it lets through to crash (or
/// misbehave) in the plugin is stopped here instead.
#[test]
fn what_we_reject_beyond_the_reference_is_only_wrong_types() {
    let stricter: Vec<&str> = cases()
        .into_iter()
        .filter(|(_, _, reference)| reference.is_empty())
        .filter_map(|(name, config, _)| {
            let error = whisper()
                .validate(config.as_object().unwrap(), Strictness::Strict)
                .err()?;
            assert!(
                error
                    .problems
                    .iter()
                    .all(|problem| problem.keyword == "type"),
                "{name}: {error}"
            );
            Some(name)
        })
        .collect();
    assert_eq!(
        stricter,
        [
            "wrong_type",
            "boolean_for_integer",
            "null_for_string",
            "array_item_wrong_type"
        ]
    );
}
