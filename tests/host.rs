//! The host the fault suite kills: `e2e-host DATA_DIR` works the queue in
//! `DATA_DIR/queue.db` with the plugins installed there (loaded lazily), says
//! `working N` on stdout once the queue is open (a dead host's jobs settled;
//! N jobs pending), before it starts any,
//! then one line per job move, `ID FROM TO`, until it is killed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cjm::manager::{LoadSpec, Manager, ManagerOptions};
use cjm::queue::{JobEventType, JobQueue, QueueOptions, RetryPolicy};

fn main() -> anyhow::Result<()> {
    let data = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: e2e-host DATA_DIR")?,
    );
    let cfg = cjm::core::load_config(
        &cjm::core::LoadOptions {
            data_dir: Some(data.clone()),
            ..Default::default()
        },
        &|_| None,
        &data,
    )?;
    let manager = Manager::new(
        cfg,
        ManagerOptions {
            reap_interval: None,
            ..ManagerOptions::default()
        },
    );
    for name in ["counter", "other"] {
        manager.load(&LoadSpec::new(name).lazy())?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut options = QueueOptions::new(data.join("queue.db"));
        options.retry = RetryPolicy::never();
        options.cancel_grace = Duration::from_millis(200);
        let queue = JobQueue::open(manager, options).await?;
        let mut events = queue.all_events();
        let pending = queue.get_stats().await?.total_pending;
        let mut out = std::io::stdout();
        // Said before any job starts: every job move after it is on a line.
        writeln!(out, "working {pending}")?;
        out.flush()?;
        queue.start();
        while let Some(e) = events.next().await {
            if e.kind == JobEventType::StateTransition {
                let to = |k: &str| e.payload.get(k).and_then(|v| v.as_str()).unwrap_or("?");
                writeln!(out, "{} {} {}", e.job_id, to("from"), to("to"))?;
                out.flush()?;
            }
        }
        anyhow::Ok(())
    })
}
