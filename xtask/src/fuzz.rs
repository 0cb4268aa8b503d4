//! The fuzz target, built and run for a bounded time by `cargo xtask test`.
//!
//! `crates/cjm-proto/fuzz` is a libFuzzer target (cargo-fuzz's layout, its own
//! workspace). cargo-fuzz needs nightly for its sanitizers; the coverage
//! instrumentation libFuzzer needs to make progress is stable (`-Cpasses=sancov-module`
//! and the `sanitizer-coverage` LLVM options cargo-fuzz passes too), so CI builds it
//! with the project's toolchain and no sanitizer: a panic, an overflow (checked) or an
//! allocation over the RSS limit is still a crash. The corpus stays in
//! `target/fuzz/corpus` between local runs; a crash leaves its input in
//! `target/fuzz/artifacts/`.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::Failure;
use crate::cmd::Cmd;
use crate::paths::Paths;

const FUZZ_CRATE: &str = "crates/cjm-proto/fuzz";
const TARGET_NAME: &str = "decode_frame";
/// How long CI fuzzes: long enough for libFuzzer to reach the decoder's branches
/// (a million inputs on this machine), short beside the whole run.
pub(crate) const FUZZ_TIME: Duration = Duration::from_secs(30);

const RUSTFLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions -Coverflow-checks";

/// The host's target triple: naming it makes RUSTFLAGS apply to the fuzz target but
/// not to build scripts, which must not be instrumented.
fn host_triple(paths: &Paths) -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let info = Cmd::new(rustc, &paths.root).arg("-vV").read()?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` printed no host triple")
}

/// Builds the fuzz target and runs it for `time`.
pub(crate) fn fuzz(paths: &Paths, time: Duration) -> Result<()> {
    let triple = host_triple(paths)?;
    let dir = paths.target.join("fuzz");
    Cmd::cargo(&paths.root.join(FUZZ_CRATE))
        .env("CARGO_TARGET_DIR", &dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .args(["build", "--release", "--locked", "--bin", TARGET_NAME, "--target"])
        .arg(&triple)
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "test: the fuzz target did not build",
                "fix the errors above; the target is crates/cjm-proto/fuzz/fuzz_targets/decode_frame.rs",
            ))
        })?;
    let corpus = dir.join("corpus").join(TARGET_NAME);
    let artifacts = dir.join("artifacts").join(TARGET_NAME);
    fs_err::create_dir_all(&corpus)?;
    fs_err::create_dir_all(&artifacts)?;
    let mut prefix = artifacts.into_os_string();
    prefix.push("/");
    let mut artifact_prefix = std::ffi::OsString::from("-artifact_prefix=");
    artifact_prefix.push(&prefix);
    let bin = dir.join(&triple).join("release").join(TARGET_NAME);
    Cmd::new(&bin, &paths.root)
        .arg(format!("-max_total_time={}", time.as_secs()))
        .args([
            "-rss_limit_mb=2048",
            "-max_len=65536",
            "-print_final_stats=1",
        ])
        .arg(artifact_prefix)
        .arg(&corpus)
        .run()
        .map_err(|e| {
            e.context(Failure::new(
                "test: the fuzz target found a crash",
                format!(
                    "its input is in {}; replay it with `{} <file>`, fix the decoder, and add \
                     the input as a case in crates/cjm-proto/tests/it/hostile.rs",
                    paths.show(std::path::Path::new(&prefix)),
                    paths.show(&bin)
                ),
            ))
        })
}
