//! The README's Rust examples are the programs in `examples/`, shown whole, and they
//! run: against real workers, with the test venv's interpreter.

use std::path::{Path, PathBuf};

use cjm::manifest::Manifest;
use serde_json::json;

#[path = "../examples/worker.rs"]
#[expect(dead_code, reason = "the example's own main is not called here")]
mod worker_example;

#[path = "../examples/manager.rs"]
#[expect(dead_code, reason = "the example's own main is not called here")]
mod manager_example;

use cjm_testkit::python;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_readme_worker_example_runs() {
    worker_example::run(&python(), &repo().join("examples/plugins")).unwrap();
}

#[test]
fn the_readme_manager_example_runs() {
    // The demo's shout plugin, registered as `install-all` would, but run from its
    // source folders with the test venv's interpreter.
    let dir = std::env::temp_dir().join(format!("cjm-readme-manager-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(dir.join("manifests")).unwrap();
    let packages = repo().join("examples/packages");
    let path: Vec<String> = [
        "cjm-text-plugin-shout",
        "cjm-text-plugin-system",
        "libdemo-1.0",
    ]
    .iter()
    .map(|p| packages.join(p).display().to_string())
    .collect();
    let mut m = Manifest::default();
    m.install.python_path = python().display().to_string();
    m.install
        .env_vars
        .insert("PYTHONPATH".into(), json!(path.join(":")));
    m.code.name = "cjm-text-plugin-shout".into();
    m.code.version = "1.0.0".into();
    m.code.description = "Renders text with libdemo 1.0".into();
    m.code.module = "cjm_text_plugin_shout.plugin".into();
    m.code.class_name = "ShoutPlugin".into();
    m.code.interface = "cjm_text_plugin_system.plugin_interface.TextPlugin".into();
    m.code.config_schema =
        json!({"type": "object", "properties": {"repeat": {"type": "integer", "default": 1}}})
            .as_object()
            .cloned();
    m.refresh_config_schema_hash();
    m.write(dir.join("manifests/cjm-text-plugin-shout.json"))
        .unwrap();
    manager_example::run(&dir, "cjm-text-plugin-shout").unwrap();
    let _ = fs_err::remove_dir_all(&dir);
}

/// The README shows each example from its first `use` line to its end, verbatim.
#[test]
fn the_readme_shows_the_examples_as_they_are() {
    let readme = fs_err::read_to_string(repo().join("README.md")).unwrap();
    for example in ["worker", "manager"] {
        let source =
            fs_err::read_to_string(repo().join(format!("crates/cjm/examples/{example}.rs")))
                .unwrap();
        let start = source.find("\nuse ").map_or(0, |i| i + 1);
        let shown = source[start..].trim_end();
        assert!(
            readme.contains(shown),
            "README.md does not show crates/cjm/examples/{example}.rs as it is (from its first `use`); copy it again"
        );
    }
}
