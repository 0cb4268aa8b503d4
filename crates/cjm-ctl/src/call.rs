//! `cjm-ctl call`: one call to a plugin, its result as JSON on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cjm::manager::{LoadSpec, Manager, ManagerError, ManagerOptions, StartMethod};
use cjm::proto::Value;
use cjm::proxy::{CallOptions, Event, Worker, WorkerError, WorkerSpec};

use crate::ctx::{Ctx, Global};

/// Start a plugin's worker, make one call, print the result as JSON, stop it.
///
/// `call PLUGIN [ACTION] --args JSON` calls an installed plugin's `execute` (with
/// `action=ACTION` when given). `call --python P --module M --class C METHOD [ARG...]`
/// calls any method of a class directly, without a manifest.
#[derive(clap::Args)]
pub(crate) struct CallArgs {
    /// The installed plugin's name (or, with --python, the method to call).
    target: String,
    /// The action (or, with --python, positional arguments, each a JSON value).
    rest: Vec<String>,
    /// The call's arguments: a JSON object (keyword arguments) or array (positional).
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Configuration to `initialize` the plugin with, as a JSON object (default `{}`).
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// Give up (and cancel the call) after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = crate::ctx::seconds)]
    timeout: Option<Duration>,
    /// Skip comparing the plugin's live config schema with its manifest's.
    #[arg(long)]
    no_drift_check: bool,
    /// Write binary results (bytes, arrays) to this file (more than one: FILE,
    /// FILE.1, ...); without it a binary result is refused, never dropped.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Call `execute_stream` and print one JSON line per chunk.
    #[arg(long)]
    stream: bool,
    /// Without a manifest: the interpreter of the plugin's environment.
    #[arg(long, requires_all = ["module", "class"])]
    python: Option<PathBuf>,
    /// Without a manifest: the module that defines the plugin class.
    #[arg(long, requires = "python")]
    module: Option<String>,
    /// Without a manifest: the plugin class.
    #[arg(long = "class", requires = "python")]
    class: Option<String>,
    /// Without a manifest: a directory to put on the worker's PYTHONPATH (repeatable).
    #[arg(long = "path", requires = "python")]
    python_path: Vec<PathBuf>,
    /// A variable for the worker, KEY=VALUE (repeatable); the host's own are not passed.
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Without a manifest: keyword arguments as a JSON object.
    #[arg(long, requires = "python")]
    kwargs: Option<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

pub(crate) fn json(s: &str, what: &str) -> anyhow::Result<Value> {
    match cjm::core::json_loads::<serde_json::Value>(s) {
        Ok(v) => Ok(Value::from(v)),
        Err(e) => usage!("{what} is not valid JSON: {s:?}: {e}"),
    }
}

fn json_object(s: Option<&str>, what: &str) -> anyhow::Result<Vec<(String, Value)>> {
    match s.map(|s| json(s, what)).transpose()? {
        None => Ok(Vec::new()),
        Some(Value::Map(m)) => Ok(m),
        Some(other) => usage!("{what} must be a JSON object, got a {}", other.type_name()),
    }
}

/// A call's positional and keyword arguments.
pub(crate) type Arguments = (Vec<Value>, Vec<(String, Value)>);

/// `--args JSON` (an object: keyword arguments; an array: positional) and an
/// ACTION (the `action` keyword argument), as `call` and `jobs submit` take them.
pub(crate) fn arguments(args: Option<&str>, action: Option<&str>) -> anyhow::Result<Arguments> {
    let (args, mut kwargs) = match args.map(|s| json(s, "--args")).transpose()? {
        None => (Vec::new(), Vec::new()),
        Some(Value::Map(m)) => (Vec::new(), m),
        Some(Value::List(l)) => (l, Vec::new()),
        Some(other) => usage!(
            "--args must be a JSON object (keyword arguments) or array (positional), got a {}",
            other.type_name()
        ),
    };
    if let Some(action) = action {
        kwargs.push(("action".to_owned(), Value::from(action)));
    }
    Ok((args, kwargs))
}

/// What to call, once the worker is up.
struct Call {
    method: String,
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
}

pub(crate) fn run(a: &CallArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let opts = CallOptions { timeout: a.timeout };
    if let Some(python) = &a.python {
        let config = a
            .config
            .as_deref()
            .map(|s| json(s, "--config"))
            .transpose()?
            .unwrap_or(Value::Map(Vec::new()));
        let (module, class) = (
            a.module.clone().unwrap_or_default(),
            a.class.clone().unwrap_or_default(),
        );
        let mut spec = WorkerSpec::new(class.to_lowercase(), python, module, &class);
        spec.python_path.clone_from(&a.python_path);
        spec.env.clone_from(&a.env);
        let call = Call {
            method: a.target.clone(),
            args: a
                .rest
                .iter()
                .map(|s| json(s, "an argument"))
                .collect::<anyhow::Result<_>>()?,
            kwargs: json_object(a.kwargs.as_deref(), "--kwargs")?,
        };
        return Ok(call_worker(spec, &config, &call, opts, a.output.as_deref()));
    }
    call_installed(a, global, opts)
}

/// `call PLUGIN`: the plugin's default instance, loaded by the manager exactly as
/// an application gets it (persisted and validated configuration, secrets,
/// visible `WORKER_ENV` variables, the enabled flag), called once, unloaded.
fn call_installed(a: &CallArgs, global: &Global, opts: CallOptions) -> anyhow::Result<ExitCode> {
    crate::ctx::plugin_name(&a.target).map_err(|e| crate::Usage(format!("{}: {e}", a.target)))?;
    let mut ctx = Ctx::load(global)?;
    if a.no_drift_check {
        ctx.cfg.substrate.drift_detection = false;
    }
    if a.rest.len() > 1 {
        usage!(
            "call takes one ACTION after the plugin name, got {:?}; pass arguments with --args",
            a.rest
        );
    }
    let config = json_object(a.config.as_deref(), "--config")?;
    let (args, kwargs) = arguments(a.args.as_deref(), a.rest.first().map(String::as_str))?;
    let manager = Manager::new(
        ctx.cfg.clone(),
        ManagerOptions {
            // One call: a forkserver would be one more process to start.
            start_method: StartMethod::Spawn,
            reap_interval: None,
            ..ManagerOptions::default()
        },
    );
    let Some(manifest) = manager.manifest(&a.target) else {
        let discovery = ctx.discover();
        return Err(crate::ctx::not_installed(&a.target, &discovery));
    };
    let mut spec = LoadSpec::new(&a.target);
    if a.config.is_some() {
        spec.config = Some(
            config
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        );
    }
    let declared = manifest.code.worker_env_vars();
    for (key, value) in &a.env {
        match declared.iter().find(|v| v.name == *key) {
            Some(var) if var.secret => usage!(
                "{key} is a secret of plugin {}: store it with `cjm-ctl set-secret {} {key}` (a secret on the command line would reach shell history)",
                a.target,
                a.target
            ),
            Some(_) => {
                if let Err(e) = manager.set_env_override(&a.target, key, Some(value.clone())) {
                    return Ok(report_manager(&e));
                }
            }
            None => spec.env.push((key.clone(), value.clone())),
        }
    }
    let mut events = manager.subscribe();
    let id = match manager.load(&spec) {
        Ok(id) => id,
        Err(e) => return Ok(report_manager(&e)),
    };
    while let Ok(event) = events.try_recv() {
        if let cjm::manager::ManagerEvent::Drift { message, .. } = event
            && !ctx.quiet
        {
            eprintln!("warning: {message}");
        }
    }
    let code = match manager.worker(&id) {
        Some(worker) => {
            let progress = (!ctx.quiet).then(|| Progress::watch(&worker));
            let outcome = if a.stream {
                print_stream(&worker, args, kwargs)
            } else {
                manager.call(&id, "execute", args, kwargs, opts).map(|v| {
                    drop(progress);
                    print_value(&v, a.output.as_deref())
                })
            };
            match outcome {
                Ok(code) => code,
                Err(e) => report_manager(&e),
            }
        }
        None => report_manager(&ManagerError::NotLoaded {
            instance_id: id.clone(),
            loaded: "none".into(),
            installed: true,
        }),
    };
    manager.unload_all();
    Ok(code)
}

/// Prints `execute_stream`'s chunks, one JSON line each.
fn print_stream(
    worker: &Worker,
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
) -> Result<ExitCode, ManagerError> {
    let mut out = std::io::stdout().lock();
    for chunk in worker.stream(args, kwargs)? {
        if writeln!(out, "{}", chunk?.to_json()).is_err() {
            // A closed pipe (`| head`): the reader has what it wanted.
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress the plugin reports, as a bar on stderr while a call runs (nothing
/// when stderr is not a terminal); the bar goes when this is dropped.
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn watch(worker: &Worker) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(1000),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {percent:>3}% {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut events = worker.events();
        let shown = bar.clone();
        std::thread::spawn(move || {
            while let Some(event) = events.blocking_recv() {
                if let Event::Progress {
                    progress, message, ..
                } = event
                {
                    if progress >= 0.0 {
                        shown.set_position((progress.clamp(0.0, 1.0) * 1000.0) as u64);
                    }
                    shown.set_message(message);
                }
            }
        });
        Self { bar }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Prints a manager error (and its hint) on stderr; the exit code says what kind.
pub(crate) fn report_manager(e: &ManagerError) -> ExitCode {
    match e {
        ManagerError::Worker(w) => report(w, exit_code(w)),
        other => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {other}");
            if let ManagerError::Plugin(cjm::core::PluginError::Raised(job)) = other
                && let Some(tb) = &job.traceback
            {
                let _ = write!(err, "{tb}");
            }
            if let Some(h) = other.hint() {
                let _ = writeln!(err, "hint: {h}");
            }
            let code = match other {
                ManagerError::Plugin(_) | ManagerError::CrashLooping { .. } => 1,
                _ => 2,
            };
            ExitCode::from(code)
        }
    }
}

/// Spawns, initializes, calls, prints, stops.
fn call_worker(
    spec: WorkerSpec,
    config: &Value,
    call: &Call,
    opts: CallOptions,
    output: Option<&std::path::Path>,
) -> ExitCode {
    let worker = match Worker::spawn(spec) {
        Ok(w) => w,
        Err(e) => return report(&e, 3),
    };
    if let Err(e) = worker.call_blocking(
        "initialize",
        vec![config.clone()],
        vec![],
        CallOptions::default(),
    ) {
        return report(&e, exit_code(&e));
    }
    let code = if call.method == "execute_stream" {
        print_stream(&worker, call.args.clone(), call.kwargs.clone())
            .unwrap_or_else(|e| report_manager(&e))
    } else {
        match worker.call_blocking(&call.method, call.args.clone(), call.kwargs.clone(), opts) {
            Ok(v) => print_value(&v, output),
            Err(e) => report(&e, exit_code(&e)),
        }
    };
    worker.stop_blocking();
    code
}

/// Prints a result as JSON on stdout. Binary parts (bytes, arrays), which JSON
/// cannot hold, go to `output` (`FILE`, then `FILE.1`, ...), each replaced in the
/// JSON by its size and file; without `output` the result is refused (exit 1)
/// rather than printed as a size alone.
fn print_value(v: &Value, output: Option<&std::path::Path>) -> ExitCode {
    let mut parts = Vec::new();
    let shown = binary_parts(v, &mut parts, "$");
    if !parts.is_empty() {
        let Some(output) = output else {
            let total: usize = parts.iter().map(|(_, b)| b.len()).sum();
            let at: Vec<&str> = parts.iter().map(|(p, _)| p.as_str()).collect();
            eprintln!(
                "error: the result holds {total} bytes of binary data (at {}) that JSON cannot show\nhint: pass --output FILE to write it to a file",
                at.join(", ")
            );
            return ExitCode::from(1);
        };
        let mut files = Vec::new();
        for (i, (_, bytes)) in parts.iter().enumerate() {
            let path = if i == 0 {
                output.to_owned()
            } else {
                let mut name = output.as_os_str().to_owned();
                name.push(format!(".{i}"));
                PathBuf::from(name)
            };
            if let Err(e) = fs_err::write(&path, bytes) {
                eprintln!("error: {e}\nhint: choose a writable --output path");
                return ExitCode::from(1);
            }
            files.push(path);
        }
        let text =
            serde_json::to_string_pretty(&fill_files(shown, &files, &mut 0)).unwrap_or_default();
        return print_line(&text);
    }
    let text = serde_json::to_string_pretty(&v.to_json()).unwrap_or_default();
    print_line(&text)
}

/// Writes one line to stdout; a closed pipe ends quietly (`| head`).
fn print_line(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    ExitCode::SUCCESS
}

/// The JSON of `v` with each binary part collected into `parts` (with its JSON
/// path) and shown as `{"__bytes__": len, "file": null}` until written.
fn binary_parts(v: &Value, parts: &mut Vec<(String, Vec<u8>)>, path: &str) -> serde_json::Value {
    match v {
        Value::Bytes(b) => {
            parts.push((path.to_owned(), b.as_slice().to_vec()));
            serde_json::json!({"__bytes__": b.len(), "file": null})
        }
        Value::Array(arr) => {
            parts.push((path.to_owned(), arr.data.as_slice().to_vec()));
            serde_json::json!({"dtype": arr.dtype, "shape": arr.shape, "__bytes__": arr.data.len(), "file": null})
        }
        Value::List(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| binary_parts(item, parts, &format!("{path}[{i}]")))
                .collect(),
        ),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, item)| (k.clone(), binary_parts(item, parts, &format!("{path}.{k}"))))
                .collect(),
        ),
        other => other.to_json(),
    }
}

/// Puts the written files' paths into the placeholders [`binary_parts`] left, in order.
fn fill_files(mut v: serde_json::Value, files: &[PathBuf], next: &mut usize) -> serde_json::Value {
    match &mut v {
        serde_json::Value::Object(map)
            if map.contains_key("__bytes__")
                && map.get("file") == Some(&serde_json::Value::Null) =>
        {
            if let Some(f) = files.get(*next) {
                map.insert("file".into(), serde_json::json!(f));
            }
            *next += 1;
            v
        }
        serde_json::Value::Object(map) => {
            let taken = std::mem::take(map);
            serde_json::Value::Object(
                taken
                    .into_iter()
                    .map(|(k, item)| (k, fill_files(item, files, next)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            let taken = std::mem::take(items);
            serde_json::Value::Array(
                taken
                    .into_iter()
                    .map(|item| fill_files(item, files, next))
                    .collect(),
            )
        }
        _ => v,
    }
}

fn exit_code(e: &WorkerError) -> u8 {
    if matches!(
        e,
        WorkerError::Died { .. }
            | WorkerError::Spawn { .. }
            | WorkerError::Handshake { .. }
            | WorkerError::Load { .. }
    ) {
        3
    } else {
        1
    }
}

/// Prints an error and its hint on stderr.
fn report(e: &WorkerError, code: u8) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {e}");
    if let WorkerError::Plugin(cjm::core::PluginError::Raised(job)) = e
        && let Some(tb) = &job.traceback
    {
        let _ = write!(err, "{tb}");
    }
    if let WorkerError::Plugin(cjm::core::PluginError::Timeout { timeout, .. }) = e {
        let _ = writeln!(
            err,
            "hint: raise --timeout (it was {} s), or check why the plugin is slow",
            timeout.as_secs_f64()
        );
    } else if let Some(h) = e.hint() {
        let _ = writeln!(err, "hint: {h}");
    }
    ExitCode::from(code)
}
