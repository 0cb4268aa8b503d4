//! End-to-end benchmarks of cjm workers, each beside a floor measured in the same
//! run: a raw socketpair ping-pong with a minimal Python loop that waits as cjm's
//! waiters do, an in-process memcpy and memset, a bare interpreter's start-up and RSS.
//!
//! Run with `cargo xtask bench` (or `CJM_PYTHON=… cargo run --release -p cjm-bench`);
//! `cargo xtask bench -- --only manager` runs only the measurements promising a key
//! that contains `manager`, and leaves `bench/results.json` as it was.
//! Prints a table to stderr and writes `bench/results.json`, where every target the
//! issues set appears with `met`, including those whose measurement failed (with
//! `met: false` and the error).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use cjm_proxy::{Worker, WorkerSpec};
use serde_json::Value as Json;

mod bulk;
mod install;
mod latency;
mod lifecycle;
mod manager;
mod queue;
mod report;
mod sched;

use report::{Reading, Report};

pub(crate) struct Ctx {
    pub(crate) python: PathBuf,
    pub(crate) fixtures: PathBuf,
    plugins: PathBuf,
    pub(crate) root: PathBuf,
}

impl Ctx {
    pub(crate) fn spec(&self, module: &str, class: &str) -> WorkerSpec {
        let dir = if module == "fixture_plugins" {
            &self.fixtures
        } else {
            &self.plugins
        };
        WorkerSpec::new(class.to_lowercase(), &self.python, module, class).python_path(dir)
    }

    fn spawn(&self, module: &str, class: &str) -> Result<Worker> {
        Worker::spawn(self.spec(module, class)).with_context(|| format!("spawning {class}"))
    }
}

#[expect(clippy::too_many_lines, reason = "one linear script of measurements")]
fn main() -> Result<()> {
    let python = std::env::var_os("CJM_PYTHON")
        .map(PathBuf::from)
        .context("CJM_PYTHON is not set: point it at the interpreter of a venv with cjm-worker installed (e.g. target/cjm/venv/bin/python)")?;
    if !python.exists() {
        bail!("CJM_PYTHON={} does not exist", python.display());
    }
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = bench_dir
        .parent()
        .context("bench has no parent directory")?
        .to_path_buf();
    let ctx = Ctx {
        python,
        fixtures: root.join("crates/cjm-proxy/tests/fixtures"),
        plugins: bench_dir.join("plugins"),
        root,
    };
    let started = Instant::now();
    let mut r = Report::only(only()?);

    // One long-lived worker for the call figures, as an application keeps one: the
    // pipelined run follows the latency runs on the same, warm worker.
    let echo = ctx.spawn("fixture_plugins", "Echo");
    let warm = || echo.as_ref().map_err(|e| anyhow!("{e:#}"));
    r.measure(
        "latency: call_blocking and call().await against a spin-then-park ping-pong floor",
        &["sync_p50_ratio", "async_p50_ratio"],
        |r| latency::latency(r, &ctx.python, warm()?),
    );
    r.measure(
        "pipelined: many async calls in flight",
        &["pipelined_calls_per_s"],
        |r| latency::pipelined(r, warm()?),
    );
    r.measure(
        "bulk: 512 MiB host -> worker -> host (the call, without the fill) vs memcpy",
        &["bulk_512mb_ratio", "bulk_segment_reused"],
        |r| bulk::bulk(r, &ctx.spawn("fixture_plugins", "Echo")?),
    );
    r.measure(
        "shm output: the plugin writes a 512 MiB result, every byte",
        &["shm_output_512mb_ms", "shm_output_512mb_alloc_excluded_ms"],
        |r| {
            let fill = ctx.spawn("bench_plugins", "Fill")?;
            let echo = ctx.spawn("fixture_plugins", "Echo")?;
            bulk::shm_output(r, &fill, &echo)
        },
    );
    r.measure(
        "spawn: spawn -> first result vs `python -c pass`",
        &["spawn_extra_ms"],
        |r| lifecycle::spawn_cost(r, &ctx),
    );
    r.measure(
        "idle RSS: worker after one call vs an idle bare interpreter",
        &["idle_rss_extra_mb"],
        |r| lifecycle::idle_rss(r, &ctx),
    );
    for (mode, key) in [
        ("idle", "host_death_cleanup_ms"),
        ("c_call", "host_death_busy_c_call_cleanup_ms"),
        ("pure_python", "host_death_busy_pure_python_cleanup_ms"),
    ] {
        r.measure(
            &format!("host death ({mode}): SIGKILL the host, time until its worker and the plugin's grandchild are gone"),
            &[key],
            |r| lifecycle::host_death(r, &ctx, mode, key),
        );
    }
    r.measure(
        "install: cjm-ctl install-all (uv, warm cache, empty data dir) vs venv + pip",
        &[
            "install_warm_s",
            "install_vs_venv_pip_ratio",
            "install_noop_s",
        ],
        |r| install_figures(r, &ctx),
    );
    r.measure(
        "manager: execute through the manager vs the bare worker; 10 loads at once vs 1",
        &["manager_call_overhead_us", "load_10_instances_ratio"],
        |r| manager_figures(r, &ctx),
    );

    sched::figures(&mut r, &ctx.root, &ctx.python);
    queue::figures(&mut r, &ctx.root, &ctx.python);
    let mut out = r.to_json();
    out.insert("machine".into(), machine());
    out.insert(
        "date".into(),
        Json::from(cjm_core::isoformat_utc(SystemTime::now())),
    );
    out.insert(
        "total_seconds".into(),
        Json::from(started.elapsed().as_secs_f64()),
    );
    r.print_table()?;
    if r.partial() {
        report::say("a run with --only leaves bench/results.json as it was");
        return Ok(());
    }
    let path = ctx.root.join("bench/results.json");
    let text = serde_json::to_string_pretty(&Json::Object(out))?;
    fs_err::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    report::say(&format!(
        "wrote {} in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The keys after `--only` (each may be part of a key: `--only manager`).
fn only() -> Result<Vec<String>> {
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => only.push(args.next().context("--only needs a key (or part of one)")?),
            other => bail!("unknown argument `{other}`; the bench takes `--only KEY`, repeatable"),
        }
    }
    Ok(only)
}

fn install_figures(r: &mut Report, ctx: &Ctx) -> Result<()> {
    let i = install::install(&ctx.root, &ctx.python)?;
    r.figure("install_venv_pip_s", i.venv_pip);
    r.judge("install_warm_s", Reading::plain(i.warm));
    r.judge(
        "install_vs_venv_pip_ratio",
        Reading::ratio(i.warm, i.venv_pip),
    );
    r.judge("install_noop_s", Reading::plain(i.noop));
    Ok(())
}

fn manager_figures(r: &mut Report, ctx: &Ctx) -> Result<()> {
    let m = manager::manager(&ctx.root, &ctx.python)?;
    r.figure("manager_p50_us", m.manager_p50_us);
    r.figure("manager_bare_p50_us", m.bare_p50_us);
    r.figure("load_one_ms", m.load_one_ms);
    r.figure("load_10_ms", m.load_ten_ms);
    r.figure("load_2_ms", m.load_two_ms);
    r.figure("load_cpu_ms_per_instance", m.load_cpu_ms);
    // What the cores allow: ten loads' CPU spread over every core, ÷ one load.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let cpu_floor = m.load_cpu_ms * 10.0 / cores as f64 / m.load_one_ms;
    r.figure("load_10_cpu_floor_ratio", cpu_floor);
    r.figure("load_one_spawn_ms", m.spawn_one_ms);
    r.figure("load_10_spawn_ms", m.spawn_ten_ms);
    r.figure("forkserver_10_starts_ratio", m.fork_ten_ratio);
    r.figure("python_10_starts_ratio", m.python_ten_ratio);
    report::say(&format!(
        "  forked: one {:.1} ms, two {:.1} ms, ten {:.1} ms; {:.1} ms CPU each, so ten on {cores} cores need at least {:.2}× one; 10 bare forked workers ÷ 1: {:.2}",
        m.load_one_ms, m.load_two_ms, m.load_ten_ms, m.load_cpu_ms, cpu_floor, m.fork_ten_ratio
    ));
    report::say(&format!(
        "  executed: one {:.1} ms, ten {:.1} ms (ratio {:.2}); floor (10 bare interpreters ÷ 1) {:.2}",
        m.spawn_one_ms,
        m.spawn_ten_ms,
        m.spawn_ten_ms / m.spawn_one_ms,
        m.python_ten_ratio
    ));
    r.judge(
        "manager_call_overhead_us",
        Reading::extra(m.manager_p50_us, m.bare_p50_us),
    );
    r.judge(
        "load_10_instances_ratio",
        Reading::ratio(m.load_ten_ms, m.load_one_ms),
    );
    Ok(())
}

pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

pub(crate) fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine() -> Json {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = fs_err::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({ "nproc": nproc, "model_name": model })
}
