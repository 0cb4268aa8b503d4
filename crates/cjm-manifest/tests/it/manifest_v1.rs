use cjm_manifest::{FormatVersion, Manifest};
use serde_json::json;

use crate::{cases, fixture};

#[test]
fn legacy_manifests_upgrade_to_exactly_what_the_reference_writes() {
    for path in cases("v1", ".upgraded.json") {
        let expected = fs_err::read_to_string(path.with_extension("upgraded.json")).unwrap();
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(
            manifest.format_version,
            FormatVersion::V1,
            "{}",
            path.display()
        );
        assert_eq!(manifest.to_json_string(), expected, "{}", path.display());
    }
}

#[test]
fn a_legacy_manifest_reads_into_the_same_typed_view() {
    let manifest = Manifest::load(fixture("v1/typical.json")).unwrap();
    assert_eq!(
        manifest.install.python_path,
        "/home/u/miniforge3/envs/cjm-nltk/bin/python"
    );
    assert_eq!(manifest.install.env_vars["NLTK_DATA"], "/data/nltk");
    assert_eq!(manifest.code.class_name, "NLTKPlugin");
    assert!(manifest.code.config_schema.is_some());
    // The reference's shim ignores these even when a flat file has them.
    assert_eq!(manifest.code.regenerated_at, None);
    assert_eq!(manifest.drift_tracking.config_schema_hash, None);
    assert!(manifest.overrides.is_empty());
}

#[test]
fn keys_with_no_place_in_v2_are_kept_aside_and_dropped_on_upgrade() {
    let manifest = Manifest::load(fixture("v1/typical.json")).unwrap();
    assert_eq!(
        manifest.legacy_fields.keys().collect::<Vec<_>>(),
        [
            "type",
            "category",
            "regenerated_at",
            "overrides",
            "config_schema_hash"
        ]
    );
    assert_eq!(manifest.legacy_fields["category"], json!("text"));
    assert!(!manifest.to_json_string().contains("category"));
}
