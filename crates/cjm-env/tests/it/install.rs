//! The install pipeline on real environments: uv from a local wheelhouse, offline,
//! introspection inside each environment, manifests on disk.

use std::path::{Path, PathBuf};

use cjm_env::{InstallError, Installer, Stage};
use cjm_manifest::{Manifest, PluginSpec, PluginsFile};
use cjm_proto::Value;
use cjm_proxy::{Worker, WorkerSpec};

use crate::support::{Scratch, python, run_python, store, wheelhouse, worker_wheel};

/// The test interpreter's `major.minor`, which uv finds on this machine.
fn python_version() -> String {
    run_python(
        &python(),
        "import sys; print('%d.%d' % sys.version_info[:2])",
    )
}

struct Setup {
    scratch: Scratch,
    installer: Installer,
}

impl Setup {
    fn new(name: &str) -> Self {
        let scratch = Scratch::new(name);
        wheelhouse(&scratch.0);
        let installer = Installer::new(
            store(&scratch.0),
            scratch.0.join("manifests"),
            worker_wheel(),
        )
        .plugin_data_dir(scratch.0.join("data"))
        .base_dir(&scratch.0);
        Self { scratch, installer }
    }

    fn manifests(&self) -> PathBuf {
        self.scratch.0.join("manifests")
    }

    fn manifest_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(self.manifests())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// A plugins.yaml entry installing `package` offline from the test wheelhouse.
fn entry(name: &str, package: &str, extra: &str) -> PluginSpec {
    let text = format!(
        "plugins:\n  - name: {name}\n    env_name: {name}\n    package: \"{package}\"\n    python_version: \"{}\"\n    find_links: [wheelhouse]\n    no_index: true\n{extra}",
        python_version()
    );
    PluginsFile::from_yaml_str(&text, "plugins.yaml")
        .unwrap()
        .plugins
        .remove(0)
}

fn install(
    setup: &Setup,
    spec: &PluginSpec,
    force: bool,
) -> Result<cjm_env::Installed, InstallError> {
    setup.installer.install(spec, force, &mut |_| {})
}

#[test]
fn a_reference_convention_plugin_gets_a_full_manifest_and_runs_from_it() {
    let setup = Setup::new("install-meta");
    let spec = entry(
        "demo-plugin-meta",
        "demo-plugin-meta",
        "    env_vars: {DEMO_MODE: fast}\n    resources: {ram_mb: 64}\n",
    );
    let mut stages = Vec::new();
    let done = setup
        .installer
        .install(&spec, false, &mut |s| stages.push(s))
        .unwrap();
    assert_eq!(
        stages,
        [Stage::Environment, Stage::Introspecting, Stage::Writing]
    );
    assert!(done.env_built && !done.unchanged);
    assert_eq!(done.source.as_deref(), Some("meta"));
    assert_eq!(
        done.manifest_path,
        setup.manifests().join("demo-plugin-meta.json")
    );

    // The file on disk is a valid v2.0 manifest with everything the host needs.
    let m = Manifest::load_validated(&done.manifest_path).unwrap();
    assert_eq!(m.code.name, "demo-plugin-meta");
    assert_eq!(m.code.version, "1.2.0");
    assert_eq!(m.code.module, "demo_plugin_meta.plugin");
    assert_eq!(m.code.class_name, "MetaPlugin");
    assert_eq!(
        m.code.interface,
        "cjm_demo_plugin_system.plugin_interface.DemoPlugin"
    );
    let tax = m.code.taxonomy.as_ref().unwrap();
    assert_eq!(
        (tax.domain.as_str(), tax.role.as_str()),
        ("demo", "DemoPlugin")
    );
    assert_eq!(m.code.resources.as_ref().unwrap().platforms, ["linux-x64"]);
    let schema = m.code.config_schema.as_ref().unwrap();
    assert!(schema["properties"].get("greeting").is_some(), "{schema:?}");
    assert_eq!(
        m.drift_tracking.config_schema_hash.as_deref(),
        Some(cjm_manifest::compute_config_schema_hash(Some(schema)).as_str())
    );
    let worker_env = m.code.worker_env.as_ref().unwrap();
    assert_eq!(worker_env[0]["name"], "DEMO_TOKEN");
    assert_eq!(worker_env[0]["secret"], true);
    assert_eq!(m.install.package_source, "demo-plugin-meta");
    assert_eq!(m.install.env_vars["DEMO_MODE"], "fast");
    assert_eq!(m.install.extra["backend"], "uv");
    assert_eq!(m.install.extra["env_key"], done.env_key.0.as_str());
    assert_eq!(m.install.extra["declared_resources"]["ram_mb"], 64);
    assert!(m.install.installer_version.starts_with("cjm-ctl "));
    assert!(Path::new(&m.install.python_path).starts_with(setup.scratch.0.join("envs")));

    // The manifest is enough to start the plugin: no import in the host.
    let mut spec = WorkerSpec::new(
        &m.code.name,
        &m.install.python_path,
        &m.code.module,
        &m.code.class_name,
    );
    spec.env = vec![("DEMO_MODE".into(), "fast".into())];
    let worker = Worker::spawn(spec).unwrap();
    worker
        .call_blocking(
            "initialize",
            vec![Value::Map(vec![])],
            vec![],
            cjm_proxy::CallOptions::default(),
        )
        .unwrap();
    let out = worker.execute_blocking(vec![], vec![]).unwrap();
    assert_eq!(out.get("libdemo"), Some(&Value::from("1.0")));
}

#[test]
fn an_entry_point_plugin_is_described_by_its_distribution() {
    let setup = Setup::new("install-ep");
    let done = install(
        &setup,
        &entry("demo-plugin-ep", "demo-plugin-ep==0.3.0", ""),
        false,
    )
    .unwrap();
    assert_eq!(done.source.as_deref(), Some("entry_point"));
    let m = &done.manifest;
    assert_eq!(m.code.name, "demo-plugin-ep");
    assert_eq!(m.code.version, "0.3.0");
    assert_eq!(m.code.description, "A plugin found through its entry point");
    assert_eq!(
        (m.code.module.as_str(), m.code.class_name.as_str()),
        ("demo_plugin_ep.plugin", "EntryPointPlugin")
    );
    assert_eq!(m.code.taxonomy.as_ref().unwrap().domain, "demo");
    assert!(
        m.code.config_schema.as_ref().unwrap()["properties"]
            .get("times")
            .is_some()
    );
}

#[test]
fn a_second_install_does_nothing_and_force_rebuilds() {
    let setup = Setup::new("install-again");
    let spec = entry("demo-plugin-ep", "demo-plugin-ep", "");
    let first = install(&setup, &spec, false).unwrap();
    let again = install(&setup, &spec, false).unwrap();
    assert!(again.unchanged && !again.env_built);
    assert_eq!(again.manifest, first.manifest);
    let forced = install(&setup, &spec, true).unwrap();
    assert!(forced.env_built && !forced.unchanged);
    assert_eq!(forced.env_key, first.env_key);
    assert_ne!(forced.manifest.install.installed_at, "");
    assert_eq!(setup.installer.store().list().unwrap(), vec![first.env_key]);
}

#[test]
fn plugins_install_in_parallel_each_with_its_own_library_version() {
    let setup = Setup::new("install-parallel");
    let specs = [
        entry("demo-plugin-meta", "demo-plugin-meta", ""),
        entry("demo-plugin-ep", "demo-plugin-ep", ""),
    ];
    let seen = std::sync::Mutex::new(Vec::new());
    let results = setup.installer.install_all(&specs, false, 2, &|i, stage| {
        seen.lock().unwrap().push((i, stage));
    });
    let installed: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(installed[0].name, "demo-plugin-meta");
    assert_eq!(installed[1].name, "demo-plugin-ep");
    assert_ne!(installed[0].env_key, installed[1].env_key);
    assert_eq!(seen.lock().unwrap().len(), 6);
    assert_eq!(
        setup.manifest_files(),
        ["demo-plugin-ep.json", "demo-plugin-meta.json"]
    );
}

/// Installs `spec`, expects it to fail, and checks that nothing was left: no
/// manifest, no environment.
fn fails_cleanly(setup: &Setup, spec: &PluginSpec) -> InstallError {
    let error = install(setup, spec, false).unwrap_err();
    assert_eq!(error.plugin(), spec.name);
    assert!(error.hint().is_some());
    assert_eq!(setup.manifest_files(), Vec::<String>::new(), "{error}");
    assert_eq!(setup.installer.store().list().unwrap(), vec![], "{error}");
    error
}

#[test]
fn each_failure_leaves_nothing_behind_and_says_what_happened() {
    let setup = Setup::new("install-failures");
    let e = fails_cleanly(&setup, &entry("missing", "no-such-package-anywhere", ""));
    let text = e.to_string();
    assert!(
        text.starts_with("plugin missing: installing the requirements failed"),
        "{text}"
    );
    assert!(text.contains("no-such-package-anywhere"), "{text}");

    let e = fails_cleanly(
        &setup,
        &entry(
            "conflict",
            "demo-plugin-two",
            "    requirements: [\"libdemo==1.0\"]\n",
        ),
    );
    assert!(e.to_string().contains("libdemo"), "{e}");

    let e = fails_cleanly(&setup, &entry("broken", "demo-plugin-import-error", ""));
    let text = e.to_string();
    assert!(text.contains("introspection failed: importing the metadata module 'demo_plugin_import_error.meta' failed: ModuleNotFoundError"), "{text}");
    assert!(text.contains("no_such_module_anywhere"), "{text}");

    let e = fails_cleanly(&setup, &entry("no-meta", "demo-plugin-no-meta", ""));
    assert!(e.to_string().contains("found no plugin metadata"), "{e}");

    let e = fails_cleanly(&setup, &entry("bad-iface", "demo-plugin-bad-interface", ""));
    assert!(
        e.to_string()
            .contains("importing the interface module 'cjm_missing_plugin_system' failed"),
        "{e}"
    );

    let e = fails_cleanly(&setup, &entry("no-desc", "demo-plugin-no-description", ""));
    let text = e.to_string();
    assert!(text.contains("does not make a valid manifest"), "{text}");
    assert!(text.contains("code.description"), "{text}");
}

#[test]
fn regenerating_refreshes_the_code_section_and_keeps_the_install_time() {
    let setup = Setup::new("install-regen");
    let spec = entry("demo-plugin-meta", "demo-plugin-meta", "");
    let first = install(&setup, &spec, false).unwrap();
    // The plugin's schema grows a field after install.
    fs_err::create_dir_all(setup.scratch.0.join("data")).unwrap();
    fs_err::write(
        setup.scratch.0.join("data/schema-extra.json"),
        r#"{"loud": {"type": "boolean"}}"#,
    )
    .unwrap();
    let mut previous = first.manifest.clone();
    previous.install.installed_at = "2020-01-01T00:00:00+00:00".into();
    let again = setup.installer.regenerate(&spec, &previous).unwrap();
    let m = Manifest::load(&again.manifest_path).unwrap();
    assert_eq!(m.install.installed_at, "2020-01-01T00:00:00+00:00");
    assert!(
        m.code.config_schema.as_ref().unwrap()["properties"]
            .get("loud")
            .is_some()
    );
    assert_ne!(
        m.drift_tracking.config_schema_hash,
        first.manifest.drift_tracking.config_schema_hash
    );
}
