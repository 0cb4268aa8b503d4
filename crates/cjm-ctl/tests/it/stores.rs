//! `set-secret`, `list-secrets` and `config get|set` on a scratch data dir.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::support::text;

const VALUE: &str = "tok-4f1e8a7c-very-secret";

struct Data(PathBuf);

impl Data {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cjm-ctl-stores-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("manifests")).unwrap();
        // An installed plugin with a config schema (nothing needs to run).
        let manifest = serde_json::json!({
            "format_version": "2.0",
            "install": {"python_path": "/nonexistent/python"},
            "code": {
                "name": "whisper", "version": "1.0.0", "description": "speech to text",
                "module": "whisper_plugin", "class": "Whisper",
                "interface": "cjm_transcription_plugin_system.TranscriptionPlugin",
                "config_schema": {"type": "object", "properties": {
                    "model": {"type": "string", "enum": ["tiny", "base"], "default": "tiny"},
                    "beam_size": {"type": "integer", "minimum": 1, "default": 5}
                }}
            }
        });
        fs_err::write(dir.join("manifests/whisper.json"), manifest.to_string()).unwrap();
        Self(dir)
    }

    fn ctl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
            .current_dir(&self.0)
            .env_remove("CJM_DATA_DIR")
            .arg("--data-dir")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

#[test]
fn secrets_are_stored_privately_and_listed_by_name_only() {
    let d = Data::new("secrets");
    let by_flag = d.ctl(
        &[
            "set-secret",
            "whisper",
            "HF_TOKEN",
            "--value",
            VALUE,
            "--force",
        ],
        None,
    );
    assert_eq!(by_flag.status.code(), Some(0), "{}", text(&by_flag.stderr));
    let by_stdin = d.ctl(
        &["set-secret", "whisper", "OTHER_KEY", "--force"],
        Some(&format!("{VALUE}-2\n")),
    );
    assert_eq!(
        by_stdin.status.code(),
        Some(0),
        "{}",
        text(&by_stdin.stderr)
    );
    let listed = d.ctl(&["list-secrets", "whisper", "--json"], None);
    let keys: Vec<String> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(keys, ["HF_TOKEN", "OTHER_KEY"]);
    for out in [&by_flag, &by_stdin, &listed] {
        assert!(!text(&out.stdout).contains(VALUE) && !text(&out.stderr).contains(VALUE));
    }
    let file = d.0.join("secrets/secrets.json");
    let stored: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        stored["__default__"]["whisper"]["OTHER_KEY"],
        format!("{VALUE}-2"),
        "stdin's newline is not part of it"
    );
    assert_eq!(
        fs_err::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs_err::metadata(d.0.join("secrets"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

#[test]
fn config_set_validates_and_config_get_shows_what_a_load_would_use() {
    let d = Data::new("config");
    let bad = d.ctl(
        &["config", "set", "whisper", "model=huge", "beam_size=0"],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains("/model: must be one of \"tiny\", \"base\""),
        "{err}"
    );
    assert!(err.contains("/beam_size: must be ≥ 1"), "{err}");

    let ok = d.ctl(&["config", "set", "whisper", "model=base"], None);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let got = d.ctl(&["config", "get", "whisper"], None);
    let doc: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(
        doc["config"],
        serde_json::json!({"model": "base", "beam_size": 5})
    );
    assert_eq!(doc["persisted"], true);

    let other = d.ctl(&["config", "get", "whisper", "--instance", "w2"], None);
    assert_eq!(other.status.code(), Some(2));
    assert!(text(&other.stderr).contains("only a plugin's default instance"));
}
