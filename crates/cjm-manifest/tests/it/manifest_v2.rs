use cjm_manifest::{FormatVersion, Manifest};
use serde_json::{Value, json};

use crate::{cases, fixture, read_fixture};

#[test]
fn manifests_written_by_the_reference_rewrite_byte_for_byte() {
    for path in cases("v2", "") {
        let written = fs_err::read_to_string(&path).unwrap();
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.format_version, FormatVersion::V2);
        assert_eq!(manifest.to_json_string(), written, "{}", path.display());
    }
}

#[test]
fn hand_written_manifests_are_normalised_as_the_reference_normalises_them() {
    for path in cases("v2_inputs", ".expected.json") {
        let expected_path = path.with_extension("expected.json");
        let expected = fs_err::read_to_string(&expected_path).unwrap();
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.to_json_string(), expected, "{}", path.display());
    }
}

#[test]
fn the_full_manifest_reads_into_its_typed_fields() {
    let manifest = Manifest::load(fixture("v2/full.json")).unwrap();
    assert_eq!(manifest.install.conda_env, "cjm-whisper");
    assert_eq!(manifest.install.env_vars["LANG_\u{e9}"], "fran\u{e7}ais");
    assert_eq!(manifest.code.class_name, "WhisperLocalPlugin");
    let taxonomy = manifest.code.taxonomy.as_ref().unwrap();
    assert_eq!(taxonomy.domain, "speech_to_text");
    assert!(manifest.code.resources.as_ref().unwrap().requires_gpu);
    assert_eq!(manifest.code.worker_env.as_ref().unwrap().len(), 2);
    assert_eq!(manifest.overrides["ratio"], json!(0.75));
    let meta = manifest.to_plugin_meta();
    assert_eq!(meta.category, "Speech To Text");
    assert_eq!(meta.name, "cjm-transcription-plugin-whisper");
}

#[test]
fn a_refreshed_schema_hash_equals_the_one_the_reference_wrote() {
    let mut manifest = Manifest::load(fixture("v2/full.json")).unwrap();
    let written = manifest.drift_tracking.config_schema_hash.take();
    manifest.refresh_config_schema_hash();
    assert_eq!(manifest.drift_tracking.config_schema_hash, written);
}

#[test]
fn unknown_keys_survive_a_read_and_write_in_their_sections_and_order_resources_included() {
    let mut value: Value = serde_json::from_str(&read_fixture("v2/full.json")).unwrap();
    value["zz_top"] = json!({"kept": true});
    value["aa_top"] = json!(1);
    value["install"]["venv_kind"] = json!("uv");
    value["code"]["entry_point"] = json!("whisper = pkg:Plugin");
    value["drift_tracking"]["live_hash"] = json!(null);
    // The amounts the reference's schedulers read from the raw block.
    value["code"]["resources"]["min_gpu_vram_mb"] = json!(6144);
    let manifest = Manifest::from_json_value(&value, "extra.json").unwrap();
    let resources = manifest.code.resources.as_ref().unwrap();
    assert_eq!(resources.extra.get("min_gpu_vram_mb"), Some(&json!(6144)));
    assert_eq!(
        manifest.extra.keys().collect::<Vec<_>>(),
        ["zz_top", "aa_top"]
    );
    let written: Value = serde_json::from_str(&manifest.to_json_string()).unwrap();
    assert_eq!(written, value);
    let keys: Vec<&String> = written.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "format_version",
            "install",
            "code",
            "drift_tracking",
            "overrides",
            "zz_top",
            "aa_top"
        ]
    );
    let code_keys: Vec<&String> = written["code"].as_object().unwrap().keys().collect();
    assert_eq!(code_keys.last().unwrap().as_str(), "entry_point");
}

#[test]
fn writing_to_a_file_gives_the_reference_bytes_and_leaves_no_temporary_file() {
    let directory = std::env::temp_dir().join(format!("cjm-manifest-it-{}", std::process::id()));
    fs_err::create_dir_all(&directory).unwrap();
    let target = directory.join("whisper.json");
    Manifest::load(fixture("v2/full.json"))
        .unwrap()
        .write(&target)
        .unwrap();
    assert_eq!(
        fs_err::read_to_string(&target).unwrap(),
        read_fixture("v2/full.json")
    );
    assert_eq!(fs_err::read_dir(&directory).unwrap().count(), 1);
    fs_err::remove_dir_all(&directory).unwrap();
}

#[test]
fn a_missing_manifest_is_an_error_that_names_the_file() {
    let error = Manifest::load("/nonexistent/whisper.json").unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to read `/nonexistent/whisper.json`"
    );
}

#[test]
fn text_that_is_not_json_is_an_error_that_names_the_file() {
    let error = Manifest::from_json_str("{", "broken.json").unwrap_err();
    assert_eq!(error.to_string(), "`broken.json` is not valid JSON");
}
