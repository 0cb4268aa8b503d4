//! `cjm-ctl` as an operator runs it, against real workers.

use std::path::PathBuf;
use std::process::{Command, Output};

mod call;
mod hostile;
mod install;
mod jobs;
mod stores;
mod support;
mod verbs;

use support::{python, text};

fn ctl(args: &[&str]) -> Output {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
        .arg("call")
        .arg("--python")
        .arg(python())
        .arg("--path")
        .arg(plugins)
        .arg("--module")
        .arg("demo_plugins")
        .args(args)
        .output()
        .expect("run cjm-ctl")
}

/// Exit code, stdout and stderr, as one text for a snapshot.
fn transcript(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn call_prints_the_result_as_json_on_stdout() {
    let out = ctl(&["--class", "TextStats", "execute", r#""one two one""#]);
    insta::assert_snapshot!(transcript(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v, serde_json::json!({"words": 3, "unique": 2, "chars": 11}));
}

#[test]
fn a_stream_prints_one_json_line_per_chunk() {
    let out = ctl(&[
        "--class",
        "Transcriber",
        "execute_stream",
        "--kwargs",
        r#"{"segments": 3}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3);
}

#[test]
fn a_class_that_does_not_exist_exits_3_with_a_hint() {
    let out = ctl(&["--class", "Missing", "execute"]);
    insta::assert_snapshot!(transcript(&out));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("could not be loaded") && err.contains("hint:"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "errors never go to stdout");
}

#[test]
fn a_plugin_error_exits_1_with_its_traceback() {
    let out = ctl(&[
        "--class",
        "ImageOps",
        "execute",
        "[1]",
        "--kwargs",
        r#"{"op": "rotate"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown op 'rotate'") && err.contains("Traceback"),
        "{err}"
    );
}

#[test]
fn an_argument_that_is_not_json_exits_2() {
    let out = ctl(&["--class", "TextStats", "execute", "not json"]);
    insta::assert_snapshot!(transcript(&out));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not valid JSON"));
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cjm-ctl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run cjm-ctl")
}

#[test]
fn validate_accepts_a_manifest_the_reference_wrote() {
    let out = validate(&["tests/fixtures/manifest.json"]);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn validate_lists_every_problem_of_a_plugins_yaml_with_its_line() {
    let out = validate(&["tests/fixtures/bad_plugins.yaml"]);
    insta::assert_snapshot!(transcript(&out));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn validate_json_is_one_object_on_stdout() {
    let out = validate(&["--json", "tests/fixtures/bad_plugins.yaml"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["valid"], serde_json::json!(false));
    assert!(v["errors"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(out.stderr.is_empty());
}

#[test]
fn validate_refuses_a_file_that_does_not_exist_as_a_usage_error() {
    let out = validate(&["tests/fixtures/missing.json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing file is bad usage (README)"
    );
    insta::assert_snapshot!(transcript(&out));
}
