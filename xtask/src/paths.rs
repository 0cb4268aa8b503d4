//! Where things live in the workspace.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Absolute paths into the workspace; every child command runs with `root` as its directory.
#[derive(Debug)]
pub(crate) struct Paths {
    pub(crate) root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` or `target/`.
    pub(crate) target: PathBuf,
    /// `target/cjm/tools`: maturin, uv, pytest, mypy.
    pub(crate) tools: PathBuf,
    /// `target/cjm/venv`: the interpreter tests, the demo and the benchmarks run workers with.
    pub(crate) venv: PathBuf,
    /// `target/cjm/wheelhouse`: wheels for offline install tests (`CJM_WHEELHOUSE`).
    pub(crate) wheelhouse: PathBuf,
    /// `target/wheels`: where maturin puts the cjm-worker wheel.
    pub(crate) wheels: PathBuf,
    /// `xtask/requirements`: the pinned Python packages of both venvs.
    pub(crate) requirements: PathBuf,
}

impl Paths {
    pub(crate) fn discover() -> Result<Self> {
        // `cargo run` sets CARGO_MANIFEST_DIR for the binary too; the compile-time value
        // covers running target/debug/xtask directly from the same checkout.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let root = manifest_dir
            .parent()
            .with_context(|| {
                format!(
                    "xtask's manifest dir {} has no parent",
                    manifest_dir.display()
                )
            })?
            .to_path_buf();
        let root = fs_err::canonicalize(&root).context("finding the workspace root")?;
        // Cargo resolves a relative CARGO_TARGET_DIR against its working directory, which
        // for `cargo xtask` is ours too.
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                std::path::absolute(dir).context("resolving CARGO_TARGET_DIR")?
            }
            _ => root.join("target"),
        };
        Ok(Self {
            tools: target.join("cjm").join("tools"),
            venv: target.join("cjm").join("venv"),
            wheelhouse: target.join("cjm").join("wheelhouse"),
            wheels: target.join("wheels"),
            requirements: root.join("xtask").join("requirements"),
            target,
            root,
        })
    }

    /// The interpreter of the test venv, handed to tests as `CJM_PYTHON`.
    pub(crate) fn venv_python(&self) -> PathBuf {
        bin(&self.venv, "python")
    }

    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        bin(&self.tools, name)
    }

    /// `path` relative to the workspace root when it is inside it, for messages.
    pub(crate) fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

pub(crate) fn bin(venv: &Path, name: &str) -> PathBuf {
    venv.join("bin").join(name)
}
