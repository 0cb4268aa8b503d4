use std::path::{Path, PathBuf};
use std::process::Command;

use cjm_env::{EnvRequest, EnvStore};

pub(crate) use cjm_testkit::{python, uv, worker_wheel};

pub(crate) use cjm_testkit::setup_wheelhouse;

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
