//! cjm-manifest's integration tests. Fixtures under `tests/fixtures/` were
//! written by the Python reference itself (`gen_manifests.py`); the tests only
//! read them.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns read fixtures; a malformed fixture should fail the test"
)]

mod discovery;
mod hashes;
mod manifest_v1;
mod manifest_v2;
mod plugins_yaml;
mod validation;

use std::path::{Path, PathBuf};

pub(crate) fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

pub(crate) fn read_fixture(relative: &str) -> String {
    fs_err::read_to_string(fixture(relative)).unwrap()
}

/// Every `<dir>/*.json` fixture but the `*.<suffix>.json` ones, sorted.
pub(crate) fn cases(dir: &str, skip_suffix: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs_err::read_dir(fixture(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && (skip_suffix.is_empty() || !name.ends_with(skip_suffix))
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures in {dir}");
    cases
}
