//! The manager's cost: a small call through `Manager::execute` against the same
//! call on the bare worker, and loading ten instances at once against one (with
//! forked workers, the default, and with executed ones for comparison).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cjm_manager::{LoadSpec, Manager, ManagerOptions, StartMethod};
use cjm_manifest::Manifest;
use cjm_proto::Value;
use cjm_proxy::{CallOptions, Worker, WorkerSpec};

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
    /// Loading two instances concurrently (as many as this machine has cores),
    /// ms (median).
    pub(crate) load_two_ms: f64,
    /// Loading ten instances concurrently, ms (median).
    pub(crate) load_ten_ms: f64,
    /// CPU time (host, forkserver and workers) per instance while loading ten, ms
    /// (median).
    pub(crate) load_cpu_ms: f64,
    /// The same two loads with executed workers (`StartMethod::Spawn`), ms.
    pub(crate) spawn_one_ms: f64,
    pub(crate) spawn_ten_ms: f64,
    /// A floor of the ratio without the manager: ten bare forked workers started
    /// at once ÷ one (median).
    pub(crate) fork_ten_ratio: f64,
    /// The floor for executed workers: ten bare interpreters importing the worker
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
    let new_manager = |start_method| {
        Manager::new(
            cfg.clone(),
            ManagerOptions {
                search_paths: Some(vec![work.join("manifests")]),
                reap_interval: None,
                start_method,
                ..ManagerOptions::default()
            },
        )
    };
    let manager = new_manager(StartMethod::Forkserver);

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

    let forked = loads(&manager, true)?;
    drop(manager);
    let executed = loads(&new_manager(StartMethod::Spawn), false)?;
    let fork_ten_ratio = bare_forks(root, python)?;
    let _ = fs_err::remove_dir_all(&work);
    let python_ten_ratio = python_starts(python)?;
    Ok(ManagerFigures {
        python_ten_ratio,
        fork_ten_ratio,
        manager_p50_us: p50(through_manager).as_secs_f64() * 1e6,
        bare_p50_us: p50(direct).as_secs_f64() * 1e6,
        load_one_ms: forked.one,
        load_two_ms: forked.two,
        load_ten_ms: forked.ten,
        load_cpu_ms: forked.cpu_each,
        spawn_one_ms: executed.one,
        spawn_ten_ms: executed.ten,
    })
}

/// Medians, in milliseconds.
struct Loads {
    one: f64,
    two: f64,
    ten: f64,
    cpu_each: f64,
}

/// Loads one instance, then ten at once, `LOAD_RUNS` times; medians. With
/// `measure_cpu`, also the CPU time the ten cost (forked workers only: their
/// forkserver is the one process besides host and workers that works for them).
fn loads(manager: &Manager, measure_cpu: bool) -> Result<Loads> {
    let mut one = Vec::new();
    let mut two = Vec::new();
    let mut ten = Vec::new();
    let mut cpu = Vec::new();
    for run in 0..LOAD_RUNS {
        // As many loads as cores: what overlap alone gives.
        let pair: Vec<LoadSpec> = (0..2)
            .map(|i| LoadSpec::new("trivial").instance(format!("two-{run}-{i}")))
            .collect();
        let t = Instant::now();
        let ids = manager
            .load_many(&pair)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        two.push(t.elapsed());
        for id in ids {
            manager.unload(&id)?;
        }
        let t = Instant::now();
        let single = manager.load(&LoadSpec::new("trivial").instance(format!("one-{run}")))?;
        one.push(t.elapsed());
        let server = manager.worker(&single).map(|w| parent_of(w.pid()));
        manager.unload(&single)?;
        let specs: Vec<LoadSpec> = (0..LOADS)
            .map(|i| LoadSpec::new("trivial").instance(format!("ten-{run}-{i}")))
            .collect();
        let (host0, server0) = (host_cpu(), server.map_or(0.0, task_cpu));
        let t = Instant::now();
        let ids = manager
            .load_many(&specs)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        ten.push(t.elapsed());
        if measure_cpu {
            let workers: f64 = ids
                .iter()
                .filter_map(|id| manager.worker(id))
                .map(|w| process_cpu(w.pid()))
                .sum();
            let total = host_cpu() - host0 + server.map_or(0.0, task_cpu) - server0 + workers;
            cpu.push(Duration::from_secs_f64(total / LOADS as f64));
        }
        for id in ids {
            manager.unload(&id)?;
        }
    }
    Ok(Loads {
        one: p50(one).as_secs_f64() * 1e3,
        two: p50(two).as_secs_f64() * 1e3,
        ten: p50(ten).as_secs_f64() * 1e3,
        cpu_each: if cpu.is_empty() {
            0.0
        } else {
            p50(cpu).as_secs_f64() * 1e3
        },
    })
}

/// Ten bare forked workers (no manager) started at once ÷ one.
fn bare_forks(root: &Path, python: &Path) -> Result<f64> {
    let spec = || {
        WorkerSpec::new("trivial", python, "bench_plugins", "Trivial")
            .python_path(root.join("bench/plugins"))
            .start_method(cjm_proxy::StartMethod::Forkserver)
    };
    Worker::spawn(spec())?.stop_blocking();
    let mut ratios = Vec::new();
    for _ in 0..LOAD_RUNS {
        let t = Instant::now();
        let w = Worker::spawn(spec())?;
        let one = t.elapsed();
        w.stop_blocking();
        let t = Instant::now();
        let workers = std::thread::scope(|s| {
            let handles: Vec<_> = (0..LOADS)
                .map(|_| s.spawn(|| Worker::spawn(spec())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("spawning thread"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        ratios.push(t.elapsed().as_secs_f64() / one.as_secs_f64());
        for w in workers {
            w.stop_blocking();
        }
    }
    ratios.sort_by(f64::total_cmp);
    Ok(ratios[ratios.len() / 2])
}

/// This process's CPU time so far (all threads, exited ones included), seconds.
fn host_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &raw mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A task's CPU time so far, from its `schedstat` (nanoseconds), seconds.
fn schedstat(path: &str) -> f64 {
    fs_err::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// A single-threaded process's CPU time so far, seconds.
fn task_cpu(pid: u32) -> f64 {
    schedstat(&format!("/proc/{pid}/schedstat"))
}

/// A live process's CPU time so far, over all its threads, seconds.
fn process_cpu(pid: u32) -> f64 {
    fs_err::read_dir(format!("/proc/{pid}/task")).map_or(0.0, |tasks| {
        tasks
            .filter_map(Result::ok)
            .map(|t| schedstat(&format!("{}/schedstat", t.path().display())))
            .sum()
    })
}

fn parent_of(pid: u32) -> u32 {
    fs_err::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
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

pub(crate) fn write_manifest(
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
