//! The install pipeline on real environments: uv from a local wheelhouse, offline,
//! introspection inside each environment, manifests on disk.

use std::path::{Path, PathBuf};

use cjm_env::{InstallError, Installer, Stage};
use cjm_manifest::{Manifest, PluginSpec, PluginsFile};
use cjm_proto::Value;
use cjm_proxy::{Worker, WorkerSpec};

use crate::support::{
    Scratch, python, run_python, setup_wheelhouse, store, wheelhouse, worker_wheel,
};

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

/// Installs `spec`; every manifest an install writes must pass `cjm-ctl validate`
/// (issue 10: the reference's validator rejects its own installer's manifests).
fn install(
    setup: &Setup,
    spec: &PluginSpec,
    force: bool,
) -> Result<cjm_env::Installed, InstallError> {
    let done = setup.installer.install(spec, force, &mut |_| {});
    assert_manifests_are_valid(&setup.manifests());
    done
}

/// Every manifest in `dir` passes `cjm-ctl validate`'s checks.
#[track_caller]
fn assert_manifests_are_valid(dir: &Path) {
    for entry in fs_err::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        let text = fs_err::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let problems = cjm_manifest::validate_manifest(&value);
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        Manifest::load_validated(&path).unwrap();
    }
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
    assert_manifests_are_valid(&setup.manifests());
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
    assert_manifests_are_valid(&setup.manifests());
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
    let text = e.to_string();
    assert!(text.contains("found no plugin metadata"), "{text}");
    // Issue 10: it says which module it guessed, and from what.
    assert!(
        text.contains("cjm guessed the module name 'demo_plugin_no_meta' from the requirement `demo-plugin-no-meta`"),
        "{text}"
    );

    let e = fails_cleanly(&setup, &entry("odd-name", "demo-plugin-odd-name", ""));
    let text = e.to_string();
    assert!(
        text.contains("module 'demo_plugin_odd_name' is not installed"),
        "{text}"
    );
    assert!(
        text.contains("installs the top-level modules: odd_module"),
        "{text}"
    );
    assert!(
        text.contains("[project.entry-points.\"cjm.plugins\"]"),
        "{text}"
    );
    assert!(
        e.hint().unwrap().contains("as the message says"),
        "no traceback, so no hint pointing at one: {e}"
    );

    let e = fails_cleanly(
        &setup,
        &entry("import-error", "demo-plugin-import-error", ""),
    );
    // The traceback it refers to is printed.
    assert!(text_has_traceback(&e), "{e}");
}

fn text_has_traceback(e: &InstallError) -> bool {
    e.to_string()
        .contains("| Traceback (most recent call last):")
        && e.hint().unwrap().contains("the traceback above")
}

#[test]
fn an_interface_that_does_not_import_is_refused_unless_the_entry_allows_it() {
    let setup = Setup::new("install-iface");
    let e = fails_cleanly(
        &setup,
        &entry("demo-plugin-bad-interface", "demo-plugin-bad-interface", ""),
    );
    let text = e.to_string();
    assert!(
        text.contains("importing the interface module 'cjm_missing_plugin_system' failed"),
        "{text}"
    );
    assert!(text.contains("allow_missing_interface: true"), "{text}");

    let spec = entry(
        "demo-plugin-bad-interface",
        "demo-plugin-bad-interface",
        "    allow_missing_interface: true\n",
    );
    let done = install(&setup, &spec, false).unwrap();
    let m = &done.manifest;
    assert_eq!(m.code.interface, "cjm_missing_plugin_system.Nope");
    let tax = m.code.taxonomy.as_ref().unwrap();
    assert_eq!(
        (tax.domain.as_str(), tax.role.as_str()),
        ("missing", "Nope")
    );
    assert_eq!(m.install.extra["allow_missing_interface"], true);
    let recorded = m.install.extra["install_warnings"].to_string();
    assert!(
        recorded.contains("not verified (allow_missing_interface)"),
        "{recorded}"
    );
    assert!(
        done.warnings.iter().any(|w| w.contains("not verified")),
        "{:?}",
        done.warnings
    );
}

#[test]
fn a_plugin_without_a_description_installs_with_the_summary_or_a_warning() {
    let setup = Setup::new("install-nodesc");
    let done = install(
        &setup,
        &entry("demo-plugin-summary", "demo-plugin-summary", ""),
        false,
    )
    .unwrap();
    assert_eq!(
        done.manifest.code.description,
        "Described by its distribution"
    );
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);

    let done = install(
        &setup,
        &entry(
            "demo-plugin-no-description",
            "demo-plugin-no-description",
            "",
        ),
        false,
    )
    .unwrap();
    assert_eq!(done.manifest.code.description, "");
    assert!(
        done.warnings
            .iter()
            .any(|w| w.starts_with("no description")),
        "{:?}",
        done.warnings
    );
    assert!(
        done.manifest.install.extra["install_warnings"]
            .to_string()
            .contains("no description")
    );
}

/// `entry`, with the wheels `cargo xtask setup` downloaded (pip, the reference's
/// wheel, `flit_core`) as a second find-links folder.
fn entry_with_setup_wheels(name: &str, package: &str, extra: &str) -> PluginSpec {
    let mut spec = entry(name, package, extra);
    spec.find_links
        .push(setup_wheelhouse().to_string_lossy().into_owned());
    spec
}

#[test]
fn a_requires_python_floor_is_refused_with_the_override_named_then_ignored_with_it() {
    let setup = Setup::new("install-requires-python");
    let e = fails_cleanly(
        &setup,
        &entry_with_setup_wheels("demo-plugin-future", "demo-plugin-future", ""),
    );
    let text = e.to_string();
    assert!(text.contains("requires Python >=3.99"), "{text}");
    assert!(
        e.hint().unwrap().contains("ignore_requires_python: true"),
        "{e:?}"
    );

    let spec = entry_with_setup_wheels(
        "demo-plugin-future",
        "demo-plugin-future",
        "    ignore_requires_python: true\n",
    );
    let done = install(&setup, &spec, false).unwrap();
    assert_eq!(done.manifest.code.name, "demo-plugin-future");
    assert_eq!(done.manifest.install.extra["ignore_requires_python"], true);
    // Markers are still those of the real interpreter: libdemo 1.0 as pinned.
    let py = &done.manifest.install.python_path;
    assert_eq!(
        run_python(Path::new(py), "import libdemo; print(libdemo.VERSION)"),
        "1.0"
    );
}

#[test]
fn the_cjm_yaml_default_ignores_requires_python_for_entries_that_say_nothing() {
    let setup = Setup::new("install-requires-python-default");
    let installer = setup.installer.clone().defaults(cjm_core::InstallConfig {
        ignore_requires_python: true,
        constraints: None,
    });
    let spec = entry_with_setup_wheels("demo-plugin-future", "demo-plugin-future", "");
    let done = installer.install(&spec, false, &mut |_| {}).unwrap();
    assert_eq!(done.manifest.install.extra["ignore_requires_python"], true);
    // An entry's own `false` wins over the default.
    let spec = entry_with_setup_wheels(
        "demo-plugin-future",
        "demo-plugin-future",
        "    ignore_requires_python: false\n",
    );
    let e = installer.install(&spec, true, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("requires Python >=3.99"), "{e}");
}

#[test]
fn constraints_pin_a_dependency_below_what_the_plugin_would_pick_and_change_the_key() {
    let setup = Setup::new("install-constraints");
    let free = install(
        &setup,
        &entry("demo-plugin-any-libdemo", "demo-plugin-any-libdemo", ""),
        false,
    )
    .unwrap();
    let libdemo = |done: &cjm_env::Installed| {
        run_python(
            Path::new(&done.manifest.install.python_path),
            "import libdemo; print(libdemo.VERSION)",
        )
    };
    assert_eq!(libdemo(&free), "2.0");

    fs_err::write(
        setup.scratch.0.join("constraints.txt"),
        "# project pins\nlibdemo<2\n",
    )
    .unwrap();
    let spec = entry(
        "demo-plugin-any-libdemo",
        "demo-plugin-any-libdemo",
        "    constraints: constraints.txt\n",
    );
    let pinned = install(&setup, &spec, false).unwrap();
    assert!(!pinned.unchanged, "new constraints reinstall");
    assert_ne!(pinned.env_key, free.env_key);
    assert_eq!(libdemo(&pinned), "1.0");
    let env_dir = setup.installer.store().dir(&pinned.env_key);
    assert_eq!(
        fs_err::read_to_string(env_dir.join("constraints.txt")).unwrap(),
        "libdemo<2\n"
    );
    let marker = fs_err::read_to_string(env_dir.join(".cjm-env.json")).unwrap();
    assert!(marker.contains("libdemo<2"), "{marker}");
    assert_eq!(pinned.manifest.install.extra["constraints"][0], "libdemo<2");

    // The file's content is the key, not its name; a list of pins is the same.
    fs_err::write(setup.scratch.0.join("constraints.txt"), "libdemo<1.5\n").unwrap();
    assert!(setup.installer.installed(&spec).unwrap().is_none());
    let listed = entry(
        "demo-plugin-any-libdemo",
        "demo-plugin-any-libdemo",
        "    constraints: [\"libdemo<2\"]\n",
    );
    let again = install(&setup, &listed, false).unwrap();
    assert_eq!(again.env_key, pinned.env_key);
}

#[test]
fn a_plugin_on_the_references_own_plugin_interface_installs_and_runs() {
    let setup = Setup::new("install-reference");
    // cjm-plugin-system declares Requires-Python >=3.12, as its ecosystem does.
    let spec = entry_with_setup_wheels(
        "demo-plugin-reference",
        "demo-plugin-reference",
        "    ignore_requires_python: true\n",
    );
    let done = install(&setup, &spec, false).unwrap();
    let m = &done.manifest;
    assert_eq!(
        m.code.interface,
        "cjm_plugin_system.core.interface.PluginInterface"
    );
    let tax = m.code.taxonomy.as_ref().unwrap();
    assert_eq!(
        (tax.domain.as_str(), tax.role.as_str()),
        ("cjm_plugin_system", "PluginInterface")
    );
    assert!(
        m.code.config_schema.as_ref().unwrap()["properties"]
            .get("shout")
            .is_some()
    );

    let worker = Worker::spawn(WorkerSpec::new(
        &m.code.name,
        &m.install.python_path,
        &m.code.module,
        &m.code.class_name,
    ))
    .unwrap();
    worker
        .call_blocking(
            "initialize",
            vec![Value::Map(vec![])],
            vec![],
            cjm_proxy::CallOptions::default(),
        )
        .unwrap();
    let out = worker
        .execute_blocking(vec![Value::from("hi")], vec![])
        .unwrap();
    assert_eq!(
        out.get("plugin"),
        Some(&Value::from("demo-plugin-reference"))
    );
    assert_eq!(
        out.get("base"),
        Some(&Value::from("cjm_plugin_system.core.interface"))
    );
}

/// A plugin in a folder beside plugins.yaml, built with `flit_core`; `greeting` is
/// what its `execute` returns.
fn write_local_plugin(dir: &Path, greeting: &str) {
    let pkg = dir.join("local_demo_plugin");
    fs_err::create_dir_all(&pkg).unwrap();
    fs_err::write(
        dir.join("pyproject.toml"),
        "[build-system]\nrequires = [\"flit_core>=3.2,<5\"]\nbuild-backend = \"flit_core.buildapi\"\n\n\
         [project]\nname = \"local-demo-plugin\"\nversion = \"0.1.0\"\ndescription = \"A plugin in a folder\"\n\
         dependencies = [\"cjm-demo-plugin-system\", \"libdemo==1.0\"]\n",
    )
    .unwrap();
    fs_err::write(pkg.join("__init__.py"), "").unwrap();
    fs_err::write(
        pkg.join("meta.py"),
        "def get_plugin_metadata():\n    return {\"name\": \"local-demo-plugin\", \"version\": \"0.1.0\", \
         \"module\": \"local_demo_plugin.plugin\", \"class\": \"LocalPlugin\", \
         \"interface\": \"cjm_demo_plugin_system.plugin_interface.DemoPlugin\"}\n",
    )
    .unwrap();
    fs_err::write(
        pkg.join("plugin.py"),
        format!(
            "from cjm_demo_plugin_system.plugin_interface import DemoPlugin\n\n\n\
             class LocalPlugin(DemoPlugin):\n    GREETING = {greeting:?}\n\n    \
             def get_config_schema(self):\n        return {{\"type\": \"object\", \"properties\": {{}}}}\n\n    \
             def execute(self, *args, **kwargs):\n        return self.GREETING\n"
        ),
    )
    .unwrap();
}

#[test]
fn editing_a_local_plugin_folder_reinstalls_it_instead_of_reporting_it_up_to_date() {
    let setup = Setup::new("install-local");
    let dir = setup.scratch.0.join("plugins/local-demo-plugin");
    write_local_plugin(&dir, "first");
    // Relative to the plugins.yaml's folder (the installer's base), as find_links is.
    let spec = entry_with_setup_wheels("local-demo-plugin", "./plugins/local-demo-plugin", "");
    let greeting = |done: &cjm_env::Installed| {
        run_python(
            Path::new(&done.manifest.install.python_path),
            "from local_demo_plugin.plugin import LocalPlugin; print(LocalPlugin.GREETING)",
        )
    };
    let first = install(&setup, &spec, false).unwrap();
    assert_eq!(greeting(&first), "first");
    assert_eq!(first.manifest.code.description, "A plugin in a folder");
    assert!(install(&setup, &spec, false).unwrap().unchanged);

    // Byte-compiled files and build output are not the source.
    fs_err::create_dir_all(dir.join("local_demo_plugin/__pycache__")).unwrap();
    fs_err::write(
        dir.join("local_demo_plugin/__pycache__/plugin.cpython-311.pyc"),
        "x",
    )
    .unwrap();
    fs_err::create_dir_all(dir.join("build")).unwrap();
    assert!(install(&setup, &spec, false).unwrap().unchanged);

    // Same version, new code: reinstalled, and not from uv's cache.
    write_local_plugin(&dir, "second");
    let second = install(&setup, &spec, false).unwrap();
    assert!(!second.unchanged);
    assert_ne!(second.env_key, first.env_key);
    assert_eq!(greeting(&second), "second");
    assert_ne!(
        second.manifest.install.extra["source_hash"],
        first.manifest.install.extra["source_hash"]
    );
}

#[test]
fn a_python_version_the_machine_lacks_names_the_interpreters_found_and_the_fix() {
    let setup = Setup::new("install-no-python");
    let mut spec = entry("demo-plugin-ep", "demo-plugin-ep", "");
    // No such Python exists, so uv has nothing to download either: offline-safe.
    spec.python_version = Some("3.99".into());
    let e = fails_cleanly(&setup, &spec);
    let text = e.to_string();
    assert!(
        text.starts_with("plugin demo-plugin-ep: no Python 3.99 found; uv found: "),
        "{text}"
    );
    let hint = e.hint().unwrap();
    assert!(hint.contains("python_version"), "{hint}");
    assert!(hint.contains("ignore_requires_python: true"), "{hint}");
    assert!(hint.contains("uv python install 3.99"), "{hint}");
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
    assert_manifests_are_valid(&setup.manifests());
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
