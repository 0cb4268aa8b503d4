use cjm_manifest::{Manifest, validate_manifest};
use serde_json::Value;

use crate::read_fixture;

fn corpus() -> Vec<Value> {
    let all: Value = serde_json::from_str(&read_fixture("validation.json")).unwrap();
    all["manifests"].as_array().unwrap().clone()
}

fn case(name: &str) -> Value {
    corpus()
        .into_iter()
        .find(|case| case["case"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))["manifest"]
        .clone()
}

#[track_caller]
fn check(name: &str, expected: &[&str]) {
    let manifest = case(name);
    let problems: Vec<String> = validate_manifest(&manifest)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems, expected, "case {name}");
}

#[test]
fn a_manifest_is_valid_exactly_when_the_reference_says_so() {
    for case in corpus() {
        let ours = validate_manifest(&case["manifest"]);
        let theirs = case["reference_errors"].as_array().unwrap();
        assert_eq!(
            ours.is_empty(),
            theirs.is_empty(),
            "case {}: {ours:?}",
            case["case"]
        );
    }
}

#[test]
fn broken_manifests_are_rejected_with_every_problem_and_its_path() {
    check("valid_v2", &[]);
    check("valid_v1", &[]);
    check("not_an_object", &["expected a JSON object, found [1, 2]"]);
    check(
        "unknown_format_version",
        &[
            r#"format_version: unrecognized format version "3.0"; expected "2.0", or no format_version for a legacy v1.0 manifest"#,
        ],
    );
    check(
        "numeric_format_version",
        &[
            r#"format_version: unrecognized format version 2.0; expected "2.0", or no format_version for a legacy v1.0 manifest"#,
        ],
    );
    check(
        "v2_sections_missing",
        &[
            "install: required section is missing",
            "code: required section is missing",
            "code.name: required field is missing",
            "code.version: required field is missing",
            "code.description: required field is missing",
            "code.module: required field is missing",
            "code.class: required field is missing",
            "code.interface: required field is missing",
            "install.python_path: required field is missing",
        ],
    );
    check(
        "v2_sections_wrong_types",
        &[
            "install: expected an object, found []",
            r#"code: expected an object, found "x""#,
            "drift_tracking: expected an object or null, found 1",
            "overrides: expected an object or null, found []",
            "code.name: required field is missing",
            "code.version: required field is missing",
            "code.description: required field is missing",
            "code.module: required field is missing",
            "code.class: required field is missing",
            "code.interface: required field is missing",
            "install.python_path: required field is missing",
        ],
    );
    check(
        "v2_fields_wrong",
        &[
            "code.name: required field is empty",
            "code.version: expected a string, found 1.5",
            "install.python_path: expected a string, found 5",
            r#"code.interface: "NoDots" is not a dotted name (expected `module.subpackage.ClassName`)"#,
            "install.conda_env: expected a string, found null",
            "install.db_path: expected a string, found 1",
            "install.installer_version: expected a string, found false",
            "install.env_vars: expected an object, found []",
            "code.regenerated_at: expected a string or null, found 3",
            "code.config_schema.properties: expected an object, found []",
            "code.taxonomy.domain: required field is empty",
            "code.taxonomy.role: expected a string, found 7",
            r#"code.taxonomy.interface_fqcn: "x.Y" disagrees with code.interface "NoDots""#,
            r#"code.resources.requires_gpu: expected a boolean, found "yes""#,
            r#"code.resources.platforms: expected a list, found "linux""#,
            "code.resources.accelerators[1]: expected a string, found 1",
            "drift_tracking.config_schema_hash: expected a string or null, found 1",
        ],
    );
    check(
        "v2_taxonomy_disagrees",
        &[
            "code.config_schema: expected an object or null, found []",
            r#"code.taxonomy.interface_fqcn: "a.C" disagrees with code.interface "a.B""#,
        ],
    );
    check(
        "v1_fields_wrong",
        &[
            "name: required field is missing",
            "version: expected a string, found 1",
            // An empty description is fine (issue 10): the reference's installer
            // writes one for every plugin that declares none.
            "python_path: required field is missing",
            r#"interface: "Flat" is not a dotted name (expected `module.subpackage.ClassName`)"#,
            "category: expected a string, found 3",
            "category_override: expected a string, found null",
            r#"env_vars: expected an object, found "A=1""#,
            r#"config_schema: expected an object or null, found "schema""#,
            r#"taxonomy: expected an object or null, found "t""#,
            "resources: expected an object or null, found []",
        ],
    );
}

#[test]
fn an_empty_description_is_valid_but_a_missing_one_is_not() {
    // Issue 10: the reference's validator rejects the manifests its own installer
    // writes for plugins without a description.
    let mut manifest = case("valid_v2");
    manifest["code"]["description"] = "".into();
    assert_eq!(validate_manifest(&manifest), vec![]);
    manifest["code"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    let problems: Vec<String> = validate_manifest(&manifest)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems, ["code.description: required field is missing"]);
}

#[test]
fn values_the_typed_reader_refuses_are_reported_too() {
    let manifest: Value = serde_json::json!({
        "format_version": "2.0",
        "install": {"python_path": "/p", "env_vars": {"A": "1", "N": 2}},
        "code": {"name": "n", "version": "1", "description": "d", "module": "m",
                 "class": "C", "interface": "a.B", "worker_env": {"X": 1}},
    });
    let problems: Vec<String> = validate_manifest(&manifest)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "install.env_vars.N: expected a string, found 2",
            r#"code.worker_env: expected a list or null, found {"X": 1}"#,
        ]
    );
}

#[test]
fn loading_with_validation_names_the_file_and_lists_every_problem() {
    let directory = std::env::temp_dir().join(format!("cjm-manifest-val-{}", std::process::id()));
    fs_err::create_dir_all(&directory).unwrap();
    let path = directory.join("broken.json");
    fs_err::write(&path, case("v2_taxonomy_disagrees").to_string()).unwrap();
    let error = Manifest::load_validated(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "invalid manifest `{}`:\n  \
             - code.config_schema: expected an object or null, found []\n  \
             - code.taxonomy.interface_fqcn: \"a.C\" disagrees with code.interface \"a.B\"",
            path.display()
        )
    );
    assert_eq!(error.problems().len(), 2);
    assert!(error.hint().is_some());
    // The typed read alone only minds types.
    let error = Manifest::load(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "invalid manifest `{}`:\n  - code.config_schema: expected an object or null, found []",
            path.display()
        )
    );
    fs_err::remove_dir_all(&directory).unwrap();
}
