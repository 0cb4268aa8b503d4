//! `cargo xtask setup`: the two Python venvs under `target/cjm`, each rebuilt only when
//! its inputs change.
//!
//! A venv's inputs are the base interpreter (path and version) and its pinned
//! requirements files; a hash of them is written to a stamp file inside the venv after
//! the last install step succeeds. A matching stamp makes the venv's set-up a no-op, and
//! a missing or different one rebuilds the venv from scratch, so a half-built venv
//! (interrupted install, failed download) is never taken for a finished one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;
use crate::paths::{Paths, bin};
use crate::{Failure, failure};

/// Bumped when the way the venvs are built changes, so old venvs are rebuilt.
const RECIPE: &str = "xtask-setup 2";
const STAMP_FILE: &str = ".xtask-stamp";
/// The base interpreter must run cjm-worker's abi3 wheel (`abi3-py39`).
const MIN_PYTHON: (u32, u32) = (3, 9);

const NETWORK_HINT: &str = "the first run downloads packages from PyPI: check that PyPI is \
    reachable, then run `cargo xtask setup` again (`rm -rf target/cjm` starts over)";

/// The machine's `python3`, resolved to the interpreter behind it.
#[derive(Debug)]
struct BasePython {
    executable: PathBuf,
    version: String,
}

pub(crate) fn setup(paths: &Paths) -> Result<()> {
    let start = Instant::now();
    system_tools(paths)?;
    let python = base_python(paths)?;
    let tools_txt = read_requirements(paths, "tools.txt")?;
    let venv_txt = read_requirements(paths, "venv.txt")?;
    let reference_txt = read_requirements(paths, "reference.txt")?;

    let tools_key = stamp_key(&python, &[&tools_txt]);
    if is_fresh(&paths.tools, &tools_key) {
        eprintln!("setup: {} is up to date", paths.show(&paths.tools));
    } else {
        build_tools(paths, &python, &tools_txt)?;
        write_stamp(&paths.tools, &tools_key)?;
    }

    let venv_key = stamp_key(&python, &[&venv_txt, &reference_txt]);
    if is_fresh(&paths.venv, &venv_key) {
        eprintln!("setup: {} is up to date", paths.show(&paths.venv));
    } else {
        build_venv(paths, &python)?;
        write_stamp(&paths.venv, &venv_key)?;
    }

    let wheelhouse_txt = read_requirements(paths, "wheelhouse.txt")?;
    let wheelhouse_key = stamp_key(&python, &[&wheelhouse_txt]);
    let stamp = paths.wheelhouse.join(STAMP_FILE);
    if fs_err::read_to_string(&stamp).is_ok_and(|s| s.trim() == wheelhouse_key) {
        eprintln!("setup: {} is up to date", paths.show(&paths.wheelhouse));
    } else {
        download_wheelhouse(paths, &python)?;
        write_stamp(&paths.wheelhouse, &wheelhouse_key)?;
    }
    eprintln!("setup: done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Programs the tests run besides Python and cargo: `curl` (downloads in
/// `setup-runtime`), `tar` and `bzip2` (micromamba's archive). A clean Debian machine
/// may lack some; as root with apt-get they are installed, otherwise named.
fn system_tools(paths: &Paths) -> Result<()> {
    const TOOLS: [(&str, &str); 3] = [("curl", "curl"), ("tar", "tar"), ("bzip2", "bzip2")];
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Cmd::new("id", &paths.root)
        .args(["-u"])
        .read()
        .is_ok_and(|uid| uid.trim() == "0");
    if root && on_path("apt-get") {
        eprintln!("setup: installing {} with apt-get", missing.join(", "));
        Cmd::new("apt-get", &paths.root)
            .args(["update", "-qq"])
            .run()?;
        Cmd::new("apt-get", &paths.root)
            .args(["install", "-y", "-qq"])
            .args(missing.iter().copied())
            .run()?;
        return Ok(());
    }
    Err(crate::failure(
        format!("setup: {} not found on PATH", missing.join(", ")),
        format!(
            "install them with your package manager (Debian: apt-get install {})",
            missing.join(" ")
        ),
    ))
}

fn base_python(paths: &Paths) -> Result<BasePython> {
    let script = "import sys; print(sys.executable); \
                  print('.'.join(map(str, sys.version_info[:3])))";
    let out = Cmd::new("python3", &paths.root)
        .args(["-c", script])
        .read()
        .map_err(|e| {
            e.context(Failure::new(
                "setup: step `finding python3` failed",
                "install CPython 3.9 or newer with pip and venv (Debian: python3-pip \
                 python3-venv) and put `python3` on PATH",
            ))
        })?;
    let mut lines = out.lines();
    let (Some(executable), Some(version)) = (lines.next(), lines.next()) else {
        bail!("setup: python3 printed {out:?} for its path and version");
    };
    let mut parts = version.split('.').map(str::parse::<u32>);
    if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next())
        && (major, minor) < MIN_PYTHON
    {
        return Err(failure(
            format!("setup: python3 is Python {version} ({executable})"),
            format!(
                "cjm needs Python {}.{} or newer as `python3`",
                MIN_PYTHON.0, MIN_PYTHON.1
            ),
        ));
    }
    Ok(BasePython {
        executable: executable.into(),
        version: version.to_owned(),
    })
}

fn read_requirements(paths: &Paths, name: &str) -> Result<String> {
    fs_err::read_to_string(paths.requirements.join(name))
        .context("setup: reading the pinned Python requirements")
}

fn build_tools(paths: &Paths, python: &BasePython, tools_txt: &str) -> Result<()> {
    let venv = &paths.tools;
    create_venv(paths, venv, python)?;

    // The base interpreter's pip installs uv into the venv (`pip --python`), and uv then
    // installs everything else: uv takes about a second where pip takes fifteen, mostly
    // compiling bytecode, and the venv needs no pip of its own.
    let uv_pin = tools_txt
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("uv=="))
        .context("setup: xtask/requirements/tools.txt pins no `uv==` version")?;
    step(
        &format!(
            "installing {uv_pin} into {} with python3's pip",
            paths.show(venv)
        ),
        "python3 needs pip (Debian: apt-get install python3-pip); the first run also \
         downloads packages from PyPI",
        || {
            Cmd::new(&python.executable, &paths.root)
                .args(["-m", "pip", "--python"])
                .arg(bin(venv, "python"))
                .args(PIP_INSTALL)
                .arg(uv_pin)
                .run()
        },
    )?;

    install_requirements(paths, venv, "tools.txt")
}

/// `uv pip install -r xtask/requirements/<file>` into `venv`.
fn install_requirements(paths: &Paths, venv: &Path, file: &str) -> Result<()> {
    let requirements = paths.requirements.join(file);
    step(
        &format!(
            "installing {} into {}",
            paths.show(&requirements),
            paths.show(venv)
        ),
        NETWORK_HINT,
        || {
            uv_pip_install(paths, venv)
                .arg("-r")
                .arg(&requirements)
                .run()
        },
    )
}

fn build_venv(paths: &Paths, python: &BasePython) -> Result<()> {
    let venv = &paths.venv;
    create_venv(paths, venv, python)?;

    install_requirements(paths, venv, "venv.txt")?;

    // uv has no `--ignore-requires-python`, and the reference package declares Python
    // >= 3.12 although it runs on 3.11; its dependencies come from venv.txt instead.
    let reference = paths.requirements.join("reference.txt");
    step(
        &format!(
            "installing {} into {} (pip --no-deps --ignore-requires-python)",
            paths.show(&reference),
            paths.show(venv)
        ),
        NETWORK_HINT,
        || {
            pip(paths, venv)
                .args(["--no-deps", "--ignore-requires-python", "-r"])
                .arg(&reference)
                .run()
        },
    )
}

/// `target/cjm/wheelhouse`: the wheels offline install tests resolve from
/// (wheelhouse.txt), fetched once here so that no test touches the network. The
/// reference declares Python >= 3.12 but is fetched for this interpreter anyway, as
/// reference.txt installs it.
fn download_wheelhouse(paths: &Paths, python: &BasePython) -> Result<()> {
    let dir = &paths.wheelhouse;
    if dir.exists() {
        fs_err::remove_dir_all(dir).context("setup: removing the old wheelhouse")?;
    }
    let requirements = paths.requirements.join("wheelhouse.txt");
    step(
        &format!(
            "downloading {} into {} with python3's pip",
            paths.show(&requirements),
            paths.show(dir)
        ),
        NETWORK_HINT,
        || {
            Cmd::new(&python.executable, &paths.root)
                .args(["-m", "pip", "download", "--quiet", "--progress-bar", "off"])
                .args(["--disable-pip-version-check", "--no-deps"])
                .args(["--only-binary", ":all:", "--ignore-requires-python", "-d"])
                .arg(dir)
                .arg("-r")
                .arg(&requirements)
                .run()
        },
    )
}

/// Creates `venv` from scratch with the base interpreter, without pip: ensurepip spends
/// six seconds compiling pip, and uv installs a pinned pip into the test venv in a blink.
fn create_venv(paths: &Paths, venv: &Path, python: &BasePython) -> Result<()> {
    let shown = paths.show(venv);
    if venv.exists() {
        eprintln!(
            "setup: {shown} is out of date or incomplete (python3 or its pinned requirements \
             changed, or an earlier set-up stopped); recreating it"
        );
        fs_err::remove_dir_all(venv).context("setup: removing the old venv")?;
    }
    let name = format!(
        "creating venv {shown} with Python {} ({})",
        python.version,
        python.executable.display()
    );
    step(
        &name,
        "python3 needs its venv module (Debian: apt-get install python3-venv)",
        || {
            Cmd::new(&python.executable, &paths.root)
                .args(["-m", "venv", "--without-pip"])
                .arg(venv)
                .run()
        },
    )
}

/// Runs one set-up step, announcing it first and naming it if it fails.
fn step(name: &str, hint: &str, run: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("setup: {name}");
    run().map_err(|e| e.context(Failure::new(format!("setup: step `{name}` failed"), hint)))
}

const PIP_INSTALL: [&str; 5] = [
    "install",
    "--quiet",
    "--progress-bar",
    "off",
    "--disable-pip-version-check",
];

/// The venv's own pip (venv.txt pins it).
fn pip(paths: &Paths, venv: &Path) -> Cmd {
    Cmd::new(bin(venv, "python"), &paths.root)
        .args(["-m", "pip"])
        .args(PIP_INSTALL)
}

fn uv_pip_install(paths: &Paths, venv: &Path) -> Cmd {
    // Copies rather than hard links: the uv cache is usually on another file system, and
    // a venv that shares inodes with the cache could corrupt it when edited.
    Cmd::new(paths.tool("uv"), &paths.root)
        .args([
            "pip",
            "install",
            "--quiet",
            "--link-mode",
            "copy",
            "--python",
        ])
        .arg(bin(venv, "python"))
}

fn stamp_key(python: &BasePython, requirements: &[&str]) -> String {
    let mut inputs = format!(
        "{RECIPE}\n{}\n{}\n",
        python.executable.display(),
        python.version
    );
    for text in requirements {
        inputs.push_str(text);
        inputs.push('\n');
    }
    format!("{:016x}", fnv1a64(inputs.as_bytes()))
}

/// A venv is fresh when its interpreter still runs from where it was made (a venv's
/// `bin/python` is a symlink to the base interpreter) and its stamp matches.
fn is_fresh(venv: &Path, key: &str) -> bool {
    bin(venv, "python").exists()
        && fs_err::read_to_string(venv.join(STAMP_FILE)).is_ok_and(|stamp| stamp.trim() == key)
}

fn write_stamp(venv: &Path, key: &str) -> Result<()> {
    fs_err::write(venv.join(STAMP_FILE), format!("{key}\n")).context("setup: writing the stamp")
}

/// FNV-1a: stable across Rust versions, unlike `DefaultHasher`, and enough to notice
/// that an input changed.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python(version: &str) -> BasePython {
        BasePython {
            executable: "/usr/bin/python3.11".into(),
            version: version.to_owned(),
        }
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn stamp_key_changes_with_every_input() {
        let base = stamp_key(&python("3.11.7"), &["pytest==9.2.0"]);
        assert_eq!(base, stamp_key(&python("3.11.7"), &["pytest==9.2.0"]));
        assert_ne!(base, stamp_key(&python("3.11.8"), &["pytest==9.2.0"]));
        assert_ne!(base, stamp_key(&python("3.11.7"), &["pytest==9.2.1"]));
        assert_ne!(base, stamp_key(&python("3.11.7"), &["pytest==9.2.0", ""]));
    }

    #[test]
    fn a_venv_is_fresh_only_with_its_interpreter_and_a_matching_stamp() {
        let dir = std::env::temp_dir().join(format!("xtask-stamp-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("bin")).unwrap();
        assert!(!is_fresh(&dir, "k1"), "no stamp yet");
        write_stamp(&dir, "k1").unwrap();
        assert!(!is_fresh(&dir, "k1"), "no interpreter");
        fs_err::write(dir.join("bin").join("python"), "").unwrap();
        assert!(is_fresh(&dir, "k1"));
        assert!(!is_fresh(&dir, "k2"));
        fs_err::remove_dir_all(&dir).unwrap();
    }
}
