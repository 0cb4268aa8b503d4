//! `cargo xtask test` and `cargo xtask e2e`: the checks CI runs, in order, stopping at
//! the first failure: lints, the Rust tests (and cjm-proxy's again on forked workers),
//! the doctests, the Python tests, and the fuzz target for a bounded time.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{Cmd, Exit};
use crate::junit::{self, Counts};
use crate::paths::Paths;
use crate::wheel::{self, Profile};
use crate::{Failure, failure, fuzz, setup};

/// The tests check behaviour, not speed, and a debug wheel is quicker to get: measured on
/// 2 cores, 70 s against 84 s from nothing, and 1–2 s against 14–17 s after a change to
/// cjm-proto. `demo` and `bench` build release.
const TEST_WHEEL: Profile = Profile::Debug;
const PYTHON_TESTS: &str = "crates/cjm-worker/tests/python";
/// nextest's exit status when the filter matched no test.
const NEXTEST_NO_TESTS: i32 = 4;
/// nextest's exit status when the tests did not compile.
const NEXTEST_BUILD_FAILED: i32 = 101;
/// pytest's exit status when it collected no test.
const PYTEST_NO_TESTS: i32 = 5;

pub(crate) fn test(paths: &Paths, lint: bool) -> Result<()> {
    if lint {
        lint_checks(paths)?;
    }
    setup::setup(paths)?;
    let wheel = wheel::build_and_install(paths, TEST_WHEEL)?;
    if lint {
        stubtest(paths)?;
    }
    let rust = nextest(paths, &wheel, &Nextest::default())?;
    let forked = nextest(paths, &wheel, &Nextest::FORKED_PROXY)?;
    doctests(paths, &wheel)?;
    let python = pytest(paths, &wheel)?;
    fuzz::fuzz(paths, fuzz::FUZZ_TIME)?;
    eprintln!(
        "xtask test: all checks passed (rust: {}; the proxy suite on forked workers: {}; \
         doctests; python: {python}; fuzzing: {} s without a crash)",
        show_counts(rust),
        show_counts(forked),
        fuzz::FUZZ_TIME.as_secs()
    );
    Ok(())
}

/// One nextest run: everything, or a part of the workspace under a start method.
#[derive(Default)]
struct Nextest {
    /// A filterset (`-E`).
    filter: Option<&'static str>,
    /// One package instead of the workspace.
    package: Option<&'static str>,
    /// `CJM_TEST_START_METHOD`, which the proxy suite reads to start its workers.
    start_method: Option<&'static str>,
}

impl Nextest {
    /// cjm-proxy's suite again with every worker forked from a forkserver: both start
    /// methods must behave the same.
    const FORKED_PROXY: Self = Self {
        filter: None,
        package: Some("cjm-proxy"),
        start_method: Some("forkserver"),
    };
}

/// The doctests, which nextest does not run: the examples in the crate docs.
fn doctests(paths: &Paths, wheel: &Path) -> Result<()> {
    let cmd = Cmd::cargo(&paths.root).args(["test", "--workspace", "--doc", "--quiet"]);
    with_worker_env(cmd, paths, wheel).run().map_err(|e| {
        e.context(Failure::new(
            "test: a doctest failed",
            "the failing example is named above (crate, file and line); \
             rerun them with `cargo test --doc -p CRATE`",
        ))
    })
}

pub(crate) fn e2e(paths: &Paths) -> Result<()> {
    setup::setup(paths)?;
    let wheel = wheel::build_and_install(paths, TEST_WHEEL)?;
    let rust = nextest(
        paths,
        &wheel,
        &Nextest {
            filter: Some("kind(test)"),
            ..Nextest::default()
        },
    )?;
    let python = pytest(paths, &wheel)?;
    eprintln!(
        "xtask e2e: all checks passed (rust integration: {}, python: {python})",
        show_counts(rust)
    );
    Ok(())
}

fn lint_checks(paths: &Paths) -> Result<()> {
    crate::tidy::tidy(paths)?;
    let cargo = || Cmd::cargo(&paths.root);
    cargo()
        .args(["fmt", "--all", "--check"])
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "test: formatting check failed",
                "run `cargo fmt --all`",
            ))
        })?;
    cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "test: clippy found problems",
                "fix the warnings above; each lint's page explains it, and an allow needs \
                 `#[expect(lint, reason = \"…\")]`",
            ))
        })?;
    cargo()
        .env("RUSTDOCFLAGS", "-Dwarnings")
        .args(["doc", "--workspace", "--no-deps"])
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "test: rustdoc found problems",
                "fix the doc warnings above (broken intra-doc links, missing docs)",
            ))
        })?;
    deny(paths)
}

/// The cargo-deny this project checks with, built from crates.io into the target dir
/// the first time (about 4 minutes on 2 cores).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// `cargo deny check licenses bans sources` (deny.toml). Advisories need a network
/// this project's machines lack.
fn deny(paths: &Paths) -> Result<()> {
    let root = paths.target.join("cjm").join("cargo-tools");
    let bin = root.join("bin").join("cargo-deny");
    let installed = bin.exists()
        && Cmd::new(&bin, &paths.root)
            .arg("--version")
            .read()
            .is_ok_and(|v| v.trim().ends_with(CARGO_DENY_VERSION));
    if !installed {
        Cmd::cargo(&paths.root)
            .args([
                "install",
                "--locked",
                "--quiet",
                "cargo-deny",
                "--version",
                CARGO_DENY_VERSION,
                "--root",
            ])
            .arg(root.as_os_str())
            .run()
            .map_err(|e| {
                e.context(Failure::new(
                    "test: installing cargo-deny failed",
                    "it comes from crates.io; check that crates.io is reachable",
                ))
            })?;
    }
    Cmd::new(&bin, &paths.root)
        .args(["check", "licenses", "bans", "sources"])
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "test: cargo deny found a dependency problem",
                "see deny.toml: a new license may need allowing, or a banned or duplicate crate replacing",
            ))
        })
}

/// The variables every test run and every worker-spawning program gets.
pub(crate) fn with_worker_env(cmd: Cmd, paths: &Paths, wheel: &Path) -> Cmd {
    cmd.env("CJM_PYTHON", paths.venv_python())
        .env("CJM_WORKER_WHEEL", wheel)
        .env("CJM_UV", paths.tool("uv"))
        .env("CJM_WHEELHOUSE", &paths.wheelhouse)
}

fn nextest(paths: &Paths, wheel: &Path, run: &Nextest) -> Result<Option<Counts>> {
    Cmd::cargo(&paths.root)
        .args(["nextest", "--version"])
        .read()
        .map_err(|e| {
            e.context(Failure::new(
                "test: cargo-nextest is not available",
                "install it with `cargo install cargo-nextest --locked`",
            ))
        })?;
    // The `ci` profile writes this report (.config/nextest.toml) into nextest's store,
    // which is `target/nextest` under the workspace root even when CARGO_TARGET_DIR moves
    // the build. A stale report from an earlier run must not be counted.
    let report = paths.root.join("target/nextest/ci/junit.xml");
    remove_if_exists(&report)?;

    let mut cmd = Cmd::cargo(&paths.root).args(["nextest", "run", "--profile", "ci"]);
    cmd = match run.package {
        Some(p) => cmd.args(["-p", p]),
        None => cmd.arg("--workspace"),
    };
    if let Some(filter) = run.filter {
        cmd = cmd.args(["-E", filter]);
    }
    if let Some(method) = run.start_method {
        cmd = cmd.env("CJM_TEST_START_METHOD", method);
    }
    let filter = run.filter;
    let cmd = with_worker_env(cmd, paths, wheel);
    match cmd.status()? {
        Ok(()) => Ok(junit::read_counts(&report, "testsuites")),
        Err(Exit::Code(NEXTEST_NO_TESTS)) => Err(failure(
            format!(
                "test: nextest found no tests to run{}",
                filter
                    .map(|f| format!(" matching `{f}`"))
                    .unwrap_or_default()
            ),
            "an empty suite counts as a failure: integration tests live in each crate's tests/it/",
        )),
        Err(Exit::Code(NEXTEST_BUILD_FAILED)) => Err(failure(
            format!("test: the Rust tests did not build (`{}`)", cmd.display()),
            "fix the compile errors above",
        )),
        Err(exit) => Err(failure(
            format!("test: `{}` {exit}", cmd.display()),
            "the failing tests are listed above; rerun one with \
             `CJM_PYTHON=$PWD/target/cjm/venv/bin/python cargo nextest run NAME`",
        )),
    }
}

fn pytest(paths: &Paths, wheel: &Path) -> Result<String> {
    let tests = paths.root.join(PYTHON_TESTS);
    if !tests.is_dir() {
        return Err(failure(
            format!("test: {PYTHON_TESTS} does not exist, so there are no Python tests to run"),
            "the Python suite of cjm-worker lives there, run by pytest against the installed wheel",
        ));
    }
    let report = paths.target.join("cjm").join("pytest-junit.xml");
    remove_if_exists(&report)?;
    let mut junit_arg = std::ffi::OsString::from("--junitxml=");
    junit_arg.push(&report);

    let cmd = Cmd::new(paths.venv_python(), &paths.root)
        .args(["-m", "pytest", "-p", "no:cacheprovider"])
        .arg(junit_arg)
        .arg(PYTHON_TESTS);
    let cmd = with_worker_env(cmd, paths, wheel);
    match cmd.status()? {
        Ok(()) => Ok(show_counts(junit::read_counts(&report, "testsuite"))),
        Err(Exit::Code(PYTEST_NO_TESTS)) => Err(failure(
            format!("test: pytest collected no tests in {PYTHON_TESTS} (exit status 5)"),
            "an empty suite counts as a failure: add test_*.py files there",
        )),
        Err(exit) => Err(failure(
            format!("test: `{}` {exit}", cmd.display()),
            "the failing tests are listed above; rerun them with \
             `target/cjm/venv/bin/python -m pytest crates/cjm-worker/tests/python -k NAME`",
        )),
    }
}

/// Checks `cjm_worker/_native.pyi` against the built extension. mypy lives in the tools
/// venv; the extension is abi3, so the tools interpreter can import it from the test
/// venv's site-packages.
fn stubtest(paths: &Paths) -> Result<()> {
    let site = Cmd::new(paths.venv_python(), &paths.root)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ])
        .read()?;
    let cmd = Cmd::new(paths.tool("python"), &paths.root)
        .env("PYTHONPATH", site.trim())
        .args(["-m", "mypy.stubtest", "cjm_worker._native"]);
    cmd.run().map_err(|e| {
        e.context(Failure::new(
            "test: the stubs of cjm_worker._native do not match the extension",
            "update crates/cjm-worker/python/cjm_worker/_native.pyi to match the #[pymodule] in crates/cjm-worker/src/lib.rs",
        ))
    })
}

fn show_counts(counts: Option<Counts>) -> String {
    counts.map_or_else(
        || "passed (no count in the JUnit report)".to_owned(),
        |c| c.to_string(),
    )
}

fn remove_if_exists(path: &Path) -> Result<()> {
    if path.exists() {
        fs_err::remove_file(path).context("removing an old test report")?;
    }
    Ok(())
}
