//! `cargo xtask demo` and `cargo xtask bench`: programs that spawn real workers, run
//! against a release wheel.

use std::ffi::OsString;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cmd::Cmd;
use crate::paths::Paths;
use crate::test::with_worker_env;
use crate::wheel::{self, Profile};
use crate::{failure, setup};

pub(crate) fn demo(paths: &Paths, args: &[OsString]) -> Result<()> {
    let metadata = workspace_metadata(paths)?;
    let has_demo = package(&metadata, "cjm").is_some_and(|cjm| {
        cjm["targets"].as_array().is_some_and(|targets| {
            targets.iter().any(|t| {
                t["name"] == "demo"
                    && t["kind"]
                        .as_array()
                        .is_some_and(|k| k.contains(&"example".into()))
            })
        })
    });
    if !has_demo {
        return Err(failure(
            "demo: the cjm crate has no `demo` example",
            "the demo is crates/cjm/examples/demo.rs (or crates/cjm/examples/demo/main.rs)",
        ));
    }
    setup::setup(paths)?;
    let wheel = wheel::build_and_install(paths, Profile::Release)?;
    let cmd = Cmd::cargo(&paths.root).args(["run", "--release", "-p", "cjm", "--example", "demo"]);
    with_worker_env(with_passthrough(cmd, args), paths, &wheel).run()
}

pub(crate) fn bench(paths: &Paths, args: &[OsString]) -> Result<()> {
    let metadata = workspace_metadata(paths)?;
    if package(&metadata, "cjm-bench").is_none() {
        return Err(failure(
            "bench: the workspace has no package `cjm-bench`",
            "the benchmarks live in bench/ as package cjm-bench: create it and add \"bench\" \
             to `members` in the root Cargo.toml",
        ));
    }
    setup::setup(paths)?;
    let wheel = wheel::build_and_install(paths, Profile::Release)?;
    // The host-death figure SIGKILLs this small host program; the install figures run
    // the operator CLI.
    Cmd::cargo(&paths.root)
        .args([
            "build",
            "--release",
            "-p",
            "cjm-proxy",
            "--bin",
            "cjm-proxy-fixture-host",
            "-p",
            "cjm-ctl",
            "--bin",
            "cjm-ctl",
        ])
        .run()?;
    let started = SystemTime::now();
    let cmd = Cmd::cargo(&paths.root).args(["run", "--release", "-p", "cjm-bench"]);
    with_worker_env(with_passthrough(cmd, args), paths, &wheel).run()?;

    let results = paths.root.join("bench").join("results.json");
    let written = fs_err::metadata(&results)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= started);
    if written {
        eprintln!("bench: results in {}", paths.show(&results));
    } else {
        eprintln!(
            "bench: warning: cjm-bench did not write {}",
            paths.show(&results)
        );
    }
    Ok(())
}

fn with_passthrough(cmd: Cmd, args: &[OsString]) -> Cmd {
    if args.is_empty() {
        cmd
    } else {
        cmd.arg("--").args(args.iter().cloned())
    }
}

fn workspace_metadata(paths: &Paths) -> Result<Value> {
    let json = Cmd::cargo(&paths.root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .read()?;
    serde_json::from_str(&json).context("parsing `cargo metadata`")
}

fn package<'a>(metadata: &'a Value, name: &str) -> Option<&'a Value> {
    metadata["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}
