//! `doctor`: everything cjm relies on, checked, each with what to do when it is not
//! right.
//!
//! Each check is `ok`, `warn` or `fail`. Exit 1 when one fails (with `--strict`, when
//! one warns), 0 otherwise. A drifted plugin is a warning: it still runs (the
//! reference only logs drift when it loads a plugin), but its manifest describes an
//! older config schema until `cjm-ctl regenerate-manifest` rewrites it.

mod machine;
mod plugins;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::ctx::{Ctx, Global};

/// Check the runtime, the data folder, shared memory, manifests and drift.
///
/// Checks: the configuration read; the data folder (writable, free space); uv; the
/// cjm-worker wheel; the conda runtime (when a plugin or the configuration uses
/// one); /dev/shm and memfd; every manifest (valid, its interpreter present); the
/// plugins.yaml (installed or not); and, for each installed plugin, its worker is
/// started to compare its live config schema with its manifest's (drift).
/// Exit 1 if a check fails; warnings do not fail unless --strict.
#[derive(clap::Args)]
pub(crate) struct DoctorArgs {
    /// Print one JSON object on stdout: {"ok", "checks": [{"name", "status", "detail", "hint"}]}.
    #[arg(long)]
    json: bool,
    /// Do not start the plugins' workers to check for drift.
    #[arg(long)]
    no_drift: bool,
    /// A plugins.yaml to compare with (default: the configuration's, if it exists).
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// How long each plugin's drift check may take, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = crate::ctx::seconds)]
    timeout: Duration,
    /// Exit 1 on warnings too.
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

struct Check {
    name: String,
    status: Status,
    detail: String,
    hint: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

pub(crate) fn run(a: &DoctorArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(g)?;
    let cfg = &ctx.cfg;
    let discovery = ctx.discover();
    let plugins_yaml = a
        .plugins
        .clone()
        .or_else(|| Some(ctx.plugins_path(None)).filter(|p| p.is_file()));
    let plugins = plugins_yaml.as_ref().map(|p| ctx.plugins_file(Some(p)));

    let mut checks = vec![
        machine::configuration(cfg),
        machine::data_dir(cfg),
        machine::uv(&ctx),
        machine::worker_wheel(&ctx),
    ];
    let conda_users = machine::conda_users(
        &discovery.found,
        plugins.as_ref().and_then(|p| p.as_ref().ok()),
    );
    checks.extend(machine::conda(cfg, &conda_users));
    checks.push(machine::shm());
    checks.push(machine::worker_cgroups());
    checks.push(machine::memory());
    checks.push(machine::gpus());
    checks.extend(machine::memfd());
    checks.push(plugins::manifests(cfg, &discovery));
    checks.push(plugins::secrets(&ctx, &discovery));
    if let Some(p) = &plugins {
        checks.push(plugins::plugins_file(p, &discovery));
    }
    let drift = if a.no_drift {
        Some("--no-drift")
    } else if !cfg.substrate.drift_detection {
        Some("substrate.drift_detection is off")
    } else {
        None
    };
    let timeout = a.timeout.max(Duration::from_secs(1));
    for d in &discovery.found {
        checks.push(plugins::plugin(cfg, d, drift, timeout));
    }

    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    let ok = fails == 0 && !(a.strict && warns > 0);
    if a.json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| json!({"name": c.name, "status": c.status.as_str(), "detail": c.detail, "hint": c.hint}))
            .collect();
        let doc = json!({"ok": ok, "failures": fails, "warnings": warns, "checks": list});
        writeln!(std::io::stdout().lock(), "{doc}")?;
    } else {
        print(&checks, fails, warns)?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(checks: &[Check], fails: usize, warns: usize) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "=== cjm doctor (cjm-ctl {}) ===\n",
        env!("CARGO_PKG_VERSION")
    )?;
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        writeln!(out, "{mark}  {:<width$}  {}", c.name, c.detail)?;
        if let Some(h) = &c.hint {
            writeln!(out, "      {:<width$}  → {h}", "")?;
        }
    }
    writeln!(
        out,
        "\n{fails} failed, {warns} warning(s), {} ok",
        checks.len() - fails - warns
    )
}
