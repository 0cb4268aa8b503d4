//! `cjm-ctl jobs work`: a host that works the durable queue in the
//! foreground. It loads every installed plugin lazily (a worker starts with
//! its first job), opens the queue (settling what a dead host left), runs
//! jobs until Ctrl-C, and prints each job's moves on stderr. On Ctrl-C it
//! starts no more jobs and waits for the running ones (`--drain`: for every
//! pending one too); a second Ctrl-C leaves at once, and the jobs still
//! running are settled by the next host as interrupted.

use std::path::Path;
use std::process::ExitCode;

use cjm::manager::{LoadSpec, Manager, ManagerOptions};
use cjm::queue::{JobEventType, JobQueue, QueueOptions};

use crate::ctx::Ctx;

#[derive(clap::Args)]
pub(crate) struct WorkArgs {
    /// On Ctrl-C, run every pending job before leaving (default: only let the
    /// running ones finish).
    #[arg(long)]
    drain: bool,
    /// The most jobs running at once.
    #[arg(long, default_value_t = 64)]
    max_running: usize,
    /// The most jobs running at once on one instance.
    #[arg(long, default_value_t = 1)]
    per_instance: usize,
}

pub(crate) fn run(a: &WorkArgs, ctx: &Ctx, path: &Path) -> anyhow::Result<ExitCode> {
    let manager = Manager::new(ctx.cfg.clone(), ManagerOptions::default());
    let discovery = ctx.discover();
    let specs: Vec<LoadSpec> = discovery
        .found
        .iter()
        .map(|d| LoadSpec::new(d.manifest.code.name.as_str()).lazy())
        .collect();
    for (spec, outcome) in specs.iter().zip(manager.load_many(&specs)) {
        if let Err(e) = outcome {
            eprintln!("warning: plugin {} is not loaded: {e}", spec.plugin);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(async {
        let mut options = QueueOptions::new(path);
        options.max_running = a.max_running.max(1);
        options.per_instance = a.per_instance.max(1);
        let queue = JobQueue::open(manager.clone(), options)
            .await
            .map_err(super::queue_error)?;
        let mut events = queue.all_events();
        queue.start();
        let stats = queue.get_stats().await.map_err(super::queue_error)?;
        eprintln!(
            "working {} ({} pending, {} plugins loaded); Ctrl-C to stop{}",
            path.display(),
            stats.total_pending,
            manager.instance_ids().len(),
            if a.drain { " after the pending jobs" } else { "" }
        );
        let mut stopping = false;
        loop {
            tokio::select! {
                e = events.next() => {
                    let Some(e) = e else { break };
                    say(&e);
                    if stopping && idle(&queue, a.drain).await {
                        break;
                    }
                }
                _ = tokio::signal::ctrl_c() => {
                    if stopping {
                        eprintln!("stopping now; the running jobs are settled by the next host");
                        return anyhow::Ok(ExitCode::from(130));
                    }
                    stopping = true;
                    if a.drain {
                        eprintln!("draining: running every pending job, then stopping (Ctrl-C again: now)");
                    } else {
                        queue.stop();
                        eprintln!("stopping: no new jobs; waiting for the running ones (Ctrl-C again: now)");
                    }
                    if idle(&queue, a.drain).await {
                        break;
                    }
                }
            }
        }
        queue.stop();
        queue.flush().await.map_err(super::queue_error)?;
        anyhow::Ok(ExitCode::SUCCESS)
    })?;
    manager.unload_all();
    Ok(code)
}

/// Whether nothing is left to wait for: no job running (and, draining, none pending).
async fn idle(queue: &JobQueue, drain: bool) -> bool {
    if queue.running_now() > 0 {
        return false;
    }
    !drain || queue.get_stats().await.is_ok_and(|s| s.total_pending == 0)
}

/// One line per job move, for the operator.
fn say(e: &cjm::queue::JobEvent) {
    let short = e.job_id.get(..8).unwrap_or(&e.job_id);
    let text = |k: &str| e.payload.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match e.kind {
        JobEventType::StateTransition => eprintln!(
            "job {short} on {}: {} -> {}",
            e.plugin_instance_id,
            text("from"),
            text("to")
        ),
        JobEventType::RetryStarted => eprintln!(
            "job {short} on {}: retry {} ({})",
            e.plugin_instance_id,
            e.payload.get("attempt").cloned().unwrap_or_default(),
            text("error")
        ),
        JobEventType::CancelPhaseChanged => {
            eprintln!(
                "job {short} on {}: cancel {}",
                e.plugin_instance_id,
                text("to")
            );
        }
        JobEventType::BlockReasonChanged if !text("to").is_empty() => {
            eprintln!("job {short} waits: {}", text("to"));
        }
        _ => {}
    }
}
