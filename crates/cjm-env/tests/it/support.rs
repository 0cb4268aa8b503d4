use std::path::{Path, PathBuf};
use std::process::Command;

use cjm_env::{EnvRequest, EnvStore};

/// The interpreter environments are built from (`CJM_PYTHON`, as `cargo xtask test`
/// sets it; any `CPython` ≥ 3.9 would do).
pub(crate) fn python() -> PathBuf {
    std::env::var_os("CJM_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/cjm/venv/bin/python"),
        PathBuf::from,
    )
}

/// The pinned uv (`CJM_UV`, as `cargo xtask test` sets it).
pub(crate) fn uv() -> PathBuf {
    std::env::var_os("CJM_UV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/cjm/tools/bin/uv"),
        PathBuf::from,
    )
}

/// The wheels `cargo xtask setup` downloads for offline install tests (pip, uv,
/// `flit_core`, the reference package and its dependencies): `CJM_WHEELHOUSE`, as
/// `cargo xtask test` sets it.
pub(crate) fn setup_wheelhouse() -> PathBuf {
    std::env::var_os("CJM_WHEELHOUSE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/cjm/wheelhouse"),
        PathBuf::from,
    )
}

/// A scratch folder removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cjm-env-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

/// A wheelhouse of tiny packages (libdemo 1.0 and 2.0, plugins depending on each).
pub(crate) fn wheelhouse(dir: &Path) -> PathBuf {
    let out = dir.join("wheelhouse");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_wheelhouse.py");
    let status = Command::new(python())
        .arg(script)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "building the test wheelhouse failed");
    out
}

/// A store in `dir` with a private uv cache, and an offline request builder.
pub(crate) fn store(dir: &Path) -> EnvStore {
    EnvStore::new(dir.join("envs"), uv(), "0.1.0-test").cache_dir(dir.join("uv-cache"))
}

pub(crate) fn request(wheelhouse: &Path, requirements: &[&str]) -> EnvRequest {
    let mut req = EnvRequest::uv(python().to_string_lossy(), requirements.iter().copied());
    req.find_links = vec![wheelhouse.to_owned()];
    req.no_index = true;
    req
}

/// Runs `code` with an environment's interpreter; its stdout, trimmed.
pub(crate) fn run_python(python: &Path, code: &str) -> String {
    let out = Command::new(python).args(["-c", code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The cjm-worker wheel to install into environments: `CJM_WORKER_WHEEL`, as
/// `cargo xtask test` sets it, else the newest one `cargo xtask wheel` built.
pub(crate) fn worker_wheel() -> PathBuf {
    if let Some(w) = std::env::var_os("CJM_WORKER_WHEEL") {
        return PathBuf::from(w);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wheels");
    fs_err::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .max_by_key(|p| fs_err::metadata(p).and_then(|m| m.modified()).ok())
        .expect("no cjm-worker wheel: run `cargo xtask wheel` (or `cargo xtask test`)")
}
