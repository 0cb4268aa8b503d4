//! `cjm-ctl jobs`: the durable job queue from a shell. `submit`, `list`,
//! `show`, `cancel`, `retry`, `logs` and `watch` work on the queue file
//! beside its host (they reach a running host on its socket: a job submitted
//! here starts at once, a cancel stops a running job in phases, `watch`
//! follows a job as it runs); `work` is the host (`work.rs`).
//!
//! Exit codes: 0 success (for `watch`, the job completed); 1 the job failed
//! or was cancelled, or the operation failed; 2 bad usage (an unknown plugin,
//! bad JSON, a job that is not there).

mod work;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use cjm::queue::store::Listing;
use cjm::queue::{Job, JobStatus, QueueClient, QueueError, Submit};
use serde_json::{Value, json};

use crate::ctx::{Ctx, Global};

/// A line on stdout; a closed pipe is the reader's choice, not an error here.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// Submit, list, show, cancel, retry and watch jobs; `work` runs a host.
#[derive(clap::Args)]
pub(crate) struct JobsArgs {
    /// The queue file (default `<data_dir>/queue.db`).
    #[arg(long, global = true, value_name = "FILE")]
    queue: Option<PathBuf>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Store a job for a plugin's `execute`; print its id. A running host starts it at once.
    Submit(SubmitArgs),
    /// List pending, running and recent jobs.
    List(ListArgs),
    /// Show one job: status, times, result or error.
    Show(IdArgs),
    /// Cancel a job: a pending one never runs; a running one is stopped in phases.
    Cancel(IdArgs),
    /// Submit a failed or cancelled job again, as a new job; print its id.
    Retry(IdArgs),
    /// Print the lines of its plugin's log that a job wrote while it ran.
    Logs(LogsArgs),
    /// Follow a job until it ends; exit 0 if it completed, 1 if not.
    Watch(WatchArgs),
    /// Work the queue in the foreground: run its jobs until Ctrl-C.
    Work(work::WorkArgs),
}

#[derive(clap::Args)]
struct SubmitArgs {
    /// The installed plugin (its default instance).
    plugin: String,
    /// The action (the `action` keyword argument), as `cjm-ctl call` takes it.
    action: Option<String>,
    /// The job's arguments: a JSON object (keyword arguments) or array (positional).
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// An idempotency key: a second submit with it returns the first job.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Safe to run again if its host dies while it runs (else it fails, saying so).
    #[arg(long)]
    idempotent: bool,
    /// Stop it and fail it after this many seconds of running.
    #[arg(long, value_name = "SECONDS", value_parser = crate::ctx::seconds)]
    timeout: Option<Duration>,
    /// Print `{"id": …}` instead of the bare id.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only jobs in this state: pending, running or ended.
    #[arg(long, value_name = "STATE")]
    status: Option<ListStatus>,
    /// At most this many ended jobs.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ListStatus {
    Pending,
    Running,
    Ended,
}

#[derive(clap::Args)]
struct IdArgs {
    /// The job's id.
    id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct LogsArgs {
    /// The job's id.
    id: String,
    /// At most this many lines.
    #[arg(long, short = 'n', default_value_t = 100)]
    lines: usize,
    /// Print `{"id": …, "lines": […]}` instead of the lines.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct WatchArgs {
    /// The job's id.
    id: String,
    /// Print each event as a JSON line instead of a progress display.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: &JobsArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(g)?;
    let path = a
        .queue
        .clone()
        .unwrap_or_else(|| ctx.cfg.data_dir.join("queue.db"));
    if let Verb::Work(w) = &a.verb {
        return work::run(w, &ctx, &path);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = QueueClient::open(&path).await.map_err(queue_error)?;
        match &a.verb {
            Verb::Submit(s) => submit(&client, &ctx, s).await,
            Verb::List(l) => list(&client, l).await,
            Verb::Show(s) => show(&client, s).await,
            Verb::Cancel(c) => cancel(&client, c).await,
            Verb::Retry(r) => retry(&client, r).await,
            Verb::Logs(l) => logs(&client, &ctx, l).await,
            Verb::Watch(w) => watch(&client, w).await,
            Verb::Work(_) => unreachable!("handled above"),
        }
    })
}

/// A queue error with its hint; a missing job is a usage error.
#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(queue_error)`"
)]
pub(crate) fn queue_error(e: QueueError) -> anyhow::Error {
    let mut text = crate::with_causes(&e);
    if let Some(hint) = e.hint() {
        text.push_str("\nhint: ");
        text.push_str(&hint);
    }
    match e {
        QueueError::NoJob(_) => anyhow::Error::new(crate::Usage(text)),
        _ => anyhow::Error::new(crate::Failure(text)),
    }
}

async fn job(client: &QueueClient, id: &str) -> anyhow::Result<Job> {
    client
        .get_job(id)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| queue_error(QueueError::NoJob(id.to_owned())))
}

async fn submit(client: &QueueClient, ctx: &Ctx, a: &SubmitArgs) -> anyhow::Result<ExitCode> {
    crate::ctx::plugin_name(&a.plugin).map_err(|e| crate::Usage(format!("{}: {e}", a.plugin)))?;
    let discovery = ctx.discover();
    if !discovery
        .found
        .iter()
        .any(|d| d.manifest.code.name == a.plugin)
    {
        return Err(crate::ctx::not_installed(&a.plugin, &discovery));
    }
    let (args, kwargs) = crate::call::arguments(a.args.as_deref(), a.action.as_deref())?;
    let mut job = Submit::new(&a.plugin, args, kwargs).priority(a.priority);
    job.idempotency_key.clone_from(&a.key);
    job.idempotent = a.idempotent;
    job.timeout = a.timeout;
    let id = client.submit(job).await.map_err(queue_error)?;
    if !client.host_running().await && !ctx.quiet {
        eprintln!(
            "note: no host works this queue now; the job waits until `cjm-ctl jobs work` runs"
        );
    }
    if a.json {
        out!("{}", json!({ "id": id }));
    } else {
        out!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &QueueClient, a: &ListArgs) -> anyhow::Result<ExitCode> {
    let mut jobs = Vec::new();
    let wants = |s: ListStatus| a.status.is_none_or(|w| w as u8 == s as u8);
    if wants(ListStatus::Running) {
        jobs.extend(client.list(Listing::Running).await.map_err(queue_error)?);
    }
    if wants(ListStatus::Pending) {
        jobs.extend(client.list(Listing::Pending).await.map_err(queue_error)?);
    }
    if wants(ListStatus::Ended) {
        jobs.extend(
            client
                .list(Listing::History(Some(a.limit)))
                .await
                .map_err(queue_error)?,
        );
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let all: Vec<Value> = jobs.iter().map(job_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        writeln!(out, "no jobs")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<36}  {:<9}  {:<20}  {:>8}  {:>9}",
        "ID", "STATUS", "PLUGIN", "PRIORITY", "AGE"
    )?;
    for j in &jobs {
        writeln!(
            out,
            "{:<36}  {:<9}  {:<20}  {:>8}  {:>9}",
            j.id,
            j.status.as_str(),
            j.plugin_instance_id,
            j.priority,
            age(j.submitted_at)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// How long ago, in a few characters.
fn age(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| json!(cjm::core::isoformat_utc(t)))
}

/// A job as JSON: the reference's `Job` fields, cjm's beside them.
pub(crate) fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id,
        "plugin_instance_id": j.plugin_instance_id,
        "status": j.status.as_str(),
        "priority": j.priority,
        "args": j.args.iter().map(cjm::proto::Value::to_json).collect::<Vec<_>>(),
        "kwargs": j.kwargs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
        "submitted_at": time(Some(j.submitted_at)),
        "started_at": time(j.started_at),
        "completed_at": time(j.completed_at),
        "progress": j.progress,
        "status_message": j.status_message,
        "result": j.result.as_ref().map(cjm::proto::Value::to_json),
        "error": j.error,
        "sequence_id": j.sequence_id,
        "sequence_index": j.sequence_index,
        "cancel_requested_at": time(j.cancel_requested_at),
        "cancel_phase": j.cancel_phase.map(cjm::queue::CancelPhase::as_str),
        "block_reason": j.block_reason,
        "retry_count": j.retry_count,
        "idempotent": j.idempotent,
        "idempotency_key": j.idempotency_key,
        "timeout_s": j.timeout.map(|t| t.as_secs_f64()),
    })
}

async fn show(client: &QueueClient, a: &IdArgs) -> anyhow::Result<ExitCode> {
    let j = job(client, &a.id).await?;
    let v = job_json(&j);
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "job {} on {}: {}",
        j.id, j.plugin_instance_id, j.status
    )?;
    for key in [
        "priority",
        "submitted_at",
        "started_at",
        "completed_at",
        "retry_count",
        "cancel_phase",
        "block_reason",
        "timeout_s",
    ] {
        if !v[key].is_null() {
            writeln!(out, "  {key}: {}", v[key])?;
        }
    }
    if !j.status_message.is_empty() {
        writeln!(out, "  status_message: {}", j.status_message)?;
    }
    if let Some(e) = &j.error {
        writeln!(out, "  error ({}): {}", e.category.as_str(), e.message)?;
    }
    if !v["result"].is_null() {
        writeln!(out, "  result: {}", v["result"])?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel(client: &QueueClient, a: &IdArgs) -> anyhow::Result<ExitCode> {
    let j = job(client, &a.id).await?;
    let done = client.cancel(&a.id).await.map_err(queue_error)?;
    if a.json {
        out!("{}", json!({ "id": a.id, "cancelled": done }));
    } else if done {
        out!(
            "{}",
            if j.status == JobStatus::Running {
                "cancelling (the running job is stopped in phases; `cjm-ctl jobs watch ID` follows it)"
            } else {
                "cancelled"
            }
        );
    } else {
        eprintln!("job {} was not cancelled: it is {}", a.id, j.status);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn retry(client: &QueueClient, a: &IdArgs) -> anyhow::Result<ExitCode> {
    let j = job(client, &a.id).await?;
    if !matches!(j.status, JobStatus::Failed | JobStatus::Cancelled) {
        usage!(
            "job {} is {}: only a failed or cancelled job is submitted again",
            a.id,
            j.status
        );
    }
    let mut again = Submit::new(&j.plugin_instance_id, j.args, j.kwargs).priority(j.priority);
    again.idempotent = j.idempotent;
    again.timeout = j.timeout;
    let id = client.submit(again).await.map_err(queue_error)?;
    if a.json {
        out!("{}", json!({ "id": id, "retry_of": a.id }));
    } else {
        out!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(client: &QueueClient, ctx: &Ctx, a: &LogsArgs) -> anyhow::Result<ExitCode> {
    let j = job(client, &a.id).await?;
    // The default instance's id is its plugin's name; another's log is its plugin's.
    let discovery = ctx.discover();
    let plugin = discovery
        .found
        .iter()
        .map(|d| d.manifest.code.name.as_str())
        .filter(|name| j.plugin_instance_id.starts_with(name))
        .max_by_key(|name| name.len())
        .unwrap_or(&j.plugin_instance_id);
    let raw = fs_err::read_to_string(cjm::manager::launch::log_file(&ctx.cfg, plugin))
        .unwrap_or_default();
    let lines = cjm::queue::job_lines(&raw, &j, a.lines);
    if a.json {
        out!(
            "{}",
            json!({ "id": j.id, "lines": lines.lines().collect::<Vec<_>>() })
        );
    } else if !lines.is_empty() {
        out!("{lines}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch(client: &QueueClient, a: &WatchArgs) -> anyhow::Result<ExitCode> {
    let bar = (!a.json).then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let shown = |e: &Value| {
        if a.json {
            let _ = writeln!(std::io::stdout().lock(), "{e}");
            return;
        }
        let Some(bar) = &bar else { return };
        let payload = &e["payload"];
        match e["type"].as_str().unwrap_or_default() {
            "watching" => bar.set_message(payload["status"].as_str().unwrap_or("").to_owned()),
            "progress_changed" => {
                if let Some(p) = payload["progress"].as_f64() {
                    bar.set_position((p.clamp(0.0, 1.0) * 100.0) as u64);
                }
                if let Some(m) = payload["status_message"].as_str() {
                    bar.set_message(m.to_owned());
                }
            }
            "state_transition" => {
                bar.set_message(payload["to"].as_str().unwrap_or("").to_owned());
            }
            "log_appended" => bar.println(format!(
                "{} {}: {}",
                payload["level"].as_str().unwrap_or(""),
                payload["logger"].as_str().unwrap_or(""),
                payload["message"].as_str().unwrap_or("")
            )),
            "cancel_phase_changed" => {
                bar.set_message(format!("cancel: {}", payload["to"].as_str().unwrap_or("")));
            }
            "block_reason_changed" => match payload["to"].as_str() {
                Some(reason) => bar.set_message(format!("waiting: {reason}")),
                None => bar.set_message("running"),
            },
            "retry_started" => bar.set_message(format!(
                "retry {} in {:.1} s: {}",
                payload["attempt"],
                payload["delay_s"].as_f64().unwrap_or(0.0),
                payload["error"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    };
    let status = client.watch(&a.id, shown).await.map_err(queue_error)?;
    if let Some(bar) = &bar {
        if status == JobStatus::Completed {
            bar.set_position(100);
        }
        bar.finish_and_clear();
    }
    let j = job(client, &a.id).await?;
    if !a.json {
        match (&j.error, status) {
            (_, JobStatus::Completed) => out!("job {} completed", j.id),
            (Some(e), s) => eprintln!("job {} {s}: {}", j.id, e.message),
            (None, s) => eprintln!("job {} {s}", j.id),
        }
    }
    Ok(if status == JobStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
