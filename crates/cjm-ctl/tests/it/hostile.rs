//! `cjm-ctl` fed what an attacker or an unlucky operator would feed it: paths for
//! names, hand-edited manifests, odd numbers, endless files, broken stores. Each is
//! refused with a message that says what and why, and nothing outside the data
//! folder is touched. Regression tests for issue 10 ("hostile input and faults").

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::support::text;

/// A scratch folder holding a data folder `cjm` and, beside it, a `victim`
/// folder that no command may touch.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cjm-ctl-hostile-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("cjm/manifests")).unwrap();
        fs_err::create_dir_all(dir.join("cjm/envs")).unwrap();
        fs_err::create_dir_all(dir.join("victim")).unwrap();
        fs_err::write(dir.join("victim/precious.txt"), "keep me").unwrap();
        Self(dir)
    }

    fn data(&self) -> PathBuf {
        self.0.join("cjm")
    }

    /// Writes `manifests/<file>.json` with `install` and `code` merged into a
    /// minimal valid manifest.
    fn manifest(&self, file: &str, install: serde_json::Value, code: serde_json::Value) {
        let mut doc = serde_json::json!({
            "format_version": "2.0",
            "install": {"python_path": "/nonexistent/python"},
            "code": {
                "name": file, "version": "1.0.0", "description": "a plugin",
                "module": "m", "class": "C", "interface": "cjm_demo_plugin_system.Demo"
            }
        });
        for (section, extra) in [("install", install), ("code", code)] {
            for (k, v) in extra.as_object().unwrap() {
                doc[section][k] = v.clone();
            }
        }
        fs_err::write(
            self.data().join(format!("manifests/{file}.json")),
            doc.to_string(),
        )
        .unwrap();
    }

    /// A plugin that declares one required secret.
    fn gemini(&self) {
        self.manifest(
            "gemini",
            serde_json::json!({}),
            serde_json::json!({"worker_env": [
                {"name": "GEMINI_API_KEY", "secret": true, "required": true},
                {"name": "GEMINI_MODEL", "default": "flash"}
            ]}),
        );
    }

    fn ctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
            .current_dir(&self.0)
            .env_remove("CJM_DATA_DIR")
            .env_remove("CJM_UV")
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn victim_intact(&self) {
        assert_eq!(
            fs_err::read_to_string(self.0.join("victim/precious.txt")).unwrap(),
            "keep me",
            "a file outside the data folder was touched"
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

/// No panic (exit 101, "panicked"), ever.
#[track_caller]
fn no_panic(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{what} panicked: {err}");
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
}

#[test]
fn remove_never_follows_an_env_key_out_of_the_data_folder() {
    let s = Scratch::new("env-key");
    s.manifest(
        "evil",
        serde_json::json!({"env_key": "../../victim", "backend": "uv"}),
        serde_json::json!({}),
    );
    let out = s.ctl(&["remove", "evil", "-y"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plugin evil is not installed")
            && err.contains("install.env_key")
            && err.contains("\"../../victim\" cannot be an environment key: it contains `/`"),
        "{err}"
    );
    s.victim_intact();
    assert!(
        s.data().join("manifests/evil.json").is_file(),
        "the manifest stays for the operator to look at"
    );
    // A conda environment name and a plugin name that are paths, likewise.
    s.manifest(
        "evil-conda",
        serde_json::json!({"conda_env": "../../victim", "backend": "conda"}),
        serde_json::json!({}),
    );
    s.manifest(
        "evil-name",
        serde_json::json!({}),
        serde_json::json!({"name": "../victim"}),
    );
    for name in ["evil-conda", "evil-name"] {
        let out = s.ctl(&["remove", name, "-y"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("cannot be"), "{name}: {err}");
    }
    let gc = s.ctl(&["gc"]);
    assert_ne!(
        gc.status.code(),
        Some(0),
        "gc refuses while manifests cannot be read"
    );
    s.victim_intact();
}

#[test]
fn every_verb_refuses_a_plugin_name_that_is_a_path() {
    let s = Scratch::new("names");
    fs_err::create_dir_all(s.data().join("secrets")).unwrap();
    fs_err::write(s.data().join("secrets/secrets.json"), "{}").unwrap();
    for name in ["../secrets/secrets", "..", "a/b", "/etc/passwd"] {
        let verbs: Vec<Vec<&str>> = vec![
            vec!["remove", name, "-y"],
            vec!["repair", name],
            vec!["regenerate-manifest", name],
            vec!["set-secret", name, "KEY", "--value", "v"],
            vec!["list-secrets", name],
            vec!["config", "get", name],
            vec!["config", "set", name, "a=1"],
            vec!["install-all", "-p", name],
            vec!["call", name],
        ];
        for args in verbs {
            let out = s.ctl(&args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("a plugin name") && err.contains("file names"),
                "{args:?}: {err}"
            );
        }
    }
    s.victim_intact();
    assert_eq!(
        fs_err::read_to_string(s.data().join("secrets/secrets.json")).unwrap(),
        "{}"
    );
}

#[test]
fn a_plugins_yaml_name_that_is_a_path_is_refused_with_its_line() {
    let s = Scratch::new("yaml-names");
    let yaml = s.0.join("plugins.yaml");
    fs_err::write(
        &yaml,
        "plugins:\n  - name: ../../x\n    env_name: a/b\n    package: p\n    python_version: \"3.11\"\n",
    )
    .unwrap();
    let out = s.ctl(&[OsStr::new("validate"), yaml.as_os_str()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("plugins[0].name (line 2): \"../../x\" cannot be used: it contains `/`"),
        "{err}"
    );
    assert!(err.contains("plugins[0].env_name (line 3)"), "{err}");
    let out = s.ctl(&[
        OsStr::new("install-all"),
        OsStr::new("--plugins"),
        yaml.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    s.victim_intact();
}

#[test]
fn an_unknown_plugins_yaml_key_is_a_warning_that_names_the_key_meant() {
    let s = Scratch::new("yaml-unknown");
    let yaml = s.0.join("plugins.yaml");
    fs_err::write(
        &yaml,
        "plugins:\n  - name: p\n    env_name: e\n    package: p\n    python_version: \"3.11\"\n    find_link: [wh]\n    colour: blue\nextra_top: 1\n",
    )
    .unwrap();
    let out = s.ctl(&[OsStr::new("validate"), yaml.as_os_str()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "warning: plugins[0].find_link (line 6): unknown key ignored; did you mean `find_links`?"
        ),
        "{err}"
    );
    assert!(
        err.contains("plugins[0].colour (line 7): unknown key ignored (known: name, env_name"),
        "{err}"
    );
    assert!(
        err.contains("extra_top (line 8): unknown key ignored"),
        "{err}"
    );
    let json = s.ctl(&[
        OsStr::new("validate"),
        OsStr::new("--json"),
        yaml.as_os_str(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["warnings"].as_array().map(Vec::len), Some(3));
}

#[test]
fn set_secret_refuses_an_empty_key_or_one_with_an_equals_sign() {
    let s = Scratch::new("secret-keys");
    s.gemini();
    for key in ["", "A=B", "="] {
        let out = s.ctl(&["set-secret", "gemini", key, "--value", "v", "--force"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key:?}: {err}");
        assert!(err.contains("cannot store secret"), "{key:?}: {err}");
    }
    assert!(
        !s.data().join("secrets/secrets.json").exists(),
        "nothing was stored"
    );
}

#[test]
fn set_secret_refuses_an_unknown_plugin_or_an_undeclared_key_unless_forced() {
    let s = Scratch::new("secret-declared");
    s.gemini();
    let typo = s.ctl(&["set-secret", "gemni", "GEMINI_API_KEY", "--value", "v"]);
    let err = text(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plugin gemni is not installed (installed: gemini)")
            && err.contains("--force"),
        "{err}"
    );
    let undeclared = s.ctl(&["set-secret", "gemini", "GEMINI_KEY", "--value", "v"]);
    let err = text(&undeclared.stderr);
    assert_eq!(undeclared.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not declare a secret GEMINI_KEY")
            && err.contains("its secrets: GEMINI_API_KEY"),
        "{err}"
    );
    let visible = s.ctl(&["set-secret", "gemini", "GEMINI_MODEL", "--value", "v"]);
    assert!(
        text(&visible.stderr)
            .contains("GEMINI_MODEL is a visible variable of plugin gemini, not a secret"),
        "{}",
        text(&visible.stderr)
    );
    assert!(!s.data().join("secrets/secrets.json").exists());
    let ok = s.ctl(&["set-secret", "gemini", "GEMINI_API_KEY", "--value", "v"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let forced = s.ctl(&["set-secret", "later", "TOKEN", "--value", "v", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
}

#[test]
fn odd_numbers_and_strings_are_usage_errors_never_panics() {
    let s = Scratch::new("odd");
    s.gemini();
    let odd = [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "-1",
        "0",
        "-0",
        "1e300",
        "1e309",
        "",
        " ",
        "abc",
        "0x10",
        "1_000",
        "99999999999999999999",
    ];
    for value in odd {
        for args in [
            vec!["call", "gemini", "--timeout", value],
            vec!["doctor", "--no-drift", "--timeout", value],
            vec!["install-all", "-j", value],
        ] {
            let out = s.ctl(&args);
            no_panic(&out, &format!("{args:?}"));
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
    }
    // Every verb, run once with the fewest arguments it takes: none may panic
    // (a flag that two layers both define panics only when it is read).
    for args in [
        vec!["setup-runtime", "--help"],
        vec!["list"],
        vec!["list", "--envs", "--json"],
        vec!["-v", "list"],
        vec!["-vv", "list"],
        vec!["-q", "list"],
        vec!["estimate-size", "--offline"],
        vec!["-v", "estimate-size", "--offline"],
        vec!["gc", "--dry-run"],
        vec!["doctor", "--no-drift"],
        vec!["info", "gemini"],
        vec!["schema", "gemini"],
        vec!["list-secrets", "gemini"],
        vec!["config", "get", "gemini"],
        vec!["completions", "bash"],
        vec!["validate", "nothing.json"],
        vec!["regenerate-manifest", "gemini"],
        vec!["repair", "gemini"],
        vec!["remove", "gemini"],
    ] {
        let out = s.ctl(&args);
        no_panic(&out, &format!("{args:?}"));
    }
    // A timeout that is fine gets past parsing (and fails later, on the secret).
    let out = s.ctl(&["call", "gemini", "--timeout", "1e-3"]);
    no_panic(&out, "a tiny timeout");
    assert!(
        text(&out.stderr).contains("needs the secret GEMINI_API_KEY"),
        "{}",
        text(&out.stderr)
    );
    // Arguments that are not UTF-8, and odd JSON.
    let bad = OsStr::from_bytes(b"gem\xffini");
    for args in [
        vec![OsStr::new("call"), bad],
        vec![OsStr::new("list-secrets"), bad],
        vec![
            OsStr::new("call"),
            OsStr::new("gemini"),
            OsStr::new("--args"),
            OsStr::new(
                "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            ),
        ],
        vec![
            OsStr::new("call"),
            OsStr::new("gemini"),
            OsStr::new("--args"),
            OsStr::new("1e999999"),
        ],
        vec![
            OsStr::new("config"),
            OsStr::new("set"),
            OsStr::new("gemini"),
            OsStr::new("=="),
        ],
    ] {
        let out = s.ctl(&args);
        no_panic(&out, &format!("{args:?}"));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn endless_files_are_refused_after_8_mib() {
    let s = Scratch::new("endless");
    let out = s.ctl(&["validate", "--format", "manifest", "/dev/zero"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/dev/zero is larger than 8 MiB"), "{err}");
    let out = s.ctl(&["validate", "--format", "plugins_yaml", "/dev/zero"]);
    assert!(
        text(&out.stderr).contains("larger than 8 MiB"),
        "{}",
        text(&out.stderr)
    );
    let out = s.ctl(&["--cjm-config", "/dev/zero", "list"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("larger than 8 MiB"), "{err}");
}

#[test]
fn doctor_fails_on_a_corrupt_secrets_file() {
    let s = Scratch::new("doctor-secrets");
    fs_err::create_dir_all(s.data().join("secrets")).unwrap();
    fs_err::write(
        s.data().join("secrets/secrets.json"),
        "{\"__default__\": {oops",
    )
    .unwrap();
    let out = s.ctl(&["doctor", "--no-drift"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("secrets"))
        .unwrap_or_default();
    assert!(
        line.starts_with("FAIL") && line.contains("not valid JSON"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cjm never rewrites a broken secrets file"),
        "{stdout}"
    );
}

#[test]
fn doctor_names_a_required_secret_that_is_not_set() {
    let s = Scratch::new("doctor-required");
    s.gemini();
    let out = s.ctl(&["doctor", "--no-drift", "--json"]);
    let check = secrets_check(&out);
    assert_eq!(check["status"], "fail", "{check}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("gemini: GEMINI_API_KEY"),
        "{check}"
    );
    assert!(
        check["hint"]
            .as_str()
            .unwrap()
            .contains("cjm-ctl set-secret gemini GEMINI_API_KEY"),
        "{check}"
    );
    let set = s.ctl(&["set-secret", "gemini", "GEMINI_API_KEY", "--value", "v"]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    let again = s.ctl(&["doctor", "--no-drift", "--json"]);
    let check = secrets_check(&again);
    assert_eq!(check["status"], "ok", "{check}");
}

#[test]
fn a_closed_stdout_pipe_ends_any_verb_quietly() {
    let s = Scratch::new("pipe");
    // More output than a pipe holds (64 KiB), so the writer meets the closed end
    // whichever of the two goes first.
    for i in 0..1500 {
        s.manifest(
            &format!("plugin-{i:03}"),
            serde_json::json!({}),
            serde_json::json!({}),
        );
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
        .current_dir(&s.0)
        .env_remove("CJM_DATA_DIR")
        .arg("--data-dir")
        .arg(s.data())
        .args(["list", "--envs"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the pipe at once, as `| head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}

/// The `secrets` check of `doctor --json`'s output.
fn secrets_check(out: &Output) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "secrets")
        .cloned()
        .unwrap()
}
