//! `cargo xtask wheel`: the cjm-worker wheel, built with the tools venv's maturin and
//! installed into the test venv.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::cmd::Cmd;
use crate::paths::Paths;
use crate::{Failure, failure};

/// maturin's `-m` takes the crate's Cargo.toml, not the pyproject.toml; it reads the
/// pyproject.toml beside it (module name, Python source directory).
const MANIFEST: &str = "crates/cjm-worker/Cargo.toml";

/// The cargo profile the extension is compiled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// `dev`: what `cargo xtask test` uses; after a change it rebuilds in 1–2 s where
    /// release takes 15 s.
    Debug,
    /// `release`: what the demo and the benchmarks measure.
    Release,
}

/// Builds the wheel, installs it into the test venv and returns its absolute path.
/// Expects `setup` to have run.
pub(crate) fn build_and_install(paths: &Paths, profile: Profile) -> Result<PathBuf> {
    // maturin rewrites the wheel on every build, so the newest one after this instant is
    // ours; the slack covers file systems with coarse timestamps.
    let started = SystemTime::now() - Duration::from_secs(2);
    let mut maturin = Cmd::new(paths.tool("maturin"), &paths.root)
        .args(["build", "-m", MANIFEST, "--out"])
        .arg(&paths.wheels)
        .arg("--interpreter")
        .arg(paths.venv_python())
        .stdout_to_stderr();
    maturin = match profile {
        Profile::Release => maturin.arg("--release"),
        // A debug wheel never leaves this machine, so it skips the manylinux audit and the
        // compression: 0.7 s instead of 3 s of packaging for its 17 MB library, and a
        // plain `linux_x86_64` tag, which pip and uv take on any Linux.
        Profile::Debug => maturin.args(["--auditwheel", "skip", "--compression-method", "stored"]),
    };
    maturin.run().map_err(|e| {
        e.context(Failure::new(
            "wheel: building the cjm-worker wheel failed",
            "fix the build errors above (`cargo build -p cjm-worker` shows the same ones)",
        ))
    })?;
    let wheel = newest_wheel(paths, started)?;

    Cmd::new(paths.venv_python(), &paths.root)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--force-reinstall", "--no-deps"])
        .arg(&wheel)
        .stdout_to_stderr()
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "wheel: installing the wheel into the test venv failed",
                "`rm -rf target/cjm/venv && cargo xtask setup` rebuilds the venv",
            ))
        })?;

    // A wheel that installs but does not import (a missing symbol, a broken __init__.py)
    // would otherwise surface as a confusing failure in the first test that spawns a worker.
    Cmd::new(paths.venv_python(), &paths.root)
        .args(["-c", "import cjm_worker._native"])
        .stdout_to_stderr()
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "wheel: the installed wheel does not import",
                "the traceback above says why; crates/cjm-worker/python/cjm_worker/ is part of the wheel",
            ))
        })?;
    eprintln!(
        "wheel: installed {} into {}",
        paths.show(&wheel),
        paths.show(&paths.venv)
    );
    Ok(wheel)
}

fn newest_wheel(paths: &Paths, since: SystemTime) -> Result<PathBuf> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in fs_err::read_dir(&paths.wheels).context("wheel: looking for the built wheel")? {
        let entry = entry.context("wheel: looking for the built wheel")?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("cjm_worker-") && name.ends_with(".whl")) {
            continue;
        }
        let modified = fs_err::metadata(entry.path())?.modified()?;
        if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
            newest = Some((modified, entry.path()));
        }
    }
    match newest {
        Some((modified, path)) if modified >= since => Ok(path),
        _ => Err(failure(
            format!(
                "wheel: maturin succeeded but wrote no new cjm_worker-*.whl into {}",
                paths.show(&paths.wheels)
            ),
            "check maturin's output above for where the wheel went",
        )),
    }
}
