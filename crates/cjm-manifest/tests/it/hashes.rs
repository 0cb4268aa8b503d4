use cjm_manifest::compute_config_schema_hash;
use serde_json::Value;

use crate::read_fixture;

#[test]
fn config_schema_hashes_match_the_reference() {
    let cases: Vec<Value> = serde_json::from_str(&read_fixture("schema_hashes.json")).unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let schema = case["schema"].as_object();
        assert_eq!(
            compute_config_schema_hash(schema),
            case["hash"].as_str().unwrap(),
            "{}",
            case["schema"]
        );
    }
}

#[test]
fn no_schema_and_an_empty_schema_hash_alike() {
    let empty = serde_json::Map::new();
    assert_eq!(
        compute_config_schema_hash(None),
        compute_config_schema_hash(Some(&empty))
    );
}
