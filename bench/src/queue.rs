//! The durable queue's throughput and effect: trivial jobs submitted at once
//! and run to the end on one worker, the same calls made straight through the
//! manager, four plugins' sleeping jobs side by side, and a restart with
//! 100,000 jobs queued.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cjm_manager::{LoadSpec, Manager, ManagerOptions};
use cjm_proto::Value;
use cjm_queue::{JobQueue, QueueOptions};

use crate::manager::write_manifest;
use crate::report::{Reading, Report};

const JOBS: usize = 20_000;
const QUEUED: usize = 100_000;
const SLEEP_MS: i64 = 300;

/// Every queue figure, each measured on its own.
pub(crate) fn figures(r: &mut Report, root: &Path, python: &Path) {
    r.measure(
        "queue: trivial jobs submitted at once, run on one worker, until all completed; vs the same calls through the manager",
        &["queue_jobs_per_s", "queue_vs_direct_ratio"],
        |r| throughput(r, root, python),
    );
    r.measure(
        "queue: 4 plugins x 3 sleeping jobs, all submitted at once",
        &["queue_parallel_efficiency"],
        |r| parallel(r, root, python),
    );
    r.measure(
        "queue: reopen after the host stops with 100,000 jobs queued, until the first runs",
        &["recovery_s"],
        |r| recovery(r, root, python),
    );
    r.measure(
        "queue: 1,000,000 pending jobs: the host's RSS growth, and a job submitted after them runs",
        &["queue_1m_pending_rss_mb"],
        |r| million(r, root, python),
    );
}

/// This process's resident memory, bytes.
fn rss_bytes() -> Result<u64> {
    let status = fs_err::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

fn million(r: &mut Report, root: &Path, python: &Path) -> Result<()> {
    const PENDING: usize = 1_000_000;
    const WAVE: usize = 10_000;
    let rt = runtime()?;
    let (work, m) = setup(root, python, "bench-queue-million")?;
    m.load(&LoadSpec::new("trivial"))?;
    let (grown, submit_s, ran_ms) = rt.block_on(async {
        let q = JobQueue::open(m.clone(), QueueOptions::new(work.join("queue.db"))).await?;
        let before = rss_bytes()?;
        let t = Instant::now();
        for _ in 0..PENDING / WAVE {
            let mut wave = tokio::task::JoinSet::new();
            for i in 0..WAVE {
                let q = q.clone();
                wave.spawn(async move {
                    q.submit("trivial", vec![Value::Int(i as i64)], vec![], 0)
                        .await
                });
            }
            while let Some(s) = wave.join_next().await {
                s??;
            }
        }
        let submit_s = t.elapsed().as_secs_f64();
        let grown = rss_bytes()?.saturating_sub(before);
        // Dispatch still works: one urgent job runs ahead of the million.
        q.start();
        let t = Instant::now();
        let urgent = q
            .submit("trivial", vec![Value::Int(-1)], vec![], 1_000_000)
            .await?;
        let job = q
            .wait_for_job(&urgent, Some(Duration::from_mins(1)))
            .await?;
        if job.status != cjm_queue::JobStatus::Completed {
            bail!("the urgent job did not complete: {job:?}");
        }
        let ran_ms = t.elapsed().as_secs_f64() * 1e3;
        q.stop();
        anyhow::Ok((grown, submit_s, ran_ms))
    })?;
    r.figure("queue_1m_submit_s", submit_s);
    r.figure("queue_1m_urgent_job_ms", ran_ms);
    crate::report::say(&format!(
        "  1,000,000 submitted in {submit_s:.1} s; an urgent job then ran in {ran_ms:.1} ms"
    ));
    r.judge(
        "queue_1m_pending_rss_mb",
        Reading::plain(grown as f64 / (1u64 << 20) as f64),
    );
    drop(rt);
    drop(m);
    let _ = fs_err::remove_dir_all(&work);
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A fresh work folder with the benchmark plugins' manifests, and a manager.
fn setup(root: &Path, python: &Path, name: &str) -> Result<(std::path::PathBuf, Manager)> {
    let work = root.join("target/cjm").join(name);
    let _ = fs_err::remove_dir_all(&work);
    fs_err::create_dir_all(work.join("manifests"))?;
    write_manifest(&work, root, python, "trivial", "bench_plugins", "Trivial")?;
    for p in ["sleeper-a", "sleeper-b", "sleeper-c", "sleeper-d"] {
        write_manifest(&work, root, python, p, "bench_plugins", "Sleeper")?;
    }
    let load = cjm_core::LoadOptions {
        data_dir: Some(work.clone()),
        ..Default::default()
    };
    let mut cfg = cjm_core::load_config(&load, &|_| None, &work)?;
    cfg.substrate.drift_detection = false;
    let m = Manager::new(
        cfg,
        ManagerOptions {
            search_paths: Some(vec![work.join("manifests")]),
            reap_interval: None,
            ..ManagerOptions::default()
        },
    );
    Ok((work, m))
}

/// Submits `n` jobs on each of `instances` at once (each its own task, so the
/// store commits them in groups) and waits until all have completed: then one
/// more per instance, which runs last there (one job at a time per instance,
/// in submission order), and waits for those.
async fn submit_and_drain(q: &JobQueue, instances: &[&str], n: usize, arg: i64) -> Result<()> {
    let mut submits = tokio::task::JoinSet::new();
    for instance in instances {
        for _ in 0..n {
            let q = q.clone();
            let instance = (*instance).to_owned();
            submits
                .spawn(async move { q.submit(&instance, vec![Value::Int(arg)], vec![], 0).await });
        }
    }
    while let Some(s) = submits.join_next().await {
        s??;
    }
    let mut last = Vec::new();
    for instance in instances {
        last.push(q.submit(instance, vec![Value::Int(arg)], vec![], 0).await?);
    }
    for id in last {
        let job = q.wait_for_job(&id, Some(Duration::from_mins(2))).await?;
        if job.status != cjm_queue::JobStatus::Completed {
            bail!("a benchmark job did not complete: {job:?}");
        }
    }
    let stats = q.get_stats().await?;
    if stats.total_failed + stats.total_cancelled > 0
        || stats.total_pending + stats.total_running > 0
    {
        bail!("not every benchmark job completed: {stats:?}");
    }
    Ok(())
}

fn throughput(r: &mut Report, root: &Path, python: &Path) -> Result<()> {
    let rt = runtime()?;
    let (work, m) = setup(root, python, "bench-queue")?;
    m.load(&LoadSpec::new("trivial"))?;
    let options = QueueOptions::new(work.join("queue.db"));
    let (queued, direct) = rt.block_on(async {
        let q = JobQueue::open(m.clone(), options).await?;
        q.start();
        // Warm: the worker, the statements, the file.
        submit_and_drain(&q, &["trivial"], 500, 1).await?;
        let t = Instant::now();
        submit_and_drain(&q, &["trivial"], JOBS, 1).await?;
        let queued = t.elapsed();
        let t = Instant::now();
        for _ in 0..JOBS {
            m.execute_async("trivial", vec![Value::Int(1)], vec![])
                .await?;
        }
        anyhow::Ok((queued, t.elapsed()))
    })?;
    let per_s = JOBS as f64 / queued.as_secs_f64();
    r.figure(
        "queue_direct_calls_per_s",
        JOBS as f64 / direct.as_secs_f64(),
    );
    // The same with eight jobs at a time on the worker (`per_instance` 8, for
    // plugins that take concurrent calls): the queue's own cost, pipelined.
    let pipelined = rt.block_on(async {
        let q = JobQueue::open(
            m.clone(),
            QueueOptions {
                per_instance: 8,
                ..QueueOptions::new(work.join("queue-8.db"))
            },
        )
        .await?;
        q.start();
        submit_and_drain(&q, &["trivial"], 500, 1).await?;
        let t = Instant::now();
        submit_and_drain(&q, &["trivial"], JOBS, 1).await?;
        anyhow::Ok(t.elapsed())
    })?;
    let pipelined_per_s = JOBS as f64 / pipelined.as_secs_f64();
    r.figure("queue_jobs_per_s_8_at_a_time", pipelined_per_s);
    crate::report::say(&format!(
        "  {JOBS} jobs: through the queue {:.0} ms ({per_s:.0}/s; eight at a time {pipelined_per_s:.0}/s), as manager calls {:.0} ms",
        queued.as_secs_f64() * 1e3,
        direct.as_secs_f64() * 1e3
    ));
    r.judge("queue_jobs_per_s", Reading::plain(per_s));
    r.judge(
        "queue_vs_direct_ratio",
        Reading::plain(direct.as_secs_f64() / queued.as_secs_f64()),
    );
    drop(rt);
    drop(m);
    let _ = fs_err::remove_dir_all(&work);
    Ok(())
}

fn parallel(r: &mut Report, root: &Path, python: &Path) -> Result<()> {
    let rt = runtime()?;
    let (work, m) = setup(root, python, "bench-queue-parallel")?;
    let plugins = ["sleeper-a", "sleeper-b", "sleeper-c", "sleeper-d"];
    for p in plugins {
        m.load(&LoadSpec::new(p))?;
    }
    let wall = rt.block_on(async {
        let q = JobQueue::open(m.clone(), QueueOptions::new(work.join("queue.db"))).await?;
        q.start();
        let t = Instant::now();
        // Two each, then the sentinel each that `submit_and_drain` waits on:
        // three sleeping jobs per plugin.
        submit_and_drain(&q, &plugins, 2, SLEEP_MS).await?;
        anyhow::Ok(t.elapsed())
    })?;
    let ideal = Duration::from_millis(3 * SLEEP_MS as u64).as_secs_f64();
    r.judge(
        "queue_parallel_efficiency",
        Reading::plain(ideal / wall.as_secs_f64()),
    );
    drop(rt);
    drop(m);
    let _ = fs_err::remove_dir_all(&work);
    Ok(())
}

fn recovery(r: &mut Report, root: &Path, python: &Path) -> Result<()> {
    let rt = runtime()?;
    let (work, manager) = setup(root, python, "bench-queue-recovery")?;
    manager.load(&LoadSpec::new("trivial"))?;
    let path = work.join("queue.db");
    let took = rt.block_on(async {
        {
            let q = JobQueue::open(manager.clone(), QueueOptions::new(&path)).await?;
            let mut submits = tokio::task::JoinSet::new();
            for i in 0..QUEUED {
                let q = q.clone();
                submits.spawn(async move {
                    q.submit("trivial", vec![Value::Int(i as i64)], vec![], 0)
                        .await
                });
            }
            while let Some(s) = submits.join_next().await {
                s??;
            }
        }
        let t = Instant::now();
        let q = JobQueue::open(manager.clone(), QueueOptions::new(&path)).await?;
        let mut events = q.all_events();
        q.start();
        loop {
            let event = tokio::time::timeout(Duration::from_mins(1), events.next())
                .await
                .context("no job started within 60 s of the reopen")?
                .context("the queue's events ended")?;
            if event.payload.get("to").and_then(|t| t.as_str()) == Some("running") {
                break;
            }
        }
        anyhow::Ok(t.elapsed())
    })?;
    r.judge("recovery_s", Reading::plain(took.as_secs_f64()));
    drop(rt);
    drop(manager);
    let _ = fs_err::remove_dir_all(&work);
    Ok(())
}
