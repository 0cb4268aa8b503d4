//! `install-all`, `regenerate-manifest` and `repair`: plugins.yaml entries made into
//! environments and manifests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cjm_env::{InstallError, Installed, Installer, Stage};
use cjm_manifest::{Backend, Manifest, PluginSpec};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::ctx::{Ctx, Global};

/// Install and register the plugins of a plugins.yaml, in parallel.
#[derive(clap::Args)]
pub(crate) struct InstallAllArgs {
    /// The plugins.yaml (default: the configuration's, `plugins.yaml`).
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// Rebuild environments and rewrite manifests even if they are up to date.
    #[arg(long)]
    force: bool,
    /// Install only this plugin (repeatable).
    #[arg(long = "plugin", short = 'p', value_name = "NAME", value_parser = crate::ctx::plugin_name)]
    only: Vec<String>,
    /// How many plugins to install at once (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Print the outcome as one JSON object on stdout (no progress display).
    #[arg(long)]
    json: bool,
    /// The uv to build environments with (default: $CJM_UV, the runtime folder's,
    /// PATH's; with none, the pinned uv is installed into the runtime folder first).
    #[arg(long, value_name = "PATH")]
    uv: Option<PathBuf>,
}

/// Re-run introspection for an installed plugin and rewrite its manifest.
#[derive(clap::Args)]
pub(crate) struct RegenerateArgs {
    /// The plugin's name, as in its manifest.
    #[arg(value_parser = crate::ctx::plugin_name)]
    name: String,
    /// A plugins.yaml to recover the package spec from (for manifests without one).
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// The package spec; wins over the manifest's and plugins.yaml's.
    #[arg(long, value_name = "SPEC")]
    package: Option<String>,
}

/// Rebuild a plugin's environment from scratch and rewrite its manifest.
#[derive(clap::Args)]
pub(crate) struct RepairArgs {
    /// The plugin's name, as in plugins.yaml.
    #[arg(value_parser = crate::ctx::plugin_name)]
    name: String,
    /// The plugins.yaml (default: the configuration's).
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// The uv to build the environment with (as for install-all).
    #[arg(long, value_name = "PATH")]
    uv: Option<PathBuf>,
}

pub(crate) fn install_all(a: &InstallAllArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let (path, file) = ctx.plugins_file(a.plugins.as_deref())?;
    let specs: Vec<PluginSpec> = if a.only.is_empty() {
        file.plugins
    } else {
        for name in &a.only {
            if file.get(name).is_none() {
                usage!("plugin {name} is not in {}", path.display());
            }
        }
        file.plugins
            .into_iter()
            .filter(|p| a.only.contains(&p.name))
            .collect()
    };
    let installer = ctx.installer_with_uv(&path, ctx.uv_or_install(a.uv.as_deref())?)?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    let started = Instant::now();
    let outcomes = with_progress(&installer, &specs, a.force, jobs, a.json || ctx.quiet);
    let elapsed = started.elapsed();
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    if a.json {
        print_json(&specs, &outcomes)?;
    } else {
        print_summary(&path, &outcomes, elapsed)?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Installs with one spinner line per plugin on a terminal (nothing otherwise).
fn with_progress(
    installer: &Installer,
    specs: &[PluginSpec],
    force: bool,
    jobs: usize,
    quiet: bool,
) -> Vec<Result<Installed, InstallError>> {
    let multi = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let bars: Vec<ProgressBar> = specs
        .iter()
        .map(|s| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{:width$}", s.name));
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        })
        .collect();
    let outcomes = installer.install_all(specs, force, jobs, &|i, stage: Stage| {
        bars[i].set_message(stage.label());
    });
    for bar in &bars {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
    outcomes
}

fn print_summary(
    path: &Path,
    outcomes: &[Result<Installed, InstallError>],
    elapsed: Duration,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let (mut installed, mut unchanged, mut failed) = (0, 0, 0);
    for outcome in outcomes {
        match outcome {
            Ok(done) if done.unchanged => {
                unchanged += 1;
                writeln!(
                    out,
                    "= {} {} is up to date",
                    done.manifest.code.name, done.manifest.code.version
                )?;
            }
            Ok(done) => {
                installed += 1;
                writeln!(
                    out,
                    "✓ {} {} installed ({}, environment {}{}) → {}",
                    done.manifest.code.name,
                    done.manifest.code.version,
                    done.source.as_deref().unwrap_or("meta"),
                    done.env_key,
                    if done.env_built {
                        ", built"
                    } else {
                        ", reused"
                    },
                    done.manifest_path.display()
                )?;
                for w in &done.warnings {
                    writeln!(err, "  warning: {w}")?;
                }
            }
            Err(e) => {
                failed += 1;
                writeln!(err, "✗ {e}")?;
                if let Some(h) = e.hint() {
                    writeln!(err, "  hint: {h}")?;
                }
            }
        }
    }
    writeln!(
        out,
        "{}: {installed} installed, {unchanged} up to date, {failed} failed in {:.1} s",
        path.display(),
        elapsed.as_secs_f64()
    )?;
    Ok(())
}

fn print_json(
    specs: &[PluginSpec],
    outcomes: &[Result<Installed, InstallError>],
) -> anyhow::Result<()> {
    let plugins: Vec<serde_json::Value> = specs
        .iter()
        .zip(outcomes)
        .map(|(spec, outcome)| match outcome {
            Ok(done) => json!({
                "name": spec.name,
                "status": if done.unchanged { "unchanged" } else { "installed" },
                "plugin": done.manifest.code.name,
                "version": done.manifest.code.version,
                "manifest": done.manifest_path,
                "env_key": done.env_key.0,
                "env_built": done.env_built,
                "source": done.source,
                "warnings": done.warnings,
            }),
            Err(e) => json!({
                "name": spec.name,
                "status": "failed",
                "error": e.to_string(),
                "hint": e.hint(),
            }),
        })
        .collect();
    let ok = outcomes.iter().all(Result::is_ok);
    writeln!(
        std::io::stdout().lock(),
        "{}",
        json!({"ok": ok, "plugins": plugins})
    )?;
    Ok(())
}

pub(crate) fn regenerate(a: &RegenerateArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let path = ctx.cfg.manifests_dir().join(format!("{}.json", a.name));
    if !path.is_file() {
        usage!(
            "no manifest for plugin {} at {}; `cjm-ctl list` shows what is installed",
            a.name,
            path.display()
        );
    }
    let previous = Manifest::load(&path).map_err(|e| anyhow::anyhow!(crate::with_causes(&e)))?;
    let from_yaml = match &a.plugins {
        Some(p) => ctx.plugins_file(Some(p))?.1.get(&a.name).cloned(),
        None => None,
    };
    let mut spec = from_yaml.unwrap_or_else(|| spec_from_manifest(&a.name, &previous));
    if let Some(package) = &a.package {
        spec.package.clone_from(package);
    }
    if spec.package.is_empty() {
        usage!(
            "cannot tell what package plugin {} came from: its manifest predates `package_source`; pass --package SPEC or --plugins plugins.yaml",
            a.name
        );
    }
    // Regenerating builds nothing: the installer only introspects and writes.
    let installer = Installer::new(
        ctx.store_for_reading(),
        ctx.cfg.manifests_dir(),
        PathBuf::new(),
    )
    .plugin_data_dir(ctx.cfg.plugin_data_dir())
    .models_dir(ctx.cfg.models_dir.clone());
    let done = installer
        .regenerate(&spec, &previous)
        .map_err(|e| crate::Failure(with_hint(&e)))?;
    let before = previous
        .drift_tracking
        .config_schema_hash
        .unwrap_or_default();
    let after = done
        .manifest
        .drift_tracking
        .config_schema_hash
        .clone()
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "✓ regenerated {}", done.manifest_path.display())?;
    if before != after {
        writeln!(out, "  config schema hash: {before} → {after}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A plugins.yaml entry rebuilt from what a manifest recorded.
pub(crate) fn spec_from_manifest(name: &str, m: &Manifest) -> PluginSpec {
    let extra = |k: &str| {
        m.install
            .extra
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    PluginSpec {
        name: name.to_owned(),
        env_name: extra("env_name").unwrap_or_else(|| m.install.conda_env.clone()),
        package: m.install.package_source.clone(),
        explicit_backend: extra("backend").and_then(|b| b.parse().ok()).or((!m
            .install
            .conda_env
            .is_empty())
        .then_some(Backend::Conda)),
        ..PluginSpec::default()
    }
}

pub(crate) fn repair(a: &RepairArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let (path, file) = repair_source(&ctx, a)?;
    let Some(spec) = file.get(&a.name) else {
        usage!(
            "plugin {} is not in {}; repair rebuilds a plugin from its plugins.yaml entry",
            a.name,
            path.display()
        );
    };
    let installer = ctx.installer_with_uv(&path, ctx.uv_or_install(a.uv.as_deref())?)?;
    let started = Instant::now();
    let done = installer
        .install(spec, true, &mut |stage| {
            eprintln!("{}: {}", spec.name, stage.label());
        })
        .map_err(|e| crate::Failure(with_hint(&e)))?;
    writeln!(
        std::io::stdout().lock(),
        "✓ {} rebuilt in {:.1} s (environment {}) → {}",
        done.manifest.code.name,
        started.elapsed().as_secs_f64(),
        done.env_key,
        done.manifest_path.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The plugins.yaml to rebuild `a.name` from: `--plugins`; else the configured
/// one when it has the entry; else the one the plugin was installed from (its
/// manifest's `install.plugins_yaml`).
fn repair_source(
    ctx: &Ctx,
    a: &RepairArgs,
) -> anyhow::Result<(PathBuf, cjm_manifest::PluginsFile)> {
    if a.plugins.is_some() {
        return ctx.plugins_file(a.plugins.as_deref());
    }
    if ctx.plugins_path(None).is_file() {
        let (path, file) = ctx.plugins_file(None)?;
        if file.get(&a.name).is_some() {
            return Ok((path, file));
        }
    }
    let discovery = ctx.discover();
    let Some(found) = discovery.get(&a.name) else {
        return Err(crate::ctx::not_installed(&a.name, &discovery));
    };
    let recorded = found
        .manifest
        .install
        .extra
        .get("plugins_yaml")
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from);
    match recorded {
        Some(p) if p.is_file() => ctx.plugins_file(Some(&p)),
        Some(p) => usage!(
            "plugin {} was installed from {}, which is gone; pass --plugins PATH with its entry",
            a.name,
            p.display()
        ),
        None => usage!(
            "plugin {}'s manifest does not say which plugins.yaml it came from (installed by an older cjm, or by the reference); pass --plugins PATH with its entry",
            a.name
        ),
    }
}

/// An install error with its hint on the next line.
fn with_hint(e: &InstallError) -> String {
    match e.hint() {
        Some(h) => format!("{e}\nhint: {h}"),
        None => e.to_string(),
    }
}
