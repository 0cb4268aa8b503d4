//! `cjm-ctl`, the operator CLI.
//!
//! Exit codes: 0 success, 1 the plugin failed the call (or, for `validate`, the file
//! is invalid), 2 bad usage, 3 the worker could not be started or died.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cjm::proto::Value;
use cjm::proxy::{CallOptions, Worker, WorkerError, WorkerSpec};
use clap::{Parser, Subcommand};

/// Drive cjm plugins from the command line.
#[derive(Parser)]
#[command(name = "cjm-ctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a plugin's worker, call one method, print the result as JSON, stop it.
    Call(CallArgs),
    /// Check a manifest (JSON) or a plugins.yaml; exit 1 listing every problem.
    Validate(ValidateArgs),
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// The manifest JSON or plugins.yaml to check.
    path: PathBuf,
    /// Override format detection (by extension: .json is a manifest, .yaml/.yml a
    /// plugins.yaml).
    #[arg(long, short = 'f', value_parser = ["manifest", "plugins_yaml"])]
    format: Option<String>,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CallArgs {
    /// The interpreter of the plugin's environment (with cjm-worker installed).
    #[arg(long)]
    python: PathBuf,
    /// The module that defines the plugin class.
    #[arg(long)]
    module: String,
    /// The plugin class.
    #[arg(long = "class")]
    class: String,
    /// A directory to put on the worker's PYTHONPATH (repeatable).
    #[arg(long = "path")]
    python_path: Vec<PathBuf>,
    /// A variable for the worker, KEY=VALUE (repeatable); the host's own are not passed.
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Configuration to `initialize` the plugin with, as a JSON object (default `{}`).
    #[arg(long)]
    config: Option<String>,
    /// Keyword arguments as a JSON object.
    #[arg(long)]
    kwargs: Option<String>,
    /// Give up (and cancel the call) after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// The method: `execute`, `execute_stream`, `get_config_schema`, `get_current_config`, …
    method: String,
    /// Positional arguments, each a JSON value.
    args: Vec<String>,
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

fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    let mut spec = WorkerSpec::new(a.class.to_lowercase(), &a.python, &a.module, &a.class);
    spec.python_path = a.python_path;
    spec.env = a.env;
    let args = a
        .args
        .iter()
        .map(|s| json(s, "an argument"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kwargs = match a
        .kwargs
        .as_deref()
        .map(|s| json(s, "--kwargs"))
        .transpose()?
    {
        None => Vec::new(),
        Some(Value::Map(m)) => m,
        Some(other) => anyhow::bail!(
            "--kwargs must be a JSON object, got a {}",
            other.type_name()
        ),
    };
    let config = a
        .config
        .as_deref()
        .map(|s| json(s, "--config"))
        .transpose()?;
    let opts = CallOptions {
        timeout: a.timeout.map(Duration::from_secs_f64),
    };
    let worker = match Worker::spawn(spec) {
        Ok(w) => w,
        Err(e) => return Ok(report(&e, 3)),
    };
    // Like the reference's manager, every plugin is initialized once after loading.
    let cfg = config.unwrap_or(Value::Map(Vec::new()));
    if let Err(e) = worker.call_blocking("initialize", vec![cfg], vec![], CallOptions::default()) {
        return Ok(report(&e, 1));
    }
    let mut out = std::io::stdout().lock();
    let code = if a.method == "execute_stream" {
        let mut code = ExitCode::SUCCESS;
        for chunk in worker.stream(args, kwargs)? {
            match chunk {
                Ok(v) => writeln!(out, "{}", v.to_json())?,
                Err(e) => {
                    code = report(&e, 1);
                    break;
                }
            }
        }
        code
    } else {
        match worker.call_blocking(&a.method, args, kwargs, opts) {
            Ok(v) => {
                writeln!(out, "{}", serde_json::to_string_pretty(&v.to_json())?)?;
                ExitCode::SUCCESS
            }
            Err(e) => report(
                &e,
                if matches!(e, WorkerError::Died { .. }) {
                    3
                } else {
                    1
                },
            ),
        }
    };
    worker.stop_blocking();
    Ok(code)
}

/// `cjm-ctl validate`: the reference's checks and exit codes (0 valid, 1 not).
fn validate(a: &ValidateArgs) -> anyhow::Result<ExitCode> {
    use cjm_manifest::{Manifest, ManifestError, PluginsFile};
    let path = &a.path;
    let format = a
        .format
        .clone()
        .or_else(|| match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Some("manifest".to_owned()),
            Some("yaml" | "yml") => Some("plugins_yaml".to_owned()),
            _ => None,
        });
    let Some(format) = format else {
        anyhow::bail!(
            "cannot tell the format of {} from its extension: pass --format manifest or --format plugins_yaml",
            path.display()
        );
    };
    let (kind, outcome): (&str, Result<(), ManifestError>) = if format == "manifest" {
        ("manifest", Manifest::load_validated(path).map(drop))
    } else {
        ("plugins.yaml", PluginsFile::load(path).map(drop))
    };
    let problems: Vec<String> = match &outcome {
        Ok(()) => Vec::new(),
        Err(e) if !e.problems().is_empty() => {
            e.problems().iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![with_causes(e)],
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let doc = serde_json::json!({
            "path": path,
            "kind": kind,
            "valid": problems.is_empty(),
            "errors": problems,
        });
        writeln!(out, "{doc}")?;
    } else if problems.is_empty() {
        writeln!(out, "✓ {} ({kind}): valid", path.display())?;
    } else {
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "✗ {} ({kind}): {} error(s)",
            path.display(),
            problems.len()
        )?;
        for p in &problems {
            writeln!(err, "  - {p}")?;
        }
        if let Err(e) = &outcome
            && let Some(h) = e.hint()
        {
            writeln!(err, "hint: {h}")?;
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// An error and its chain of causes on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(a) => call(a),
        Command::Validate(a) => validate(&a),
    };
    result.unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        ExitCode::from(2)
    })
}
