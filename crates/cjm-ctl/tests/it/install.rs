//! `install-all`, `call PLUGIN`, `list`, `regenerate-manifest`, `repair`, `remove` and
//! `gc` end to end: the real binary, real uv environments from a local wheelhouse,
//! real workers, starting from an empty data folder.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{python, setup_wheelhouse, text, uv, version, wheelhouse, worker_wheel};

/// A scratch project: a wheelhouse, a plugins.yaml and an empty data folder.
struct Project(PathBuf);

impl Project {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cjm-ctl-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        wheelhouse(&dir.join("wheelhouse"));
        Self(dir)
    }

    /// Writes plugins.yaml with one offline entry per `(name, package)`.
    fn plugins(&self, entries: &[(&str, &str)]) {
        let version = version();
        let mut text = String::from("plugins:\n");
        for (name, package) in entries {
            let _ = write!(
                text,
                "  - name: {name}\n    env_name: {name}\n    package: {package}\n    python_version: \"{version}\"\n    find_links: [wheelhouse]\n    no_index: true\n"
            );
        }
        fs_err::write(self.0.join("plugins.yaml"), text).unwrap();
    }

    /// Runs `cjm-ctl --data-dir <project>/data ARGS` in the project folder.
    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_in(&self.0, args)
    }

    /// The same, in folder `cwd`.
    fn ctl_in(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
            .current_dir(cwd)
            .env("CJM_UV", uv())
            .env("CJM_WORKER_WHEEL", worker_wheel())
            .env_remove("CJM_DATA_DIR")
            .arg("--data-dir")
            .arg(self.0.join("data"))
            .args(args)
            .output()
            .unwrap()
    }

    fn manifest(&self, name: &str) -> PathBuf {
        self.0.join("data/manifests").join(format!("{name}.json"))
    }

    fn envs(&self) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(self.0.join("data/envs"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        !n.starts_with('.') && Path::new(n).extension().is_none_or(|x| x != "lock")
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn install_all_then_call_from_an_empty_data_dir() {
    let p = Project::new("e2e");
    p.plugins(&[
        ("demo-plugin-meta", "demo-plugin-meta"),
        ("demo-plugin-ep", "demo-plugin-ep"),
    ]);
    let stdout = ok(&p.ctl(&["install-all"]));
    assert!(
        stdout.contains("✓ demo-plugin-meta 1.2.0 installed (meta"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✓ demo-plugin-ep 0.3.0 installed (entry_point"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 installed, 0 up to date, 0 failed"),
        "{stdout}"
    );
    assert!(p.manifest("demo-plugin-meta").is_file() && p.manifest("demo-plugin-ep").is_file());

    // Each plugin runs in its own environment, with its own libdemo.
    let meta = json(&p.ctl(&[
        "call",
        "demo-plugin-meta",
        "--config",
        r#"{"greeting": "hi"}"#,
    ]));
    assert_eq!(meta["libdemo"], "1.0");
    assert_eq!(meta["config"]["greeting"], "hi");
    let ep = json(&p.ctl(&["call", "demo-plugin-ep", "--args", "[1, 2]"]));
    assert_eq!(
        (ep["libdemo"].as_str(), &ep["args"]),
        (Some("2.0"), &serde_json::json!([1, 2]))
    );

    // Installed already: nothing to do.
    let again = p.ctl(&["install-all", "--json"]);
    let doc = json(&again);
    assert_eq!(doc["ok"], true);
    let statuses: Vec<&str> = doc["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["unchanged", "unchanged"]);

    let list = json(&p.ctl(&["list", "--json", "--plugins", "plugins.yaml"]));
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo-plugin-ep", "demo-plugin-meta"]);
    assert!(list["plugins"][0]["env_exists"].as_bool().unwrap());
    let human = ok(&p.ctl(&["list", "--envs"]));
    assert!(
        human.contains("demo-plugin-meta v1.2.0 [demo/DemoPlugin]"),
        "{human}"
    );
    assert!(human.contains("used by demo-plugin-meta"), "{human}");
}

#[test]
fn a_failed_install_registers_nothing_and_says_why_in_one_message() {
    let p = Project::new("fail");
    p.plugins(&[
        ("demo-plugin-ep", "demo-plugin-ep"),
        ("broken", "demo-plugin-import-error"),
    ]);
    let out = p.ctl(&["install-all"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("✗ plugin broken: introspection failed: importing the metadata module 'demo_plugin_import_error.meta' failed: ModuleNotFoundError"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert!(text(&out.stdout).contains("1 installed, 0 up to date, 1 failed"));
    // The good one is installed; the broken one left neither manifest nor environment.
    assert!(p.manifest("demo-plugin-ep").is_file());
    assert!(!p.manifest("broken").exists());
    assert_eq!(p.envs().len(), 1);

    let doc = json(&p.ctl(&["install-all", "--json", "-p", "broken"]));
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["plugins"][0]["status"], "failed");
    assert!(
        doc["plugins"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_module_anywhere")
    );
}

#[test]
fn a_plugin_whose_schema_changed_is_reported_as_drifted_until_regenerated() {
    let p = Project::new("drift");
    p.plugins(&[("demo-plugin-meta", "demo-plugin-meta")]);
    ok(&p.ctl(&["install-all"]));
    let clean = p.ctl(&["call", "demo-plugin-meta"]);
    ok(&clean);
    assert!(
        !text(&clean.stderr).contains("drifted"),
        "{}",
        text(&clean.stderr)
    );

    // The plugin's code now reports a bigger schema than the manifest recorded.
    fs_err::create_dir_all(p.0.join("data/data")).unwrap();
    fs_err::write(
        p.0.join("data/data/schema-extra.json"),
        r#"{"loud": {"type": "boolean"}}"#,
    )
    .unwrap();
    let stored = json_file(&p.manifest("demo-plugin-meta"))["drift_tracking"]["config_schema_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let drifted = p.ctl(&["call", "demo-plugin-meta"]);
    ok(&drifted);
    let err = text(&drifted.stderr);
    assert!(
        err.contains("warning: plugin demo-plugin-meta has drifted"),
        "{err}"
    );
    assert!(err.contains(&stored), "the stored hash is named: {err}");
    assert!(
        err.contains("run `cjm-ctl regenerate-manifest demo-plugin-meta`"),
        "{err}"
    );

    let regen = ok(&p.ctl(&["regenerate-manifest", "demo-plugin-meta"]));
    assert!(regen.contains("config schema hash: "), "{regen}");
    let after = p.ctl(&["call", "demo-plugin-meta"]);
    ok(&after);
    assert!(
        !text(&after.stderr).contains("drifted"),
        "{}",
        text(&after.stderr)
    );
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn remove_repair_and_gc_keep_environments_and_manifests_consistent() {
    let p = Project::new("lifecycle");
    p.plugins(&[
        ("demo-plugin-meta", "demo-plugin-meta"),
        ("demo-plugin-ep", "demo-plugin-ep"),
    ]);
    ok(&p.ctl(&["install-all"]));
    assert_eq!(p.envs().len(), 2);

    // Without a terminal and without -y, nothing is removed.
    let refused = p.ctl(&["remove", "demo-plugin-ep"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("pass -y"),
        "{}",
        text(&refused.stderr)
    );
    assert!(p.manifest("demo-plugin-ep").is_file());

    ok(&p.ctl(&["remove", "demo-plugin-ep", "-y", "--keep-env"]));
    assert!(!p.manifest("demo-plugin-ep").exists());
    assert_eq!(p.envs().len(), 2, "--keep-env keeps it");
    let dry = json(&p.ctl(&["gc", "--dry-run", "--json"]));
    assert_eq!(dry["removed"].as_array().unwrap().len(), 1);
    assert_eq!(p.envs().len(), 2, "a dry run deletes nothing");
    ok(&p.ctl(&["gc"]));
    assert_eq!(p.envs().len(), 1);

    // From a folder without a plugins.yaml: the one it was installed from.
    let elsewhere = p.0.join("elsewhere");
    fs_err::create_dir_all(&elsewhere).unwrap();
    let repaired = ok(&p.ctl_in(&elsewhere, &["repair", "demo-plugin-meta"]));
    assert!(
        repaired.contains("✓ demo-plugin-meta rebuilt"),
        "{repaired}"
    );
    assert_eq!(
        json(&p.ctl(&["call", "demo-plugin-meta"]))["libdemo"],
        "1.0"
    );

    ok(&p.ctl(&["remove", "demo-plugin-meta", "-y"]));
    assert_eq!(p.envs(), Vec::<String>::new());
    let gone = p.ctl(&["call", "demo-plugin-meta"]);
    assert_eq!(gone.status.code(), Some(2));
    assert!(
        text(&gone.stderr).contains("plugin demo-plugin-meta is not installed"),
        "{}",
        text(&gone.stderr)
    );
}

/// `cjm-ctl install-all` with no uv anywhere: a `PATH` holding only `python3` (the
/// test venv's, with pip) and the system folders, no `CJM_UV`, and pip pointed at
/// `wheels` instead of an index, so nothing touches the network.
fn install_all_without_uv(p: &Project, wheels: &Path) -> Output {
    let bin = p.0.join("bin");
    fs_err::create_dir_all(&bin).unwrap();
    // A script, not a link: a link elsewhere would not find the venv's pyvenv.cfg.
    let script = bin.join("python3");
    fs_err::write(
        &script,
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", python().display()),
    )
    .unwrap();
    let mut perms = fs_err::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs_err::set_permissions(&script, perms).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    for dir in std::env::split_paths(&path) {
        assert!(!dir.join("uv").exists(), "{} has a uv", dir.display());
    }
    Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
        .current_dir(&p.0)
        .env_remove("CJM_UV")
        .env_remove("CJM_DATA_DIR")
        .env_remove("PIP_INDEX_URL")
        .env("PATH", path)
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", wheels)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("CJM_WORKER_WHEEL", worker_wheel())
        .args(["--data-dir"])
        .arg(p.0.join("data"))
        .arg("install-all")
        .output()
        .unwrap()
}

#[test]
fn install_all_on_a_data_folder_with_no_runtime_installs_the_pinned_uv_first() {
    let p = Project::new("no-runtime");
    p.plugins(&[("demo-plugin-ep", "demo-plugin-ep")]);
    let out = install_all_without_uv(&p, &setup_wheelhouse());
    let stdout = ok(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("uv not found (looked at $CJM_UV, ")
            && stderr.contains("installing uv 0.13.9 into"),
        "{stderr}"
    );
    assert!(
        stdout.contains("✓ demo-plugin-ep 0.3.0 installed"),
        "{stdout}"
    );
    assert!(p.0.join("data/runtime/bin/uv").is_file());

    // Offline with no uv wheel either: where it looked and how to provide one.
    let q = Project::new("no-runtime-offline");
    q.plugins(&[("demo-plugin-ep", "demo-plugin-ep")]);
    let out = install_all_without_uv(&q, &q.0.join("wheelhouse"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("looked at $CJM_UV, "), "{stderr}");
    assert!(stderr.contains("installing uv 0.13.9 with"), "{stderr}");
    assert!(stderr.contains("--uv PATH or set CJM_UV"), "{stderr}");
    assert!(!q.0.join("data/manifests").exists());
}

#[test]
fn install_all_takes_the_uv_to_use_from_the_command_line() {
    let p = Project::new("uv-flag");
    p.plugins(&[("demo-plugin-ep", "demo-plugin-ep")]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cjm-ctl"));
    cmd.current_dir(&p.0)
        .env_remove("CJM_UV")
        .env_remove("CJM_DATA_DIR")
        .env("CJM_WORKER_WHEEL", worker_wheel())
        .arg("--data-dir")
        .arg(p.0.join("data"))
        .args(["install-all", "--uv"]);
    let out = cmd.arg(uv()).output().unwrap();
    assert!(ok(&out).contains("1 installed"));
    assert!(!p.0.join("data/runtime").exists(), "nothing set up");
}
