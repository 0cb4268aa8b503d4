//! What the end-to-end tests share: the interpreter, uv and wheel `cargo xtask test`
//! provides, and the test wheelhouse.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) use cjm_testkit::{python, uv, worker_wheel};

/// The test interpreter's `major.minor` (uv finds it on this machine).
pub(crate) fn version() -> String {
    let out = Command::new(python())
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .expect("run the test Python");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds cjm-env's test wheelhouse (libdemo 1.0 and 2.0, the demo plugins) in `out`.
pub(crate) fn wheelhouse(out: &Path) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../cjm-env/tests/fixtures/make_wheelhouse.py");
    let status = Command::new(python())
        .arg(script)
        .arg(out)
        .status()
        .expect("run make_wheelhouse.py");
    assert!(status.success(), "building the test wheelhouse failed");
}

/// Output bytes as text.
/// The wheels `cargo xtask setup` downloads for offline tests (`CJM_WHEELHOUSE`),
/// the pinned uv's among them.
pub(crate) fn setup_wheelhouse() -> PathBuf {
    std::env::var_os("CJM_WHEELHOUSE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/cjm/wheelhouse"),
        PathBuf::from,
    )
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
