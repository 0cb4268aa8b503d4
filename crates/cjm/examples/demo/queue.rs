//! Section 9 of the demo: the durable job queue. A sequence, a cancel of a
//! running job in phases, a transient failure retried with backoff; then a
//! host process (this demo, run as `--queue-host DATA`) killed with SIGKILL
//! in the middle of 300 jobs and started again, with every job accounted for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cjm::manager::{LoadSpec, Manager, ManagerOptions};
use cjm::proto::Value;
use cjm::queue::store::Listing;
use cjm::queue::{
    JobEventType, JobQueue, JobStatus, QueueClient, QueueOptions, RetryPolicy, SequenceStep, Submit,
};

use super::{env_path, heading, out};

type Error = Box<dyn std::error::Error>;

/// Manifests for the demo's `text-stats` and `flaky` plugins in `data`.
fn write_manifests(data: &Path) -> Result<(), Error> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    fs_err::create_dir_all(data.join("manifests"))?;
    for (name, class, schema) in [
        (
            "text-stats",
            "TextStats",
            serde_json::json!({"lowercase": {"type": "boolean", "default": true}}),
        ),
        ("flaky", "Flaky", serde_json::json!({})),
    ] {
        let mut m = cjm::manifest::Manifest::default();
        m.install.python_path = env_path("CJM_PYTHON").display().to_string();
        m.install.env_vars.insert(
            "PYTHONPATH".into(),
            serde_json::Value::String(plugins.display().to_string()),
        );
        m.code.name = name.into();
        m.code.version = "0.1.0".into();
        m.code.description = "a demo plugin".into();
        m.code.module = "demo_plugins".into();
        m.code.class_name = class.into();
        m.code.interface = "cjm_worker.PluginInterface".into();
        m.code.config_schema = serde_json::json!({"type": "object", "properties": schema})
            .as_object()
            .cloned();
        m.write(data.join("manifests").join(format!("{name}.json")))?;
    }
    Ok(())
}

fn manager(data: &Path) -> Result<Manager, Error> {
    let cfg = cjm::core::load_config(
        &cjm::core::LoadOptions {
            data_dir: Some(data.to_owned()),
            ..Default::default()
        },
        &|_| None,
        data,
    )?;
    let m = Manager::new(
        cfg,
        ManagerOptions {
            reap_interval: None,
            ..ManagerOptions::default()
        },
    );
    for name in ["text-stats", "flaky"] {
        m.load(&LoadSpec::new(name).lazy())?;
    }
    Ok(m)
}

fn text(s: &str) -> Vec<Value> {
    vec![Value::from(s)]
}

pub(crate) fn durable_queue() -> Result<(), Error> {
    heading(9, "The durable job queue");
    let data = std::env::temp_dir().join(format!("cjm-demo-queue-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&data);
    write_manifests(&data)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(in_this_process(&data))?;
    rt.block_on(a_host_killed(&data))?;
    let _ = fs_err::remove_dir_all(&data);
    Ok(())
}

/// A sequence, a cancel and a retry, on a queue in this process.
async fn in_this_process(data: &Path) -> Result<(), Error> {
    let mut options = QueueOptions::new(data.join("first.db"));
    options.retry = RetryPolicy {
        backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let q = JobQueue::open(manager(data)?, options).await?;
    q.start();

    let id = q
        .submit_sequence(
            vec![
                SequenceStep::new("text-stats", text("one two"), vec![]),
                SequenceStep::new("text-stats", text("three four five"), vec![]),
                SequenceStep::new("text-stats", text("six"), vec![]),
            ],
            0,
            true,
        )
        .await?;
    let mut events = q.events_for_sequence(&id);
    let words: Vec<i64> = loop {
        let Some(e) = events.next().await else {
            break Vec::new();
        };
        if e.kind == JobEventType::StateTransition && e.sequence_index == Some(2) {
            let to = e.payload.get("to").and_then(|v| v.as_str());
            if to
                .and_then(JobStatus::parse)
                .is_some_and(JobStatus::is_terminal)
            {
                let s = q.get_sequence(&id).await?.ok_or("the sequence is gone")?;
                break s
                    .results
                    .iter()
                    .map(|r| {
                        r.result
                            .as_ref()
                            .and_then(|v| v.to_json()["words"].as_i64())
                            .unwrap_or(-1)
                    })
                    .collect();
            }
        }
    };
    out(&format!(
        "   a sequence of 3 steps ran one after another: words per step {words:?}"
    ));

    let slow = q.submit("flaky", text("slow"), vec![], 0).await?;
    let mut events = q.events(&slow);
    let mut phases = Vec::new();
    while let Some(e) = events.next().await {
        if e.kind == JobEventType::StateTransition
            && e.payload.get("to").is_some_and(|v| v == "running")
        {
            q.cancel(&slow).await?;
        }
        if e.kind == JobEventType::CancelPhaseChanged {
            phases.push(
                e.payload
                    .get("to")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        if e.kind == JobEventType::StateTransition
            && e.payload.get("to").is_some_and(|v| v == "cancelled")
        {
            break;
        }
    }
    out(&format!(
        "   a running job cancelled, its phases recorded: {}",
        phases.join(" -> ")
    ));

    let busy = q.submit("flaky", text("fail-twice"), vec![], 0).await?;
    let job = q.wait_for_job(&busy, Some(Duration::from_mins(1))).await?;
    out(&format!(
        "   a transient failure retried with backoff: {} after {} retries -> {}",
        job.status,
        job.retry_count,
        job.result
            .map_or_else(String::new, |v| v.to_json().to_string())
    ));
    q.stop();
    q.manager().unload_all();
    Ok(())
}

/// A host process killed in the middle of 300 jobs, and the next one.
async fn a_host_killed(data: &Path) -> Result<(), Error> {
    const JOBS: usize = 300;
    let queue = data.join("queue.db");
    let client = QueueClient::open(&queue).await?;
    for n in 0..JOBS {
        client
            .submit(Submit::new("text-stats", text(&format!("job {n}")), vec![]).idempotent())
            .await?;
    }
    let mut host = Command::new(std::env::current_exe()?)
        .arg("--queue-host")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(host.stdout.take().ok_or("no stdout")?).lines();
    let mut done = 0;
    while done < 100 {
        let Some(line) = lines.next() else { break };
        done += usize::from(line?.ends_with(" completed"));
    }
    // `Child::kill` is SIGKILL: the host gets no chance to tidy up.
    host.kill()?;
    host.wait()?;
    let stats = client.stats().await?;
    out(&format!(
        "   a host process killed (SIGKILL) after {done} of {JOBS} jobs: the file holds {} completed, {} running, {} pending",
        stats.total_completed, stats.total_running, stats.total_pending
    ));
    let started = Instant::now();
    let mut next = Command::new(std::env::current_exe()?)
        .arg("--queue-host")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(next.stdout.take().ok_or("no stdout")?).lines();
    loop {
        let stats = client.stats().await?;
        if stats.total_pending + stats.total_running == 0 {
            break;
        }
        if lines.next().is_none() {
            break;
        }
    }
    next.kill()?;
    next.wait()?;
    let ended = client.list(Listing::History(None)).await?;
    let completed = ended
        .iter()
        .filter(|j| j.status == JobStatus::Completed)
        .count();
    let rerun = ended.iter().filter(|j| j.retry_count > 0).count();
    out(&format!(
        "   the next host settled and finished the rest in {:.1?}: {completed} of {JOBS} completed, nothing lost ({rerun} interrupted idempotent job(s) ran again)",
        started.elapsed()
    ));
    Ok(())
}

/// `demo --queue-host DATA`: works the queue in `DATA/queue.db`, printing
/// `ID FROM TO` per job move, until killed.
pub(crate) fn host(data: &Path) -> Result<(), Error> {
    use std::io::Write;
    let manager = manager(data)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let q = JobQueue::open(manager, QueueOptions::new(data.join("queue.db"))).await?;
        let mut events = q.all_events();
        q.start();
        let mut o = std::io::stdout();
        while let Some(e) = events.next().await {
            if e.kind == JobEventType::StateTransition {
                let to = e.payload.get("to").and_then(|v| v.as_str()).unwrap_or("");
                writeln!(o, "{} {to}", e.job_id)?;
                o.flush()?;
            }
        }
        Ok::<(), Error>(())
    })
}
