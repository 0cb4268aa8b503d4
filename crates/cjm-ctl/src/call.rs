//! `cjm-ctl call`: one call to a plugin, its result as JSON on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cjm::proto::Value;
use cjm::proxy::{CallOptions, Worker, WorkerError, WorkerSpec};

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
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Skip comparing the plugin's live config schema with its manifest's.
    #[arg(long)]
    no_drift_check: bool,
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

fn json(s: &str, what: &str) -> anyhow::Result<Value> {
    let v: serde_json::Value =
        serde_json::from_str(s).with_context(|| format!("{what} is not valid JSON: {s:?}"))?;
    Ok(Value::from(v))
}

fn json_object(s: Option<&str>, what: &str) -> anyhow::Result<Vec<(String, Value)>> {
    match s.map(|s| json(s, what)).transpose()? {
        None => Ok(Vec::new()),
        Some(Value::Map(m)) => Ok(m),
        Some(other) => bail!("{what} must be a JSON object, got a {}", other.type_name()),
    }
}

/// What to call, once the worker is up.
struct Call {
    method: String,
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
}

pub(crate) fn run(a: &CallArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let config = a
        .config
        .as_deref()
        .map(|s| json(s, "--config"))
        .transpose()?
        .unwrap_or(Value::Map(Vec::new()));
    let opts = CallOptions {
        timeout: a.timeout.map(Duration::from_secs_f64),
    };
    if let Some(python) = &a.python {
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
        return Ok(call_worker(spec, &config, &call, opts, None));
    }

    let ctx = Ctx::load(global)?;
    let discovery = ctx.discover();
    let Some(found) = discovery.get(&a.target) else {
        let installed: Vec<&str> = discovery
            .found
            .iter()
            .map(|d| d.manifest.code.name.as_str())
            .collect();
        bail!(
            "plugin {} is not installed (installed: {}); add it to plugins.yaml and run `cjm-ctl install-all`",
            a.target,
            if installed.is_empty() {
                "none".to_owned()
            } else {
                installed.join(", ")
            }
        );
    };
    if a.rest.len() > 1 {
        bail!(
            "call takes one ACTION after the plugin name, got {:?}; pass arguments with --args",
            a.rest
        );
    }
    let (args, mut kwargs) = match a.args.as_deref().map(|s| json(s, "--args")).transpose()? {
        None => (Vec::new(), Vec::new()),
        Some(Value::Map(m)) => (Vec::new(), m),
        Some(Value::List(l)) => (l, Vec::new()),
        Some(other) => bail!(
            "--args must be a JSON object (keyword arguments) or array (positional), got a {}",
            other.type_name()
        ),
    };
    if let Some(action) = a.rest.first() {
        kwargs.push(("action".to_owned(), Value::from(action.as_str())));
    }
    let mut spec = cjm::launch::worker_spec(&found.manifest, &ctx.cfg);
    spec.env.extend(a.env.iter().cloned());
    let drift = (ctx.cfg.substrate.drift_detection && !a.no_drift_check)
        .then(|| (found.manifest.clone(), found.path.clone()));
    let call = Call {
        method: "execute".into(),
        args,
        kwargs,
    };
    Ok(call_worker(spec, &config, &call, opts, drift))
}

/// Spawns, initializes, optionally checks drift, calls, prints, stops.
fn call_worker(
    spec: WorkerSpec,
    config: &Value,
    call: &Call,
    opts: CallOptions,
    drift: Option<(cjm::manifest::Manifest, PathBuf)>,
) -> ExitCode {
    let worker = match Worker::spawn(spec) {
        Ok(w) => w,
        Err(e) => return report(&e, 3),
    };
    // Like the reference's manager, every plugin is initialized once after loading.
    if let Err(e) = worker.call_blocking(
        "initialize",
        vec![config.clone()],
        vec![],
        CallOptions::default(),
    ) {
        return report(&e, exit_code(&e));
    }
    if let Some((manifest, path)) = drift {
        match cjm::launch::check_drift(&worker, &manifest) {
            Ok(Some(mut d)) => {
                d.manifest_path = Some(path);
                eprintln!("warning: {d}");
            }
            Ok(None) => {}
            Err(e) => eprintln!("warning: drift check skipped: {e}"),
        }
    }
    let code = match print_call(&worker, call, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e, exit_code(&e)),
    };
    worker.stop_blocking();
    code
}

fn print_call(worker: &Worker, call: &Call, opts: CallOptions) -> Result<(), WorkerError> {
    let mut out = std::io::stdout().lock();
    if call.method == "execute_stream" {
        for chunk in worker.stream(call.args.clone(), call.kwargs.clone())? {
            let _ = writeln!(out, "{}", chunk?.to_json());
        }
        return Ok(());
    }
    let v = worker.call_blocking(&call.method, call.args.clone(), call.kwargs.clone(), opts)?;
    let text = serde_json::to_string_pretty(&v.to_json()).unwrap_or_default();
    let _ = writeln!(out, "{text}");
    Ok(())
}

fn exit_code(e: &WorkerError) -> u8 {
    if matches!(e, WorkerError::Died { .. }) {
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
    if let Some(h) = e.hint() {
        let _ = writeln!(err, "hint: {h}");
    }
    ExitCode::from(code)
}
