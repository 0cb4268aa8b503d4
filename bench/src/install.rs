//! Installing a plugin: `cjm-ctl install-all` (uv, warm cache, empty data dir) against
//! `python -m venv` + `pip install` of the same packages from the same wheelhouse.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs of each measurement (medians are reported).
const INSTALL_RUNS: usize = 5;
const NOOP_RUNS: usize = 10;
const PIP_RUNS: usize = 3;

/// The install figures, in seconds.
pub(crate) struct Install {
    /// One plugin into an empty data dir, uv's cache warm.
    pub(crate) warm: f64,
    /// `install-all` with everything installed.
    pub(crate) noop: f64,
    /// `python -m venv` + `pip install` of the same packages.
    pub(crate) venv_pip: f64,
}

/// The plugin: `cjm-text-plugin-echo` from examples/packages, which needs libdemo
/// and its interface library (plus the cjm-worker wheel every environment gets).
const PLUGIN: &str = "cjm-text-plugin-echo";

pub(crate) fn install(root: &Path, python: &Path) -> Result<Install> {
    let ctl = root.join("target/release/cjm-ctl");
    if !ctl.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p cjm-ctl` (cargo xtask bench does)",
            ctl.display()
        );
    }
    let wheel =
        PathBuf::from(std::env::var_os("CJM_WORKER_WHEEL").context("CJM_WORKER_WHEEL is not set")?);
    let uv = PathBuf::from(std::env::var_os("CJM_UV").context("CJM_UV is not set")?);
    // Everything on one file system, so uv links from its cache as it would in use.
    let work = root.join("target/cjm/bench-install");
    let _ = fs_err::remove_dir_all(&work);
    let wheelhouse = work.join("wheelhouse");
    run(Command::new(python)
        .arg(root.join("examples/packages/build_wheels.py"))
        .arg(&wheelhouse))?;
    let yaml = work.join("plugins.yaml");
    let version = String::from_utf8(
        Command::new(python)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()?
            .stdout,
    )?;
    fs_err::write(
        &yaml,
        format!(
            "plugins:\n  - name: {PLUGIN}\n    env_name: echo\n    package: {PLUGIN}\n    python_version: \"{}\"\n    find_links: [wheelhouse]\n    no_index: true\n",
            version.trim()
        ),
    )?;
    let data = work.join("data");
    let install_all = || -> Result<Duration> {
        let started = Instant::now();
        run(Command::new(&ctl)
            .env("CJM_UV", &uv)
            .env("CJM_WORKER_WHEEL", &wheel)
            .env("UV_CACHE_DIR", work.join("uv-cache"))
            .arg("--data-dir")
            .arg(&data)
            .arg("install-all")
            .arg("--plugins")
            .arg(&yaml))?;
        Ok(started.elapsed())
    };
    // The first install fills uv's cache; every measured one starts from an empty
    // data dir with the cache warm.
    install_all()?;
    let mut warm = Vec::new();
    for _ in 0..INSTALL_RUNS {
        fs_err::remove_dir_all(&data)?;
        warm.push(install_all()?);
    }
    let mut noop = Vec::new();
    for _ in 0..NOOP_RUNS {
        noop.push(install_all()?);
    }

    let mut pip = Vec::new();
    for i in 0..PIP_RUNS {
        let venv = work.join(format!("venv-{i}"));
        let started = Instant::now();
        run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--find-links",
            ])
            .arg(&wheelhouse)
            .arg(PLUGIN)
            .arg(&wheel))?;
        pip.push(started.elapsed());
    }
    let _ = fs_err::remove_dir_all(&work);
    Ok(Install {
        warm: median_s(warm),
        noop: median_s(noop),
        venv_pip: median_s(pip),
    })
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn median_s(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}
