//! `cjm.yaml` and layered configuration, checked against what the reference's
//! `load_config` gives for the same files, environment and working directory
//! (`fixtures/config.json`, from `fixtures/gen_config.py`).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use cjm_core::{
    CjmConfig, CjmYamlError, CondaType, ConfigWarningKind, LoadOptions, RuntimeMode,
    current_platform, load_config,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/config.json")).unwrap()
}

fn case(section: &str, name: &str) -> Value {
    fixture()[section]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["name"] == name)
        .unwrap_or_else(|| panic!("no {section} case {name} in config.json"))
        .clone()
}

/// A fresh directory under the system's temp dir, removed on drop.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "cjm-core-config-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        fs_err::create_dir_all(&dir).unwrap();
        // The reference resolves the yaml's folder, so compare against the real path.
        let root = fs_err::canonicalize(&dir).unwrap();
        fs_err::create_dir_all(root.join("home")).unwrap();
        Self { root }
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.root.join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, bytes).unwrap();
    }

    /// Replaces the root in `text` with `<root>`, as the fixture spells it.
    fn redact(&self, text: &str) -> String {
        text.replace(self.root.to_str().unwrap(), "<root>")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.root);
    }
}

fn env_from(vars: HashMap<String, String>) -> impl Fn(&str) -> Option<String> {
    move |name| vars.get(name).cloned()
}

/// Lays out a fixture case and loads it the way the generator ran the reference.
fn load_case(scratch: &Scratch, case: &Value) -> (Result<CjmConfig, CjmYamlError>, PathBuf) {
    for (rel, content) in case["files"].as_object().unwrap() {
        let text = content.as_str().unwrap();
        if case["latin1"] == true {
            let bytes: Vec<u8> = text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap())
                .collect();
            scratch.write(rel, &bytes);
        } else {
            scratch.write(rel, text.as_bytes());
        }
    }
    if let Some(links) = case["symlinks"].as_object() {
        for (link, target) in links {
            std::os::unix::fs::symlink(
                scratch.root.join(target.as_str().unwrap()),
                scratch.root.join(link),
            )
            .unwrap();
        }
    }
    let cwd = scratch.root.join(case["cwd"].as_str().unwrap_or("."));
    fs_err::create_dir_all(&cwd).unwrap();
    let cwd = cwd.components().collect::<PathBuf>();

    let mut vars = HashMap::from([(
        "HOME".to_owned(),
        scratch.root.join("home").display().to_string(),
    )]);
    if let Some(env) = case["env"].as_object() {
        for (key, value) in env {
            vars.insert(key.clone(), value.as_str().unwrap().to_owned());
        }
    }
    let cli = &case["cli"];
    let path = |key: &str| cli[key].as_str().map(PathBuf::from);
    let options = LoadOptions {
        config_path: path("config_path"),
        data_dir: path("data_dir"),
        conda_prefix: path("conda_prefix"),
        conda_type: cli["conda_type"].as_str().map(|s| s.parse().unwrap()),
    };
    (load_config(&options, &env_from(vars), &cwd), cwd)
}

/// The reference's path with `<root>` filled in; a relative one (the reference
/// leaves env, CLI and default paths relative to the process's cwd) anchored at cwd.
fn expected_path(value: &Value, scratch: &Scratch, cwd: &Path) -> Option<PathBuf> {
    let text = value
        .as_str()?
        .replace("<root>", scratch.root.to_str().unwrap());
    Some(cwd.join(text))
}

fn shown(path: Option<&PathBuf>, scratch: &Scratch) -> Value {
    path.map_or(Value::Null, |p| {
        scratch.redact(&p.display().to_string()).into()
    })
}

#[track_caller]
fn check_good(name: &str, warnings: &[&str]) {
    let case = case("good", name);
    let scratch = Scratch::new();
    let (loaded, cwd) = load_case(&scratch, &case);
    let config = loaded.unwrap_or_else(|err| panic!("{name}: {err}"));
    let expected = &case["expected"];
    let platform = fixture()["platform"].as_str().unwrap().to_owned();

    // Compare as the reference's dump, paths anchored, so a failure shows both whole.
    let anchor = |v: &Value| shown(expected_path(v, &scratch, &cwd).as_ref(), &scratch);
    let want = serde_json::json!({
        "mode": expected["runtime"]["mode"],
        "conda_type": expected["runtime"]["conda_type"],
        "prefix": anchor(&expected["runtime"]["prefix"]),
        "binaries": expected["runtime"]["binaries"].as_object().unwrap().iter()
            .map(|(k, v)| (k.clone(), anchor(v))).collect::<serde_json::Map<_, _>>(),
        "data_dir": anchor(&expected["data_dir"]),
        "plugins_config": anchor(&expected["plugins_config"]),
        "models_dir": anchor(&expected["models_dir"]),
        "substrate": expected["substrate"],
        "manifests_dir": anchor(&expected["manifests_dir"]),
        "plugin_data_dir": anchor(&expected["plugin_data_dir"]),
        "logs_dir": anchor(&expected["logs_dir"]),
        "conda_binary_path": anchor(&expected["conda_binary_path"]),
    });
    let got = serde_json::json!({
        "mode": config.runtime.mode.as_str(),
        "conda_type": config.runtime.conda_type.as_str(),
        "prefix": shown(config.runtime.prefix.as_ref(), &scratch),
        "binaries": config.runtime.binaries.iter()
            .map(|(k, v)| (k.clone(), shown(Some(v), &scratch))).collect::<serde_json::Map<_, _>>(),
        "data_dir": shown(Some(&config.data_dir), &scratch),
        "plugins_config": shown(Some(&config.plugins_config), &scratch),
        "models_dir": shown(config.models_dir.as_ref(), &scratch),
        "substrate": {
            "drift_detection": config.substrate.drift_detection,
            "empirical_tracking": config.substrate.empirical_tracking,
        },
        "manifests_dir": shown(Some(&config.manifests_dir()), &scratch),
        "plugin_data_dir": shown(Some(&config.plugin_data_dir()), &scratch),
        "logs_dir": shown(Some(&config.logs_dir()), &scratch),
        "conda_binary_path": shown(config.conda_binary_path_for(&platform).as_ref(), &scratch),
    });
    assert_eq!(got, want, "{name}");

    let got_warnings: Vec<String> = config
        .warnings
        .iter()
        .map(|w| scratch.redact(&w.to_string()))
        .collect();
    assert_eq!(got_warnings, warnings, "{name}: warnings");
}

macro_rules! good {
    ($($name:ident $(=> [$($warning:literal),* $(,)?])?;)*) => {
        $(
            #[test]
            fn $name() {
                check_good(stringify!($name), &[$($($warning),*)?]);
            }
        )*

        const GOOD_CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

good! {
    no_file_gives_defaults;
    empty_file_is_an_empty_map;
    null_document_is_an_empty_map;
    comments_only_file_is_an_empty_map;
    full_file_with_relative_paths;
    absolute_paths_are_kept;
    relative_paths_resolve_against_the_yaml_folder_not_the_cwd;
    yaml_folder_symlinks_are_resolved;
    tilde_is_not_expanded;
    empty_prefix_means_unset;
    null_prefix_means_unset;
    empty_data_dir_is_the_yaml_folder;
    null_substrate_keeps_defaults;
    unknown_substrate_toggles_are_ignored;
    yaml_1_1_booleans_are_booleans;
    unknown_keys_are_ignored => [
        "<root>/cjm.yaml:1:1: unknown key `backend` ignored",
        "<root>/cjm.yaml:4:3: unknown key `runtime.channel` ignored",
    ];
    later_duplicate_key_wins => [
        "<root>/cjm.yaml:2:1: key `data_dir` repeated; this later value wins",
    ];
    prefix_without_binaries_gives_prefix_bin_micromamba;
    binary_for_another_platform_falls_back_to_prefix;
    merge_keys_and_anchors_work => ["<root>/cjm.yaml:1:1: unknown key `defaults` ignored"];
    flow_style_maps_work;
    byte_order_mark_is_skipped;
    env_overrides_yaml;
    relative_env_paths_stay_relative_to_the_cwd;
    empty_env_values_count_as_unset;
    cli_overrides_env_and_yaml;
    cli_config_path_replaces_the_cwd_file;
}

#[test]
fn every_reference_case_has_a_test() {
    let fixture = fixture();
    for (section, listed) in [("good", GOOD_CASES), ("broken", BROKEN_CASES)] {
        let names: Vec<&str> = fixture[section]
            .as_array()
            .unwrap()
            .iter()
            .map(|case| case["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, listed, "{section} cases");
    }
}

#[track_caller]
fn check_broken(name: &str, expected: &str) {
    let case = case("broken", name);
    let scratch = Scratch::new();
    let mut laid = serde_json::json!({"files": {"cjm.yaml": case["content"]}});
    laid["latin1"] = case["latin1"].clone();
    let (loaded, _) = load_case(&scratch, &laid);
    let err = loaded.expect_err(name);
    assert_eq!(scratch.redact(&err.to_string()), expected, "{name}");
}

macro_rules! broken {
    ($($name:ident => $expected:literal;)*) => {
        $(
            #[test]
            fn $name() {
                check_broken(stringify!($name), $expected);
            }
        )*

        const BROKEN_CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

broken! {
    bad_yaml_syntax => "<root>/cjm.yaml:3:13: invalid YAML: illegal placement of ':' indicator";
    bad_indentation => "<root>/cjm.yaml:2:13: invalid YAML: mapping values are not allowed in this context";
    two_documents => "<root>/cjm.yaml:3:1: invalid YAML: found a second YAML document; the file must hold exactly one";
    unknown_conda_type => "<root>/cjm.yaml:2:15: runtime.conda_type: expected one of micromamba, miniforge, conda, found \"mamba\"";
    unknown_mode => "<root>/cjm.yaml:2:9: runtime.mode: expected one of local, system, found \"LOCAL\"";
    list_where_a_map_belongs => "<root>/cjm.yaml:2:3: runtime: expected a map, found a list";
    top_level_list => "<root>/cjm.yaml:1:1: expected a map of settings, found a list";
    top_level_scalar => "<root>/cjm.yaml:1:1: expected a map of settings, found \"just text\"";
    number_where_a_path_belongs => "<root>/cjm.yaml:1:11: data_dir: expected a path string, found 42\n<root>/cjm.yaml:2:13: models_dir: expected a path string, found a list";
    null_path => "<root>/cjm.yaml:1:15: plugins_config: expected a path string, found null";
    string_toggle => "<root>/cjm.yaml:2:20: substrate.drift_detection: expected true or false, found \"false\"";
    null_toggle => "<root>/cjm.yaml:2:21: substrate.empirical_tracking: expected true or false, found null";
    binaries_not_a_map => "<root>/cjm.yaml:2:13: runtime.binaries: expected a map, found \"micromamba\"";
    binary_not_a_path => "<root>/cjm.yaml:3:16: runtime.binaries.linux-x64: expected a path string, found 7\n<root>/cjm.yaml:4:5: runtime.binaries: expected a platform key such as linux-x64, found 1";
    many_problems_at_once => "<root>/cjm.yaml:2:9: runtime.mode: expected one of local, system, found \"global\"\n<root>/cjm.yaml:3:15: runtime.conda_type: expected one of micromamba, miniforge, conda, found 3\n<root>/cjm.yaml:4:11: runtime.prefix: expected a path string, found a list\n<root>/cjm.yaml:5:11: data_dir: expected a path string, found true\n<root>/cjm.yaml:6:12: substrate: expected a map, found a list";
    non_utf8 => "<root>/cjm.yaml:1:14: not valid UTF-8 (byte 0xe9)";
}

/// Loads `cjm.yaml` (if given) from a scratch cwd with `HOME` and `vars` set.
fn load_in(
    scratch: &Scratch,
    yaml: Option<&str>,
    vars: &[(&str, &str)],
    options: &LoadOptions,
) -> Result<CjmConfig, CjmYamlError> {
    if let Some(yaml) = yaml {
        scratch.write("cjm.yaml", yaml.as_bytes());
    }
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    load_config(options, &env_from(vars), &scratch.root)
}

#[test]
fn a_config_path_given_on_the_command_line_must_exist() {
    let scratch = Scratch::new();
    let options = LoadOptions {
        config_path: Some("missing.yaml".into()),
        ..LoadOptions::default()
    };
    let err = load_in(&scratch, None, &[("HOME", "/h")], &options).unwrap_err();
    assert!(matches!(err, CjmYamlError::NotFound { .. }), "{err:?}");
    assert_eq!(
        scratch.redact(&err.to_string()),
        "config file `<root>/missing.yaml` does not exist"
    );
}

#[test]
fn a_config_path_that_is_a_folder_is_a_read_error() {
    let scratch = Scratch::new();
    let options = LoadOptions {
        config_path: Some("home".into()),
        ..LoadOptions::default()
    };
    let err = load_in(&scratch, None, &[("HOME", "/h")], &options).unwrap_err();
    assert!(matches!(err, CjmYamlError::Read { .. }), "{err:?}");
    assert_eq!(
        scratch.redact(&err.to_string()),
        "failed to read config file `<root>/home`"
    );
}

#[test]
fn an_invalid_conda_type_variable_is_named_in_the_error() {
    let scratch = Scratch::new();
    let vars = [("HOME", "/h"), ("CJM_CONDA_TYPE", "mamba")];
    let err = load_in(&scratch, None, &vars, &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"environment variable CJM_CONDA_TYPE: expected one of micromamba, miniforge, conda, found "mamba""#
    );
}

#[test]
fn a_bad_conda_type_variable_fails_even_when_the_command_line_overrides_it() {
    // The reference parses CJM_CONDA_TYPE before looking at --conda-type, so a bad
    // variable fails even when the command line would override it.
    let scratch = Scratch::new();
    let vars = [("HOME", "/h"), ("CJM_CONDA_TYPE", "mamba")];
    let options = LoadOptions {
        conda_type: Some(CondaType::Micromamba),
        ..LoadOptions::default()
    };
    let err = load_in(&scratch, None, &vars, &options).unwrap_err();
    assert!(matches!(
        err,
        CjmYamlError::InvalidEnv {
            var: "CJM_CONDA_TYPE",
            ..
        }
    ));
}

#[test]
fn without_home_the_default_data_dir_is_an_error() {
    let scratch = Scratch::new();
    let err = load_in(&scratch, None, &[], &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no home directory for the default data_dir `~/.cjm`: HOME is not set"
    );
}

#[test]
fn without_home_a_configured_data_dir_is_enough() {
    let scratch = Scratch::new();
    let config = load_in(
        &scratch,
        Some("data_dir: d\n"),
        &[],
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(config.data_dir, scratch.root.join("d"));
    let config = load_in(
        &scratch,
        None,
        &[("CJM_DATA_DIR", "/x")],
        &LoadOptions::default(),
    );
    assert_eq!(config.unwrap().data_dir, Path::new("/x"));
}

#[test]
fn the_config_records_which_file_it_read() {
    let scratch = Scratch::new();
    let none = load_in(&scratch, None, &[("HOME", "/h")], &LoadOptions::default()).unwrap();
    assert_eq!(none.source, None);
    let some = load_in(
        &scratch,
        Some(""),
        &[("HOME", "/h")],
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(some.source, Some(scratch.root.join("cjm.yaml")));
}

#[test]
fn quoted_yaml_1_1_booleans_and_y_stay_strings() {
    let scratch = Scratch::new();
    let yaml = "data_dir: 'off'\nmodels_dir: y\nplugins_config: \"yes\"\n";
    let config = load_in(&scratch, Some(yaml), &[], &LoadOptions::default()).unwrap();
    assert_eq!(config.data_dir, scratch.root.join("off"));
    assert_eq!(config.models_dir, Some(scratch.root.join("y")));
    assert_eq!(config.plugins_config, scratch.root.join("yes"));

    let err = load_in(
        &scratch,
        Some("data_dir: off\n"),
        &[],
        &LoadOptions::default(),
    );
    assert_eq!(
        scratch.redact(&err.unwrap_err().to_string()),
        "<root>/cjm.yaml:1:11: data_dir: expected a path string, found false"
    );
}

#[test]
fn the_runtime_mode_and_the_warnings_kinds_are_exposed() {
    let scratch = Scratch::new();
    let yaml = "runtime:\n  mode: local\nextra: 1\nextra: 2\n";
    let config = load_in(
        &scratch,
        Some(yaml),
        &[("HOME", "/h")],
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(config.runtime.mode, RuntimeMode::Local);
    let kinds: Vec<_> = config
        .warnings
        .iter()
        .map(|w| (w.key.as_str(), w.kind, w.line))
        .collect();
    assert_eq!(
        kinds,
        [
            ("extra", ConfigWarningKind::DuplicateKey, 4),
            ("extra", ConfigWarningKind::UnknownKey, 4),
        ]
    );
}

#[test]
fn windows_platform_keys_default_to_micromamba_exe_under_the_prefix() {
    let scratch = Scratch::new();
    let yaml = "runtime:\n  prefix: /rt\n  binaries:\n    linux-x64: /bin/mm\n";
    let config = load_in(
        &scratch,
        Some(yaml),
        &[("HOME", "/h")],
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        config.conda_binary_path_for("linux-x64"),
        Some("/bin/mm".into())
    );
    assert_eq!(
        config.conda_binary_path_for("win-x64"),
        Some("/rt/bin/micromamba.exe".into())
    );
    assert_eq!(
        config.conda_binary_path_for("darwin-arm64"),
        Some("/rt/bin/micromamba".into())
    );
}

#[test]
fn the_platform_key_matches_the_reference_on_this_machine() {
    assert_eq!(current_platform(), fixture()["platform"].as_str().unwrap());
}

#[test]
fn conda_types_parse_and_print_their_reference_spelling() {
    for conda_type in CondaType::ALL {
        assert_eq!(conda_type.as_str().parse::<CondaType>(), Ok(*conda_type));
        assert_eq!(conda_type.to_string(), conda_type.as_str());
    }
    let err = "Conda".parse::<CondaType>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"expected one of micromamba, miniforge, conda, found "Conda""#
    );
    assert_eq!("local".parse(), Ok(RuntimeMode::Local));
}

#[test]
fn the_install_section_sets_defaults_for_every_plugin() {
    let scratch = Scratch::new();
    let yaml = "install:\n  ignore_requires_python: true\n  constraints: pins/constraints.txt\n";
    let config = load_in(
        &scratch,
        Some(yaml),
        &[("HOME", "/h")],
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(config.install.ignore_requires_python);
    let root = fs_err::canonicalize(&scratch.root).unwrap();
    assert_eq!(
        config.install.constraints,
        Some(cjm_core::Constraints::File(
            root.join("pins/constraints.txt")
        ))
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let yaml = "install:\n  constraints: [\"libdemo<2\"]\n  extra: 1\n";
    let config = load_in(
        &scratch,
        Some(yaml),
        &[("HOME", "/h")],
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(!config.install.ignore_requires_python);
    assert_eq!(
        config.install.constraints,
        Some(cjm_core::Constraints::Pins(vec!["libdemo<2".into()]))
    );
    assert_eq!(config.warnings[0].key, "install.extra");

    let yaml = "install:\n  ignore_requires_python: yes please\n  constraints: 3\n";
    let err = load_in(
        &scratch,
        Some(yaml),
        &[("HOME", "/h")],
        &LoadOptions::default(),
    )
    .unwrap_err();
    let text = scratch.redact(&err.to_string());
    assert!(
        text.contains("install.ignore_requires_python: expected true or false"),
        "{text}"
    );
    assert!(
        text.contains("install.constraints: expected a constraints file path or a list of pins"),
        "{text}"
    );
}
