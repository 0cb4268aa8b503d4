//! Scheduling's cost and effect: one admission decision among 100 loaded
//! instances on two fake GPUs, one monitor sample of 100 idle workers, evicting
//! an idle worker to run another plugin against a cold load, and four plugins
//! that fit together running their sleeping calls at once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cjm_core::SystemClock;
use cjm_manager::{LoadSpec, Manager, ManagerOptions};
use cjm_proto::Value;
use cjm_sched::fit::{Activity, Device, Loaded, Request, View};
use cjm_sched::footprint::{Basis, Expected};
use cjm_sched::{Decision, FitOptions, Footprint, Scheduler};

use crate::manager::write_manifest;
use crate::report::{Reading, Report};

const DECISIONS: usize = 20_000;
const WORKERS: usize = 100;
const SLEEP_MS: u64 = 300;

/// Every scheduling figure, each measured on its own.
pub(crate) fn figures(r: &mut Report, root: &Path, python: &Path) {
    r.measure(
        "admission: one fit decision among 100 loaded instances on 2 fake GPUs",
        &["admission_us"],
        admission,
    );
    r.measure(
        "monitor: one sample of memory, GPUs and 100 idle workers",
        &["monitor_sample_ms"],
        |r| monitor_sample(r, root, python),
    );
    r.measure(
        "eviction: evict an idle worker and run another plugin vs a cold load",
        &["evict_reload_ms"],
        |r| evict_reload(r, root, python),
    );
    r.measure(
        "parallel fit: 4 plugins that fit together, sleeping calls at once",
        &["parallel_fit_efficiency"],
        |r| parallel_fit(r, root, python),
    );
}

/// p50 of building the view of 100 loaded instances (as the manager does for
/// each call) and deciding, with the permit released, in µs.
fn admission(r: &mut Report) -> Result<()> {
    let gb = 1u64 << 30;
    let scheduler = Scheduler::new(SystemClock::shared(), FitOptions::default());
    let loaded: Vec<Loaded> = (0..WORKERS)
        .map(|i| Loaded {
            instance: format!("model-{i}"),
            plugin: format!("plugin-{}", i % 10),
            activity: if i % 3 == 0 {
                Activity::Busy
            } else {
                Activity::Idle
            },
            last_used: Duration::from_millis(i as u64),
            held: Footprint {
                ram_bytes: 200 << 20,
                vram_bytes: 60 << 20,
            },
            device: Some((i % 2) as u32),
            reload_ms: 3.0,
        })
        .collect();
    let devices: Vec<Device> = (0..2)
        .map(|index| Device {
            index,
            name: "Fake GPU".into(),
            total_bytes: 8 * gb,
            free_bytes: 2 * gb,
        })
        .collect();
    let request = Request {
        instance: "model-7".into(),
        plugin: "plugin-7".into(),
        expected: Expected {
            footprint: Footprint {
                ram_bytes: 300 << 20,
                vram_bytes: 100 << 20,
            },
            basis: Basis::Declared,
        },
        requires_gpu: true,
        max_concurrent: None,
    };
    let mut samples = Vec::with_capacity(DECISIONS);
    for i in 0..DECISIONS + DECISIONS / 10 {
        let t = Instant::now();
        let view = View {
            ram_free_bytes: 12 * gb,
            ram_capacity_bytes: 24 * gb,
            devices: devices.clone(),
            no_gpu_reason: None,
            loaded: loaded.clone(),
            max_workers: None,
            sampled_at: Duration::ZERO,
        };
        let decision = scheduler.decide(&request, &view);
        let Decision::Admit(permit) = decision else {
            bail!("the benchmark's call should fit, got {decision:?}");
        };
        drop(permit);
        if i >= DECISIONS / 10 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    let p50 = samples[samples.len() / 2].as_secs_f64() * 1e6;
    r.judge("admission_us", Reading::plain(p50));
    Ok(())
}

fn manager(work: &Path, options: ManagerOptions) -> Result<Manager> {
    let load = cjm_core::LoadOptions {
        data_dir: Some(work.to_path_buf()),
        ..Default::default()
    };
    let mut cfg = cjm_core::load_config(&load, &|_| None, work)?;
    cfg.substrate.drift_detection = false;
    Ok(Manager::new(
        cfg,
        ManagerOptions {
            search_paths: Some(vec![work.join("manifests")]),
            reap_interval: None,
            ..options
        },
    ))
}

fn workdir(root: &Path, python: &Path, name: &str) -> Result<std::path::PathBuf> {
    let work = root.join("target/cjm").join(name);
    let _ = fs_err::remove_dir_all(&work);
    fs_err::create_dir_all(work.join("manifests"))?;
    for plugin in ["sleeper-a", "sleeper-b", "sleeper-c", "sleeper-d"] {
        write_manifest(&work, root, python, plugin, "bench_plugins", "Sleeper")?;
    }
    Ok(work)
}

/// One full monitor sample with 100 idle workers running, ms (median of 20).
fn monitor_sample(r: &mut Report, root: &Path, python: &Path) -> Result<()> {
    let work = workdir(root, python, "bench-monitor")?;
    let m = manager(
        &work,
        ManagerOptions {
            monitor_interval: None,
            ..ManagerOptions::default()
        },
    )?;
    let specs: Vec<LoadSpec> = (0..WORKERS)
        .map(|i| LoadSpec::new("sleeper-a").instance(format!("idle-{i}")))
        .collect();
    for outcome in m.load_many(&specs) {
        outcome.context("loading 100 idle workers")?;
    }
    let mut samples = Vec::new();
    for _ in 0..25 {
        let t = Instant::now();
        let seen = m.refresh_resources();
        samples.push(t.elapsed());
        if seen.instances.iter().filter(|i| i.processes > 0).count() != WORKERS {
            bail!("the sample did not see all {WORKERS} workers");
        }
    }
    let samples = &mut samples[5..];
    samples.sort();
    let p50 = samples[samples.len() / 2].as_secs_f64() * 1e3;
    r.judge("monitor_sample_ms", Reading::plain(p50));
    m.unload_all();
    drop(m);
    let _ = fs_err::remove_dir_all(&work);
    Ok(())
}

/// Evicting an idle worker (one worker allowed) and running a call on another
/// plugin until its first result, against a cold load and first call of it
/// with nothing to evict: medians of 7, ms.
fn evict_reload(r: &mut Report, root: &Path, python: &Path) -> Result<()> {
    let work = workdir(root, python, "bench-evict")?;
    let mut evicting = Vec::new();
    let mut cold = Vec::new();
    let one = manager(
        &work,
        ManagerOptions {
            max_workers: Some(1),
            ..ManagerOptions::default()
        },
    )?;
    one.load(&LoadSpec::new("sleeper-a"))?;
    one.load(&LoadSpec::new("sleeper-b").lazy())?;
    for i in 0..8 {
        // Alternate: each call evicts the other plugin's idle worker.
        let id = if i % 2 == 0 { "sleeper-b" } else { "sleeper-a" };
        let t = Instant::now();
        one.execute(id, vec![Value::Int(0)], vec![])?;
        if i > 0 {
            evicting.push(t.elapsed());
        }
        let plain = manager(&work, ManagerOptions::default())?;
        let t = Instant::now();
        plain.load(&LoadSpec::new("sleeper-c"))?;
        plain.execute("sleeper-c", vec![Value::Int(0)], vec![])?;
        if i > 0 {
            cold.push(t.elapsed());
        }
    }
    drop(one);
    let _ = fs_err::remove_dir_all(&work);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let (evict_ms, cold_ms) = (median(evicting), median(cold));
    r.figure("cold_load_first_result_ms", cold_ms);
    r.judge("evict_reload_ms", Reading::ratio(evict_ms, cold_ms));
    Ok(())
}

/// Four plugins whose footprints fit together, one sleeping call each, all at
/// once: the ideal (one call's sleep) ÷ the wall time (median of 3).
fn parallel_fit(r: &mut Report, root: &Path, python: &Path) -> Result<()> {
    let work = workdir(root, python, "bench-parallel")?;
    let m = Arc::new(manager(&work, ManagerOptions::default())?);
    let ids = ["sleeper-a", "sleeper-b", "sleeper-c", "sleeper-d"];
    for id in ids {
        m.load(&LoadSpec::new(id))?;
    }
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let calls: Vec<_> = ids
                .iter()
                .map(|id| s.spawn(|| m.execute(id, vec![Value::Int(SLEEP_MS as i64)], vec![])))
                .collect();
            for c in calls {
                c.join()
                    .map_err(|_| anyhow::anyhow!("a call thread panicked"))??;
            }
            Ok(())
        })?;
        runs.push(t.elapsed());
    }
    runs.sort();
    let ideal = Duration::from_millis(SLEEP_MS).as_secs_f64();
    r.judge(
        "parallel_fit_efficiency",
        Reading::plain(ideal / runs[1].as_secs_f64()),
    );
    drop(m);
    let _ = fs_err::remove_dir_all(&work);
    Ok(())
}
