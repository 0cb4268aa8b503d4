//! The conda backend against a scripted micromamba/mamba/conda
//! (`tests/fixtures/fake_micromamba.py`): this machine has no conda and no channels,
//! so what is checked is the command lines, the parsing of what the tool prints, and
//! the errors.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cjm_core::{CjmConfig, CondaType, RuntimeConfig, RuntimeMode, SubstrateConfig};
use cjm_env::{CondaRuntime, CondaSource, EnvError};

use crate::runtime::{error_text, serve_once};
use crate::support::{Scratch, python, run_python};

/// A configuration with everything under `data_dir` and the given tool.
pub(crate) fn config(data_dir: &Path, conda_type: CondaType) -> CjmConfig {
    CjmConfig {
        runtime: RuntimeConfig {
            mode: RuntimeMode::System,
            conda_type,
            prefix: None,
            binaries: BTreeMap::new(),
        },
        data_dir: data_dir.to_owned(),
        plugins_config: data_dir.join("plugins.yaml"),
        models_dir: None,
        substrate: SubstrateConfig::default(),
        install: cjm_core::InstallConfig::default(),
        source: None,
        warnings: Vec::new(),
    }
}

/// Writes an executable `#!/bin/sh` script.
pub(crate) fn write_script(path: &Path, body: &str) {
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A scratch folder with a log of every call the fake tool gets.
struct Fake {
    scratch: Scratch,
    /// Real environments: the uv the fake builds them with.
    uv: Option<PathBuf>,
}

impl Fake {
    fn new(name: &str) -> Self {
        Self {
            scratch: Scratch::new(&format!("conda-{name}")),
            uv: None,
        }
    }

    fn dir(&self) -> &Path {
        &self.scratch.0
    }

    /// Puts the fake tool at `path`; `others` are environments outside its root that
    /// `env list` reports too.
    fn install(&self, path: &Path, others: &[&Path]) {
        let fixture =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_micromamba.py");
        let others: Vec<_> = others.iter().map(|p| p.display().to_string()).collect();
        let body = format!(
            "export FAKE_CONDA_LOG='{}'\nexport FAKE_CONDA_ROOT='{}'\n\
             export FAKE_CONDA_PYTHON='{}'\nexport FAKE_CONDA_OTHER_ENVS='{}'\n\
             export FAKE_CONDA_UV='{}'\nexec '{}' '{}' \"$@\"\n",
            self.dir().join("calls.log").display(),
            self.dir().join("default-root").display(),
            python().display(),
            others.join(":"),
            self.uv
                .as_deref()
                .map_or_else(String::new, |u| u.display().to_string()),
            python().display(),
            fixture.display(),
        );
        write_script(path, &body);
    }

    /// Every call so far, as argument lists.
    fn calls(&self) -> Vec<Vec<String>> {
        let Ok(text) = fs_err::read_to_string(self.dir().join("calls.log")) else {
            return Vec::new();
        };
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The calls other than `env list` (which every existence check makes).
    fn changes(&self) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| !c.ends_with(&["env".into(), "list".into(), "--json".into()]))
            .collect()
    }
}

/// `words` as an owned argument list, each path as it displays.
fn argv(words: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    words
        .iter()
        .map(|w| w.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// A micromamba in local mode: the fake at `<prefix>/bin/micromamba`, as
/// `cjm-ctl setup-runtime` would place it.
fn local_micromamba(fake: &Fake, others: &[&Path]) -> (CondaRuntime, PathBuf) {
    let prefix = fake.dir().join("runtime");
    fake.install(&prefix.join("bin/micromamba"), others);
    let mut cfg = config(fake.dir(), CondaType::Micromamba);
    cfg.runtime.mode = RuntimeMode::Local;
    cfg.runtime.prefix = Some(prefix.clone());
    (CondaRuntime::from_config_with_path(&cfg, None), prefix)
}

fn python_version(v: &str) -> CondaSource {
    CondaSource::PythonVersion(v.to_owned())
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn micromamba_in_local_mode_runs_the_prefix_binary_with_its_root() {
    let fake = Fake::new("mm-local");
    let (rt, prefix) = local_micromamba(&fake, &[]);
    assert_eq!(rt.kind(), CondaType::Micromamba);
    assert_eq!(rt.program(), prefix.join("bin/micromamba"));
    assert_eq!(rt.root_prefix(), Some(prefix.as_path()));
    assert!(rt.available());

    rt.create("demo", &python_version("3.11")).unwrap();
    assert_eq!(
        fake.calls(),
        vec![argv(&[
            &"-r",
            &prefix,
            &"create",
            &"-n",
            &"demo",
            &"python=3.11",
            &"-y"
        ])]
    );
    assert!(rt.env_exists("demo").unwrap());
    assert_eq!(
        rt.env_prefix("demo").unwrap(),
        Some(prefix.join("envs/demo"))
    );
    let python = rt.python("demo").unwrap().unwrap();
    assert_eq!(python, prefix.join("envs/demo/bin/python"));
    assert_eq!(run_python(&python, "print(6 * 7)"), "42");
}

#[test]
fn micromamba_in_system_mode_uses_the_configured_binary_without_a_root() {
    let fake = Fake::new("mm-system");
    let binary = fake.dir().join("tools/mm");
    let foreign = fake.dir().join("elsewhere/envs/foreign");
    fake.install(&binary, &[&foreign]);
    let mut cfg = config(fake.dir(), CondaType::Micromamba);
    cfg.runtime.prefix = Some(fake.dir().join("runtime"));
    cfg.runtime
        .binaries
        .insert(cjm_core::current_platform(), binary.clone());
    let rt = CondaRuntime::from_config_with_path(&cfg, None);
    assert_eq!(rt.program(), binary);
    assert_eq!(rt.root_prefix(), None);

    rt.create("demo", &python_version("3.12")).unwrap();
    assert_eq!(
        fake.calls(),
        vec![argv(&[&"create", &"-n", &"demo", &"python=3.12", &"-y"])]
    );
    // Without a root every environment the tool reports counts, its own root too
    // (named after its folder), as in the reference.
    assert_eq!(
        rt.env_names().unwrap(),
        names(&["default-root", "demo", "foreign"])
    );
}

#[test]
fn env_names_keep_only_environments_under_the_root_prefix() {
    let fake = Fake::new("mm-filter");
    let foreign = fake.dir().join("elsewhere/envs/foreign");
    // Its path starts with the prefix's text but it is not under the prefix.
    let sneaky = fake.dir().join("runtime-other/envs/sneaky");
    let (rt, _) = local_micromamba(&fake, &[&foreign, &sneaky]);
    rt.create("one", &python_version("3.11")).unwrap();
    rt.create("two", &python_version("3.11")).unwrap();

    assert_eq!(rt.env_names().unwrap(), names(&["one", "two"]));
    assert!(!rt.env_exists("foreign").unwrap());
    assert!(!rt.env_exists("sneaky").unwrap());
    // The root itself is the base environment, not one of ours.
    assert!(!rt.env_exists("runtime").unwrap());
    assert_eq!(rt.python("foreign").unwrap(), None);
}

#[test]
fn micromamba_creates_from_an_environment_file_with_create_f() {
    let fake = Fake::new("mm-file");
    let (rt, prefix) = local_micromamba(&fake, &[]);
    let file = fake.dir().join("environment.yml");
    fs_err::write(&file, "name: x\ndependencies:\n  - python=3.11\n").unwrap();

    rt.create("demo", &CondaSource::EnvFile(file.display().to_string()))
        .unwrap();
    assert_eq!(
        fake.changes(),
        vec![argv(&[
            &"-r", &prefix, &"create", &"-f", &file, &"-n", &"demo", &"-y"
        ])]
    );
    let copied = fs_err::read_to_string(prefix.join("envs/demo/conda-meta/env-file.yml")).unwrap();
    assert!(copied.contains("python=3.11"), "{copied}");
}

#[test]
fn conda_creates_from_an_environment_file_with_env_create_and_removes_with_env_remove() {
    let fake = Fake::new("conda");
    let bin = fake.dir().join("bin");
    fake.install(&bin.join("conda"), &[]);
    let cfg = config(fake.dir(), CondaType::Conda);
    let rt = CondaRuntime::from_config_with_path(&cfg, Some(bin.as_os_str()));
    assert_eq!(rt.program(), bin.join("conda"));
    assert!(rt.available());
    let file = fake.dir().join("environment.yml");
    fs_err::write(&file, "dependencies: [python=3.10]\n").unwrap();

    rt.create("demo", &CondaSource::EnvFile(file.display().to_string()))
        .unwrap();
    assert!(rt.env_exists("demo").unwrap());
    rt.remove("demo").unwrap();
    assert!(!rt.env_exists("demo").unwrap());
    assert_eq!(
        fake.changes(),
        vec![
            argv(&[&"env", &"create", &"-f", &file, &"-n", &"demo"]),
            argv(&[&"env", &"remove", &"-n", &"demo", &"-y"]),
        ]
    );
}

#[test]
fn miniforge_runs_mamba_from_path() {
    let fake = Fake::new("mamba");
    let bin = fake.dir().join("bin");
    fake.install(&bin.join("mamba"), &[]);
    let cfg = config(fake.dir(), CondaType::Miniforge);
    let rt = CondaRuntime::from_config_with_path(&cfg, Some(bin.as_os_str()));
    assert_eq!(rt.kind(), CondaType::Miniforge);
    assert_eq!(rt.program(), bin.join("mamba"));

    rt.create("demo", &python_version("3.12")).unwrap();
    rt.pip_install("demo", &["libdemo==1.0".to_owned()])
        .unwrap();
    assert_eq!(
        fake.changes(),
        vec![
            argv(&[&"create", &"-n", &"demo", &"python=3.12", &"-y"]),
            argv(&[
                &"run",
                &"-n",
                &"demo",
                &"python",
                &"-m",
                &"pip",
                &"install",
                &"libdemo==1.0"
            ]),
        ]
    );
}

#[test]
fn pip_install_runs_the_environments_own_pip_under_run() {
    let fake = Fake::new("mm-pip");
    let (rt, prefix) = local_micromamba(&fake, &[]);
    rt.create("demo", &python_version("3.11")).unwrap();
    let args = ["--no-index".to_owned(), "libdemo==1.0".to_owned()];
    rt.pip_install("demo", &args).unwrap();
    // Nothing to install runs nothing.
    rt.pip_install("demo", &[]).unwrap();

    assert_eq!(
        fake.changes().last().unwrap(),
        &argv(&[
            &"-r",
            &prefix,
            &"run",
            &"-n",
            &"demo",
            &"python",
            &"-m",
            &"pip",
            &"install",
            &"--no-index",
            &"libdemo==1.0"
        ])
    );
    assert_eq!(fake.changes().len(), 2);
    let log = fs_err::read_to_string(prefix.join("envs/demo/pip-installs.log")).unwrap();
    assert_eq!(log.trim(), r#"["--no-index", "libdemo==1.0"]"#);
}

#[test]
fn a_failing_pip_install_names_the_step_the_environment_and_pips_last_lines() {
    let fake = Fake::new("mm-pip-fail");
    let (rt, _) = local_micromamba(&fake, &[]);
    rt.create("demo", &python_version("3.11")).unwrap();
    let err = rt
        .pip_install("demo", &["no-such-package".to_owned()])
        .unwrap_err();
    let EnvError::Tool {
        step,
        key,
        command,
        output_tail,
        ..
    } = err
    else {
        panic!("expected a tool error, got {err:?}");
    };
    assert_eq!(step, "installing the requirements");
    assert_eq!(key, "demo");
    assert!(
        command.ends_with("run -n demo python -m pip install no-such-package"),
        "{command}"
    );
    assert_eq!(
        output_tail.last().unwrap(),
        "ERROR: No matching distribution found for no-such-package"
    );
}

#[test]
fn a_failing_create_carries_the_tail_of_the_tools_output() {
    let fake = Fake::new("mm-broken");
    let (rt, prefix) = local_micromamba(&fake, &[]);
    let err = rt
        .create("broken-env", &python_version("3.11"))
        .unwrap_err();
    let text = error_text(&err);
    let EnvError::Tool {
        step,
        key,
        command,
        status,
        output_tail,
    } = err
    else {
        panic!("expected a tool error, got {err:?}");
    };
    assert_eq!(step, "creating the conda environment");
    assert_eq!(key, "broken-env");
    assert_eq!(
        command,
        format!(
            "{} -r {} create -n broken-env python=3.11 -y",
            prefix.join("bin/micromamba").display(),
            prefix.display()
        )
    );
    assert!(status.contains('1'), "{status}");
    // 30 lines and the error: the last 20 are kept, stdout then stderr.
    assert_eq!(output_tail.len(), 20);
    assert_eq!(output_tail[0], "fake solver line 12");
    assert_eq!(
        output_tail.last().unwrap(),
        "error    libmamba Could not solve for environment specs"
    );
    assert!(
        text.contains("creating the conda environment failed for environment broken-env"),
        "{text}"
    );
    assert!(!rt.env_exists("broken-env").unwrap());
}

#[test]
fn an_environment_file_url_is_downloaded_and_the_copy_removed() {
    let fake = Fake::new("mm-url");
    let (rt, prefix) = local_micromamba(&fake, &[]);
    let body = "name: remote\ndependencies:\n  - python=3.11\n";
    let (base, server) = serve_once("200 OK", body.as_bytes().to_vec());
    let url = format!("{base}envs/environment.yml");

    rt.create("demo", &CondaSource::EnvFile(url)).unwrap();
    server.join().unwrap();
    let meta = prefix.join("envs/demo/conda-meta");
    assert_eq!(
        fs_err::read_to_string(meta.join("env-file.yml")).unwrap(),
        body
    );
    let used = PathBuf::from(fs_err::read_to_string(meta.join("env-file-path")).unwrap());
    assert_eq!(used.extension().unwrap(), "yml");
    assert!(
        !used.exists(),
        "the temporary copy {} is left",
        used.display()
    );
}

#[test]
fn an_environment_file_url_that_fails_creates_nothing() {
    let fake = Fake::new("mm-url-404");
    let (rt, _) = local_micromamba(&fake, &[]);
    let (base, _server) = serve_once("404 Not Found", b"gone".to_vec());
    let url = format!("{base}environment.yml");

    let err = rt
        .create("demo", &CondaSource::EnvFile(url.clone()))
        .unwrap_err();
    let text = error_text(&err);
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("404"), "{text}");
    assert_eq!(fake.calls(), Vec::<Vec<String>>::new());
}

#[test]
fn a_missing_micromamba_is_not_available_and_points_at_setup_runtime() {
    let scratch = Scratch::new("conda-missing");
    let prefix = scratch.0.join("runtime");
    let mut cfg = config(&scratch.0, CondaType::Micromamba);
    cfg.runtime.mode = RuntimeMode::Local;
    cfg.runtime.prefix = Some(prefix.clone());
    let rt = CondaRuntime::from_config_with_path(&cfg, None);

    assert_eq!(rt.program(), prefix.join("bin/micromamba"));
    assert!(!rt.available());
    assert!(
        rt.missing_hint().contains("`cjm-ctl setup-runtime`"),
        "{}",
        rt.missing_hint()
    );
    let err = rt.env_names().unwrap_err();
    let EnvError::ToolMissing { tool, .. } = &err else {
        panic!("expected a missing tool, got {err:?}");
    };
    assert_eq!(tool, &prefix.join("bin/micromamba"));
}

#[test]
fn micromamba_falls_back_to_path_when_the_prefix_has_none() {
    let fake = Fake::new("mm-path");
    let bin = fake.dir().join("bin");
    fake.install(&bin.join("micromamba"), &[]);
    let mut cfg = config(fake.dir(), CondaType::Micromamba);
    cfg.runtime.mode = RuntimeMode::Local;
    cfg.runtime.prefix = Some(fake.dir().join("runtime"));
    let rt = CondaRuntime::from_config_with_path(&cfg, Some(bin.as_os_str()));
    assert_eq!(rt.program(), bin.join("micromamba"));
    assert!(rt.available());

    // Neither a prefix nor PATH: the bare name, which cannot run.
    let cfg = config(fake.dir(), CondaType::Micromamba);
    let rt = CondaRuntime::from_config_with_path(&cfg, None);
    assert_eq!(rt.program(), Path::new("micromamba"));
    assert!(!rt.available());
    assert!(rt.missing_hint().contains("`cjm-ctl setup-runtime`"));
}

#[test]
fn missing_conda_and_mamba_say_what_to_install() {
    let scratch = Scratch::new("conda-none");
    for (kind, name, advice) in [
        (CondaType::Conda, "conda", "install conda"),
        (CondaType::Miniforge, "mamba", "install Miniforge"),
    ] {
        let rt = CondaRuntime::from_config_with_path(&config(&scratch.0, kind), None);
        assert_eq!(rt.program(), Path::new(name));
        assert!(!rt.available());
        let hint = rt.missing_hint();
        assert!(hint.contains(advice), "{hint}");
        assert!(hint.contains("runtime.conda_type"), "{hint}");
    }
}

#[test]
fn the_installer_builds_a_conda_plugin_the_reference_way() {
    use cjm_env::Installer;
    use cjm_manifest::PluginsFile;

    let mut fake = Fake::new("installer");
    fake.uv = Some(crate::support::uv());
    let (conda, prefix) = local_micromamba(&fake, &[]);
    crate::support::wheelhouse(fake.dir());
    let yaml = "plugins:
  - name: demo-plugin-meta
    env_name: cjm-meta
    package: demo-plugin-meta
    backend: conda
    python_version: \"3.11\"
    find_links: [wheelhouse]
    no_index: true
  - name: broken
    env_name: broken-env
    package: demo-plugin-meta
    backend: conda
    python_version: \"3.11\"
";
    let file = PluginsFile::from_yaml_str(yaml, "plugins.yaml").unwrap();
    let installer = Installer::new(
        crate::support::store(fake.dir()),
        fake.dir().join("manifests"),
        crate::support::worker_wheel(),
    )
    .base_dir(fake.dir())
    .conda(conda);
    let spec = file.get("demo-plugin-meta").unwrap();
    let done = installer.install(spec, false, &mut |_| {}).unwrap();
    let m = &done.manifest;
    assert_eq!(m.install.conda_env, "cjm-meta");
    assert!(
        m.install
            .python_path
            .starts_with(&prefix.join("envs/cjm-meta").display().to_string())
    );
    assert!(!m.install.extra.contains_key("env_key"));
    assert_eq!(m.code.taxonomy.as_ref().unwrap().domain, "demo");
    let changes = fake.changes();
    let root = prefix.display().to_string();
    assert_eq!(
        changes[0],
        argv(&[
            &"-r",
            &root,
            &"create",
            &"-n",
            &"cjm-meta",
            &"python=3.11",
            &"-y"
        ])
    );
    assert_eq!(
        &changes[1][..7],
        argv(&[&"-r", &root, &"run", &"-n", &"cjm-meta", &"python", &"-m"])
    );
    assert!(
        changes[1].contains(&"--no-index".to_owned())
            && changes[1].contains(&"demo-plugin-meta".to_owned())
    );
    assert!(
        Path::new(changes[1].last().unwrap())
            .extension()
            .is_some_and(|x| x == "whl"),
        "the worker wheel goes in: {:?}",
        changes[1]
    );

    // Installed: nothing runs again but the existence check.
    let again = installer.install(spec, false, &mut |_| {}).unwrap();
    assert!(again.unchanged);
    assert_eq!(fake.changes().len(), 2);
    // --force removes the environment and makes it anew.
    installer.install(spec, true, &mut |_| {}).unwrap();
    let changes = fake.changes();
    assert_eq!(
        changes[2],
        argv(&[&"-r", &root, &"env", &"remove", &"-n", &"cjm-meta", &"-y"])
    );
    assert_eq!(changes[3][2], "create");

    // A create that fails leaves no manifest for it.
    let error = installer
        .install(file.get("broken").unwrap(), false, &mut |_| {})
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("plugin broken: creating the conda environment failed"),
        "{text}"
    );
    assert!(text.contains("Could not solve"), "{text}");
    assert!(!fake.dir().join("manifests/broken.json").exists());
}

#[test]
fn the_conda_backend_passes_ignore_requires_python_and_constraints_to_pip() {
    use cjm_env::Installer;
    use cjm_manifest::PluginsFile;

    let mut fake = Fake::new("installer-overrides");
    fake.uv = Some(crate::support::uv());
    let (conda, prefix) = local_micromamba(&fake, &[]);
    crate::support::wheelhouse(fake.dir());
    let entry = |extra: &str| {
        let yaml = format!(
            "plugins:
  - name: demo-plugin-future
    env_name: cjm-future
    package: demo-plugin-future
    backend: conda
    python_version: \"3.11\"
    find_links: [wheelhouse]
    no_index: true
{extra}"
        );
        PluginsFile::from_yaml_str(&yaml, "plugins.yaml")
            .unwrap()
            .plugins
            .remove(0)
    };
    let installer = Installer::new(
        crate::support::store(fake.dir()),
        fake.dir().join("manifests"),
        crate::support::worker_wheel(),
    )
    .base_dir(fake.dir())
    .conda(conda);

    // Refused without the override, with the override named.
    let error = installer
        .install(&entry(""), false, &mut |_| {})
        .unwrap_err();
    assert!(
        error.to_string().contains("requires Python >=3.99"),
        "{error}"
    );
    assert!(
        error
            .hint()
            .unwrap()
            .contains("ignore_requires_python: true"),
        "{error:?}"
    );

    let spec = entry("    ignore_requires_python: true\n    constraints: [\"libdemo<2\"]\n");
    let done = installer.install(&spec, false, &mut |_| {}).unwrap();
    let env = prefix.join("envs/cjm-future");
    let pip = fake
        .changes()
        .into_iter()
        .rfind(|c| c.contains(&"pip".to_owned()))
        .unwrap();
    let constraints = env.join("cjm-constraints.txt");
    assert!(
        pip.contains(&"--ignore-requires-python".to_owned()),
        "{pip:?}"
    );
    let at = pip.iter().position(|a| a == "-c").unwrap();
    assert_eq!(pip[at + 1], constraints.display().to_string());
    assert_eq!(fs_err::read_to_string(&constraints).unwrap(), "libdemo<2\n");
    let extra = &done.manifest.install.extra;
    assert_eq!(extra["ignore_requires_python"], true);
    assert_eq!(extra["constraints"][0], "libdemo<2");
}
