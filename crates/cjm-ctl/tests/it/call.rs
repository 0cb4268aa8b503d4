//! `cjm-ctl call PLUGIN` goes through the manager: the worker an operator gets is
//! the one an application gets (persisted and validated configuration, secrets,
//! visible `WORKER_ENV` variables). Real workers, with the manager's fixture
//! plugins and the test venv's interpreter.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::support::{python, text};

struct Data(PathBuf);

impl Data {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cjm-ctl-call-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("manifests")).unwrap();
        Self(dir)
    }

    /// A manifest for the manager's `Counter` fixture under `name`.
    fn counter(&self, name: &str, worker_env: &Value) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cjm-manager/tests/fixtures");
        let mut m = cjm_manifest::Manifest::default();
        m.install.python_path = python().display().to_string();
        m.install
            .env_vars
            .insert("PYTHONPATH".into(), json!(fixtures.display().to_string()));
        m.code.name = name.into();
        m.code.version = "1.0.0".into();
        m.code.description = "a test plugin".into();
        m.code.module = "manager_plugins".into();
        m.code.class_name = "Counter".into();
        m.code.interface = "cjm_demo_plugin_system.Demo".into();
        m.code.config_schema = json!({"type": "object", "properties": {
            "step": {"type": "integer", "default": 1, "minimum": 1},
            "label": {"type": "string", "default": "x"},
            "rendezvous": {"type": "integer", "default": 0},
        }})
        .as_object()
        .cloned();
        m.code.worker_env = worker_env.as_array().cloned();
        m.refresh_config_schema_hash();
        m.write(self.0.join(format!("manifests/{name}.json")))
            .unwrap();
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
            .current_dir(&self.0)
            .env_remove("CJM_DATA_DIR")
            .arg("--data-dir")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn call_json(&self, args: &[&str]) -> Value {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

#[test]
fn call_gives_a_plugin_its_secret_and_refuses_to_start_it_without() {
    let d = Data::new("secret");
    d.counter(
        "needs-token",
        &json!([
            {"name": "DEMO_TOKEN", "secret": true, "required": true, "description": "the API key"},
            {"name": "VISIBLE", "default": "shown"}
        ]),
    );
    let without = d.ctl(&["call", "needs-token", "env"]);
    let err = text(&without.stderr);
    assert_eq!(without.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "plugin needs-token needs the secret DEMO_TOKEN (the API key), which is not set"
        ) && err.contains("hint: set it with `cjm-ctl set-secret needs-token DEMO_TOKEN`"),
        "{err}"
    );
    let set = d.ctl(&[
        "set-secret",
        "needs-token",
        "DEMO_TOKEN",
        "--value",
        "tok-123",
    ]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    let env = d.call_json(&["call", "needs-token", "env"]);
    assert_eq!(env["DEMO_TOKEN"], "tok-123");
    assert_eq!(
        env["VISIBLE"], "shown",
        "a declared default reaches the worker"
    );
    let env = d.call_json(&["call", "needs-token", "env", "--env", "VISIBLE=mine"]);
    assert_eq!(env["VISIBLE"], "mine", "--env overrides a visible variable");
    let refused = d.ctl(&["call", "needs-token", "env", "--env", "DEMO_TOKEN=x"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("DEMO_TOKEN is a secret of plugin needs-token"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn call_uses_the_persisted_configuration_and_validates_a_given_one() {
    let d = Data::new("config");
    d.counter("counter", &json!([]));
    let first = d.call_json(&["call", "counter"]);
    assert_eq!(
        first["config"],
        json!({"step": 1, "label": "x", "rendezvous": 0}),
        "the schema's defaults"
    );
    let set = d.ctl(&["config", "set", "counter", "step=3"]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    let persisted = d.call_json(&["call", "counter"]);
    assert_eq!(persisted["config"]["step"], 3, "{persisted}");
    let given = d.call_json(&["call", "counter", "--config", r#"{"label": "y"}"#]);
    assert_eq!(
        given["config"],
        json!({"step": 1, "label": "y", "rendezvous": 0})
    );
    let bad = d.ctl(&["call", "counter", "--config", r#"{"step": 0, "colour": 1}"#]);
    let err = text(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("step") && err.contains("colour"),
        "every problem at once: {err}"
    );
}

#[test]
fn a_binary_result_is_refused_without_output_and_written_with_it() {
    let d = Data::new("bytes");
    d.counter("counter", &json!([]));
    let refused = d.ctl(&["call", "counter", "bytes"]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the result holds 1048576 bytes of binary data (at $.audio)")
            && err.contains("--output FILE"),
        "{err}"
    );
    assert!(refused.stdout.is_empty());
    let file = d.0.join("audio.raw");
    let out = d.call_json(&[
        "call",
        "counter",
        "bytes",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out["rate"], 16000);
    assert_eq!(out["audio"]["__bytes__"], 1_048_576);
    assert_eq!(out["audio"]["file"], json!(file));
    let written = fs_err::read(&file).unwrap();
    assert_eq!(written.len(), 1_048_576);
    assert_eq!(&written[..4], &[0, 1, 2, 3]);
}

#[test]
fn a_closed_stdout_pipe_ends_a_stream_quietly() {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
        .args(["call", "--python"])
        .arg(python())
        .arg("--path")
        .arg(plugins)
        .args([
            "--module",
            "demo_plugins",
            "--class",
            "Transcriber",
            "execute_stream",
            "--kwargs",
            r#"{"segments": 3}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `| head -1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}

#[test]
fn schema_shows_each_field_with_the_configuration_a_load_would_use() {
    let d = Data::new("schema");
    d.counter("counter", &json!([]));
    let doc = d.call_json(&["schema", "counter", "--json"]);
    assert_eq!(doc["persisted"], false);
    assert_eq!(
        doc["config"],
        json!({"step": 1, "label": "x", "rendezvous": 0})
    );
    assert_eq!(doc["schema"]["properties"]["step"]["minimum"], 1);
    let set = d.ctl(&["config", "set", "counter", "step=4"]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    let out = d.ctl(&["schema", "counter"]);
    let shown = text(&out.stdout);
    assert!(shown.contains("configuration persisted"), "{shown}");
    assert!(
        shown.contains("  step: integer = 4\n      default 1; minimum 1"),
        "{shown}"
    );
}

#[test]
fn info_names_variables_and_secrets_but_never_a_secret_value() {
    let d = Data::new("info");
    d.counter(
        "needs-token",
        &json!([
            {"name": "DEMO_TOKEN", "secret": true, "required": true},
            {"name": "VISIBLE", "default": "shown"}
        ]),
    );
    let before = d.call_json(&["info", "needs-token", "--json"]);
    assert_eq!(before["secrets"][0]["name"], "DEMO_TOKEN");
    assert_eq!(before["secrets"][0]["set"], false);
    assert_eq!(before["worker_env"][0]["default"], "shown");
    assert_eq!(before["environment"]["exists"], true);
    let text_before = text(&d.ctl(&["info", "needs-token"]).stdout);
    assert!(
        text_before.contains(
            "DEMO_TOKEN (secret, REQUIRED, not set: `cjm-ctl set-secret needs-token DEMO_TOKEN`)"
        ),
        "{text_before}"
    );
    let set = d.ctl(&[
        "set-secret",
        "needs-token",
        "DEMO_TOKEN",
        "--value",
        "tok-very-secret",
    ]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    let after = d.ctl(&["info", "needs-token", "--json"]);
    let shown = text(&after.stdout);
    assert!(shown.contains("\"set\": true"), "{shown}");
    assert!(!shown.contains("tok-very-secret") && !text(&after.stderr).contains("tok-very-secret"));
}

#[test]
fn a_call_past_its_timeout_names_the_flag_to_raise() {
    let d = Data::new("timeout");
    d.counter("counter", &json!([]));
    // `block` waits for a release file that never comes (bounded at 20 s by the fixture).
    let out = d.ctl(&["call", "counter", "block", "--timeout", "0.2"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("timed out after 0.2s"), "{err}");
    assert!(
        err.contains("hint: raise --timeout (it was 0.2 s)"),
        "{err}"
    );
}

#[test]
fn estimate_size_without_a_plugins_yaml_measures_the_installed_plugins() {
    let d = Data::new("size");
    d.counter("counter", &json!([]));
    let out = d.ctl(&["estimate-size"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        shown.contains("counter (env: ") && shown.contains("installed: "),
        "{shown}"
    );
    let missing = d.ctl(&["estimate-size", "-p", "other"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("plugin other is not installed (installed: counter)"));
}
