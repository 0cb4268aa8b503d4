//! Agreement with the reference's verdicts on the fixture's configs: its
//! manager's unknown-key check and its plugin-side field check.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

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

/// The reference stops at a config's first invalid field; cjm reports every one. So
/// cjm must reject each field the reference rejects, and each field it rejects beyond
/// those must be invalid on its own too (checked by validating that field alone).
#[test]
fn cjm_rejects_every_field_the_reference_rejects_and_each_extra_one_is_invalid_alone() {
    let mut extras_seen = 0;
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
            "{name}: cjm rejects {ours:?}, the reference {reference:?}"
        );
        for extra in ours.difference(&reference) {
            extras_seen += 1;
            let alone: Map<String, Value> = config
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k == extra)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let fields = whisper()
                .validate(&alone, Strictness::Strict)
                .map_or_else(|e| e.fields_invalid(), |_| Vec::new());
            assert!(
                fields.contains(extra),
                "{name}: cjm rejects {extra}, but {alone:?} alone validates"
            );
        }
    }
    assert!(extras_seen > 0, "no case has more than one invalid field");
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
