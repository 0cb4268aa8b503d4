use std::collections::BTreeMap;

use cjm_manifest::{Backend, DeclaredResources, PluginSpec, PluginsFile};
use serde_json::Value;

use crate::read_fixture;

fn corpus() -> Vec<Value> {
    let all: Value = serde_json::from_str(&read_fixture("validation.json")).unwrap();
    all["plugins_yaml"].as_array().unwrap().clone()
}

fn reference_case(name: &str) -> String {
    corpus()
        .into_iter()
        .find(|case| case["case"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `text` is rejected with exactly `expected`, one problem a line.
#[track_caller]
fn check(text: &str, expected: &[&str]) {
    let error = PluginsFile::from_yaml_str(text, "plugins.yaml").unwrap_err();
    let problems: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
    assert_eq!(problems, expected, "{text}");
}

#[test]
fn every_file_the_reference_rejects_is_rejected() {
    for case in corpus() {
        let theirs = case["reference_errors"].as_array().unwrap();
        let ours = PluginsFile::from_yaml_str(case["text"].as_str().unwrap(), "plugins.yaml");
        if !theirs.is_empty() {
            assert!(ours.is_err(), "case {} accepted", case["case"]);
        }
    }
}

#[test]
fn the_reference_format_parses_to_the_expected_entries() {
    let file =
        PluginsFile::from_yaml_str(&reference_case("valid_reference_style"), "p.yaml").unwrap();
    assert_eq!(
        file.plugins,
        [
            PluginSpec {
                name: "cjm-transcription-plugin-whisper".into(),
                env_name: "cjm-whisper".into(),
                package: "git+https://github.com/cj-mills/cjm-transcription-plugin-whisper.git".into(),
                env_file: Some("https://raw.githubusercontent.com/cj-mills/cjm-transcription-plugin-whisper/main/environment.yml".into()),
                interface_libs: vec!["git+https://github.com/cj-mills/cjm-transcription-plugin-system.git".into()],
                line: Some(2),
                ..PluginSpec::default()
            },
            PluginSpec {
                name: "cjm-text-plugin-nltk".into(),
                env_name: "cjm-nltk".into(),
                package: "cjm-text-plugin-nltk".into(),
                python_version: Some("3.11".into()),
                line: Some(8),
                ..PluginSpec::default()
            },
        ]
    );
    // An env_file only conda reads: the reference's backend.
    assert_eq!(file.plugins[0].backend(), Backend::Conda);
    assert_eq!(file.plugins[1].backend(), Backend::Uv);
}

#[test]
fn cjm_extensions_parse_to_the_expected_entry() {
    let file = PluginsFile::from_yaml_str(
        r#"
plugins:
  - name: ocr
    env_name: cjm-ocr
    package: cjm-ocr-plugin==1.2
    python_version: "3.12"
    backend: uv
    requirements: ["pillow>=10", "numpy<3"]
    index_url: https://download.pytorch.org/whl/cpu
    extra_index_urls: [https://example.invalid/simple]
    find_links: [./wheelhouse]
    no_index: true
    env_vars:
      OMP_NUM_THREADS: "4"
      HF_HUB_OFFLINE: "1"
    resources:
      ram_mb: 4096
      vram_mb: 0
      gpu: false
  - name: dev
    env_name: dev
    package: -e ./plugins/dev
    backend: python
    python_path: /usr/bin/python3
"#,
        "plugins.yaml",
    )
    .unwrap();
    let ocr = file.get("ocr").unwrap();
    assert_eq!(ocr.backend(), Backend::Uv);
    assert_eq!(ocr.requirements, ["pillow>=10", "numpy<3"]);
    assert_eq!(
        ocr.index_url.as_deref(),
        Some("https://download.pytorch.org/whl/cpu")
    );
    assert_eq!(ocr.extra_index_urls, ["https://example.invalid/simple"]);
    assert_eq!(ocr.find_links, ["./wheelhouse"]);
    assert!(ocr.no_index);
    assert!(!file.get("dev").unwrap().no_index);
    assert_eq!(
        ocr.env_vars,
        BTreeMap::from([
            ("HF_HUB_OFFLINE".to_owned(), "1".to_owned()),
            ("OMP_NUM_THREADS".to_owned(), "4".to_owned()),
        ])
    );
    assert_eq!(
        ocr.resources,
        DeclaredResources {
            ram_mb: Some(4096),
            vram_mb: Some(0),
            gpu: false
        }
    );
    let dev = file.get("dev").unwrap();
    assert_eq!(dev.backend(), Backend::Python);
    assert_eq!(dev.python_path.as_deref(), Some("/usr/bin/python3"));
}

#[test]
fn broken_files_are_rejected_with_every_problem_its_path_and_line() {
    check(
        &reference_case("python_version_as_float"),
        &[r#"plugins[0].python_version (line 5): expected a string like "3.11", found 3.1"#],
    );
    check(
        &reference_case("not_a_mapping"),
        &[r#"line 1: expected a mapping with a `plugins` list at the top level, found ["a", "b"]"#],
    );
    check(
        &reference_case("empty"),
        &["expected a mapping with a `plugins` list at the top level, found null"],
    );
    check(
        &reference_case("plugins_missing"),
        &["plugins (line 1): required key is missing"],
    );
    check(
        &reference_case("plugins_not_a_list"),
        &[r#"plugins (line 1): expected a list, found {"a": 1}"#],
    );
    check(
        &reference_case("entries_broken"),
        &[
            r#"plugins[0] (line 2): expected a mapping, found "just-a-string""#,
            "plugins[1].name (line 3): required field is empty",
            "plugins[1].env_name (line 4): expected a string, found 5",
            "plugins[1].package (line 3): required field is missing",
            "plugins[1] (line 3): must declare either `env_file` or `python_version` to say how the environment is created",
            r#"plugins[2].interface_libs (line 9): expected a list of strings, found "lib""#,
            r#"plugins[3].name (line 10): duplicate plugin name "dup" (first at plugins[2], line 5)"#,
        ],
    );
    check(
        "plugins:\n  - {name: a, env_name: a, package: a, python_version: '3.11', backend: pip}\n",
        &[r#"plugins[0].backend (line 2): expected one of "uv", "conda", "python", found "pip""#],
    );
    check(
        "plugins:\n  - {name: a, env_name: a, package: a, backend: uv, env_file: env.yml}\n",
        &[
            "plugins[0].env_file (line 2): backend uv cannot read a conda environment file; use backend conda, or python_version",
        ],
    );
    check(
        "plugins:\n  - {name: a, env_name: a, package: a, python_version: '3.11', no_index: 'yes'}\n",
        &[r#"plugins[0].no_index (line 2): expected true or false, found "yes""#],
    );
    check(
        "plugins:\n  - {name: a, env_name: a, package: a, backend: python}\n",
        &[
            "plugins[0].python_path (line 2): required field is missing (backend python runs an existing interpreter)",
        ],
    );
    check(
        "plugins:\n  - {name: a, env_name: a, package: a, python_version: '3.11', python_path: /usr/bin/python3}\n",
        &["plugins[0].python_path (line 2): only used by backend python, not uv"],
    );
    check(
        "plugins:
  - name: a
    env_name: a
    package: a
    python_version: 'py3'
    requirements: [numpy, 3, '']
    index_url: ''
    env_vars: {GOOD: x, 1BAD: y, COUNT: 3}
    resources: {ram_mb: -1, vram_mb: 1.5, gpu: 'yes', vram_gb: 2}
",
        &[
            r#"plugins[0].python_version (line 5): expected a string like "3.11", found "py3""#,
            "plugins[0].requirements[1] (line 6): expected a non-empty string, found 3",
            r#"plugins[0].requirements[2] (line 6): expected a non-empty string, found """#,
            r#"plugins[0].index_url (line 7): expected a non-empty string, found """#,
            "plugins[0].env_vars.1BAD (line 8): not a variable name (letters, digits and `_`, not starting with a digit)",
            "plugins[0].env_vars.COUNT (line 8): expected a string (quote numbers and booleans), found 3",
            "plugins[0].resources.ram_mb (line 9): expected a whole number of MiB, found -1",
            "plugins[0].resources.vram_mb (line 9): expected a whole number of MiB, found 1.5",
            r#"plugins[0].resources.gpu (line 9): expected a boolean, found "yes""#,
            r#"plugins[0].resources (line 9): expected one of the keys ram_mb, vram_mb, gpu, found "vram_gb""#,
        ],
    );
}

#[test]
fn yaml_that_does_not_parse_is_an_error_that_names_the_file() {
    let error = PluginsFile::from_yaml_str("plugins: [\n", "broken.yaml").unwrap_err();
    assert_eq!(error.to_string(), "`broken.yaml` is not valid YAML");
}

#[test]
fn duplicate_keys_in_one_entry_are_a_yaml_error_rather_than_a_silent_last_wins() {
    let error = PluginsFile::from_yaml_str(
        "plugins:\n  - {name: a, name: b, env_name: a, package: a, python_version: '3.11'}\n",
        "dup.yaml",
    )
    .unwrap_err();
    assert_eq!(error.to_string(), "`dup.yaml` is not valid YAML");
}

#[test]
fn install_overrides_parse_and_bad_values_are_rejected() {
    let file = PluginsFile::from_yaml_str(
        r#"
plugins:
  - name: a
    env_name: a
    package: a
    python_version: "3.11"
    ignore_requires_python: true
    allow_missing_interface: true
    constraints: constraints.txt
  - name: b
    env_name: b
    package: ./plugins/b
    python_version: "3.11"
    constraints: ["libdemo<2"]
"#,
        "plugins.yaml",
    )
    .unwrap();
    assert!(file.warnings.is_empty(), "known keys: {:?}", file.warnings);
    let a = file.get("a").unwrap();
    assert_eq!(a.ignore_requires_python, Some(true));
    assert!(a.allow_missing_interface);
    assert_eq!(
        a.constraints,
        Some(cjm_manifest::Constraints::File("constraints.txt".into()))
    );
    let b = file.get("b").unwrap();
    assert_eq!(b.ignore_requires_python, None, "left to cjm.yaml");
    assert!(!b.allow_missing_interface);
    assert_eq!(
        b.constraints,
        Some(cjm_manifest::Constraints::Pins(vec!["libdemo<2".into()]))
    );
    check(
        "plugins:\n  - name: a\n    env_name: a\n    package: a\n    python_version: \"3.11\"\n    ignore_requires_python: 1\n    constraints: {x: 1}\n",
        &[
            "plugins[0].ignore_requires_python (line 6): expected true or false, found 1",
            "plugins[0].constraints (line 7): expected a constraints file path or a list of pins, found {\"x\": 1}",
        ],
    );
}
