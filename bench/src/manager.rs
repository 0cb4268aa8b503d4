//! The manager's cost: a small call through `Manager::execute` against the same
//! call on the bare worker, and loading ten instances at once against one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cjm_manager::{LoadSpec, Manager, ManagerOptions};
use cjm_manifest::Manifest;
use cjm_proto::Value;
use cjm_proxy::CallOptions;

const SAMPLES: usize = 20_000;
const WARMUP: usize = 2_000;
const LOADS: usize = 10;
const LOAD_RUNS: usize = 3;

/// The manager figures.
pub(crate) struct ManagerFigures {
    /// p50 of `execute(1)` through the manager, µs.
    pub(crate) manager_p50_us: f64,
    /// p50 of the same call on the bare worker, µs.
    pub(crate) bare_p50_us: f64,
    /// Loading one instance, ms (median).
    pub(crate) load_one_ms: f64,
    /// Loading ten instances concurrently, ms (median).
    pub(crate) load_ten_ms: f64,
    /// The floor of that ratio: ten bare interpreters importing the worker
    /// extension at once ÷ one (median).
    pub(crate) python_ten_ratio: f64,
}

pub(crate) fn manager(root: &Path, python: &Path) -> Result<ManagerFigures> {
    let work = root.join("target/cjm/bench-manager");
    let _ = fs_err::remove_dir_all(&work);
    fs_err::create_dir_all(work.join("manifests"))?;
    write_manifest(&work, root, python, "echo", "fixture_plugins", "Echo")?;
    write_manifest(&work, root, python, "trivial", "bench_plugins", "Trivial")?;
    let options = cjm_core::LoadOptions {
        data_dir: Some(work.clone()),
        ..Default::default()
    };
    let mut cfg = cjm_core::load_config(&options, &|_| None, &work)?;
    // Drift checks are one call per start; the load figure is about starting.
    cfg.substrate.drift_detection = false;
    let manager = Manager::new(
        cfg,
        ManagerOptions {
            search_paths: Some(vec![work.join("manifests")]),
            reap_interval: None,
            ..ManagerOptions::default()
        },
    );

    let id = manager.load(&LoadSpec::new("echo"))?;
    // The same worker both ways, calls interleaved one by one: the difference is
    // the manager's own work (lookup, gates, counters), not two processes' luck.
    let bare = manager.worker(&id).context("echo has no worker")?;
    let mut through_manager = Vec::with_capacity(SAMPLES);
    let mut direct = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let t = Instant::now();
        let v = manager.execute(&id, vec![Value::Int(1)], vec![])?;
        let via_manager = t.elapsed();
        if v != Value::Int(1) {
            bail!("echo answered {v:?}");
        }
        let t = Instant::now();
        bare.call_blocking(
            "execute",
            vec![Value::Int(1)],
            vec![],
            CallOptions::default(),
        )?;
        let via_worker = t.elapsed();
        if i >= WARMUP {
            through_manager.push(via_manager);
            direct.push(via_worker);
        }
    }
    drop(bare);
    manager.unload(&id)?;

    let mut one = Vec::new();
    let mut ten = Vec::new();
    for run in 0..LOAD_RUNS {
        let t = Instant::now();
        let single = manager.load(&LoadSpec::new("trivial").instance(format!("one-{run}")))?;
        one.push(t.elapsed());
        manager.unload(&single)?;
        let specs: Vec<LoadSpec> = (0..LOADS)
            .map(|i| LoadSpec::new("trivial").instance(format!("ten-{run}-{i}")))
            .collect();
        let t = Instant::now();
        let ids = manager
            .load_many(&specs)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        ten.push(t.elapsed());
        for id in ids {
            manager.unload(&id)?;
        }
    }
    let _ = fs_err::remove_dir_all(&work);
    let python_ten_ratio = python_starts(python)?;
    Ok(ManagerFigures {
        python_ten_ratio,
        manager_p50_us: p50(through_manager).as_secs_f64() * 1e6,
        bare_p50_us: p50(direct).as_secs_f64() * 1e6,
        load_one_ms: p50(one).as_secs_f64() * 1e3,
        load_ten_ms: p50(ten).as_secs_f64() * 1e3,
    })
}

/// Ten `python -c "import cjm_worker._native"` at once ÷ one: what starting
/// processes costs on this machine, whatever cjm does.
fn python_starts(python: &Path) -> Result<f64> {
    let start = || {
        std::process::Command::new(python)
            .args(["-c", "import cjm_worker._native"])
            .spawn()
    };
    let mut ratios = Vec::new();
    for _ in 0..LOAD_RUNS {
        let t = Instant::now();
        start()?.wait()?;
        let one = t.elapsed();
        let t = Instant::now();
        let children = (0..LOADS).map(|_| start()).collect::<Result<Vec<_>, _>>()?;
        for mut c in children {
            c.wait()?;
        }
        ratios.push(t.elapsed().as_secs_f64() / one.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    Ok(ratios[ratios.len() / 2])
}

fn write_manifest(
    work: &Path,
    root: &Path,
    python: &Path,
    name: &str,
    module: &str,
    class: &str,
) -> Result<()> {
    let dir = if module == "fixture_plugins" {
        root.join("crates/cjm-proxy/tests/fixtures")
    } else {
        root.join("bench/plugins")
    };
    let mut m = Manifest::default();
    m.install.python_path = python.display().to_string();
    m.install.env_vars.insert(
        "PYTHONPATH".into(),
        serde_json::Value::String(dir.display().to_string()),
    );
    m.code.name = name.into();
    m.code.version = "1.0.0".into();
    m.code.description = "a benchmark plugin".into();
    m.code.module = module.into();
    m.code.class_name = class.into();
    m.code.interface = "cjm_worker.PluginInterface".into();
    m.write(work.join("manifests").join(format!("{name}.json")))?;
    Ok(())
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
