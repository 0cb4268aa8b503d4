use cjm_core::{
    HashError, canonical_json, hash_bytes, hash_dict_canonical, hash_file, verify_hash,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/canonical_json.json")).unwrap()
}

#[track_caller]
fn check(case: &Value) {
    let input = &case["input"];
    let expected = case["canonical"].as_str().unwrap();
    if expected != "{}" || input.as_object().is_some_and(serde_json::Map::is_empty) {
        assert_eq!(canonical_json(input), expected, "canonical text of {input}");
    }
    assert_eq!(hash_dict_canonical(input), case["hash"], "hash of {input}");
}

#[test]
fn canonical_hashes_match_the_reference_byte_for_byte() {
    let fixture = fixture();
    let documents = fixture["documents"].as_array().unwrap();
    assert!(documents.len() >= 200, "{} documents", documents.len());
    for case in documents {
        check(case);
    }
}

#[test]
fn every_value_python_finds_false_hashes_like_an_empty_dict() {
    let fixture = fixture();
    for case in fixture["falsy"].as_array().unwrap() {
        check(case);
    }
}

#[test]
fn floats_print_as_python_repr_at_every_magnitude() {
    let fixture = fixture();
    for case in fixture["floats"].as_array().unwrap() {
        let value = Value::Array(vec![case["value"].clone()]);
        let expected = format!("[{}]", case["repr"].as_str().unwrap());
        assert_eq!(canonical_json(&value), expected);
    }
}

#[test]
fn byte_and_file_hashes_match_the_reference() {
    let fixture = fixture();
    let scratch = std::env::temp_dir().join(format!("cjm-core-hash-{}", std::process::id()));
    for case in fixture["bytes"].as_array().unwrap() {
        let content = match case["hex"].as_str() {
            Some(hex) => (0..hex.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
            None => case["repeat"]
                .as_str()
                .unwrap()
                .repeat(case["times"].as_u64().unwrap() as usize)
                .into_bytes(),
        };
        let expected = case["hash"].as_str().unwrap();
        assert_eq!(hash_bytes(&content), expected);
        assert!(verify_hash(&content, expected).unwrap());
        fs_err::write(&scratch, &content).unwrap();
        assert_eq!(hash_file(&scratch).unwrap(), expected);
    }
    fs_err::remove_file(&scratch).unwrap();
}

#[test]
fn verify_hash_rejects_other_content_and_uppercase_digests() {
    let expected = hash_bytes(b"abc");
    assert!(!verify_hash(b"abd", &expected).unwrap());
    assert!(!verify_hash(b"abc", &expected.to_uppercase().replace("SHA256", "sha256")).unwrap());
}

#[test]
fn verify_hash_says_what_is_wrong_with_a_bad_expected_hash() {
    let malformed = verify_hash(b"", "deadbeef").unwrap_err();
    assert!(matches!(malformed, HashError::Malformed { .. }));
    assert_eq!(
        malformed.to_string(),
        "malformed hash `deadbeef`, expected `<algorithm>:<hex digest>`"
    );
    let unsupported = verify_hash(b"", "md5:d41d8cd98f00b204e9800998ecf8427e").unwrap_err();
    assert_eq!(unsupported.to_string(), "unsupported hash algorithm `md5`");
    assert!(unsupported.hint().unwrap().contains("sha256"));
}

#[test]
fn hashing_a_missing_file_names_the_file() {
    let missing = std::env::temp_dir().join("cjm-core-no-such-file");
    let error = hash_file(&missing).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("failed to hash `{}`", missing.display())
    );
    let source = std::error::Error::source(&error).unwrap();
    assert!(
        source.to_string().contains("cjm-core-no-such-file"),
        "{source}"
    );
}
