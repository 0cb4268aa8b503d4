//! `estimate-size`: the disk space plugins' environments take, or would take.
//!
//! An installed plugin's environment is measured on disk. For one not installed, uv
//! resolves its requirement set (`uv pip compile`, offline first), and the sizes of
//! the resolved wheels found in the entry's `find_links` folders are added up.
//! Unlike the reference, nothing asks PyPI for sizes: a package that would come from
//! an index is listed with an unknown size.

mod resolve;

use self::resolve::{compile, sizes};

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cjm_env::Installer;
use cjm_manifest::{Backend, PluginSpec};
use serde_json::{Value, json};

use crate::ctx::{Ctx, Global};
use crate::plugins::{dir_size, human};

/// Estimate the disk space the plugins' environments take.
///
/// Installed plugins: the environment's size on disk. Others: uv resolves the
/// requirement set (from uv's cache and find_links first, then the entry's index),
/// and the wheels found in the entry's find_links folders are summed (compressed
/// sizes; an installed environment is larger). Nothing is downloaded.
#[derive(clap::Args)]
pub(crate) struct EstimateSizeArgs {
    /// The plugins.yaml (default: the configuration's).
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// Only this plugin.
    #[arg(long = "plugin", short = 'p', value_name = "NAME")]
    plugin: Option<String>,
    /// Never let uv reach a package index (resolve from its cache and find_links only).
    #[arg(long)]
    offline: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// One resolved package.
struct Package {
    name: String,
    version: Option<String>,
    /// The local file it would be installed from, when found.
    file: Option<PathBuf>,
    bytes: Option<u64>,
}

/// What is known about one plugins.yaml entry.
enum Outcome {
    /// Its environment exists.
    Installed {
        env_key: String,
        dir: PathBuf,
        bytes: u64,
    },
    /// Resolved; the local wheels' sizes summed.
    Estimated {
        packages: Vec<Package>,
        /// Whether uv needed an index (the offline resolution failed).
        online: bool,
    },
    /// Not estimated, and why (conda, an existing interpreter).
    NotEstimated(String),
    /// The resolution failed.
    Failed(String),
}

pub(crate) fn run(a: &EstimateSizeArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(g)?;
    if a.plugins.is_none() && !ctx.plugins_path(None).is_file() {
        return installed_sizes(a, g, &ctx);
    }
    let (path, file) = ctx.plugins_file(a.plugins.as_deref())?;
    let specs: Vec<&PluginSpec> = match &a.plugin {
        Some(name) => match file.get(name) {
            Some(s) => vec![s],
            None => usage!("plugin {name} is not in {}", path.display()),
        },
        None => file.plugins.iter().collect(),
    };
    let installer = ctx.installer(&path)?;
    let uv = ctx.uv()?;
    let outcomes: Vec<Outcome> = specs
        .iter()
        .map(|spec| estimate(&ctx, &installer, &uv, spec, a.offline))
        .collect();
    let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed(_)));
    if a.json {
        print_json(&path, &specs, &outcomes)?;
    } else {
        print_table(&path, &specs, &outcomes, g.verbose > 0)?; // -v: every resolved package
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Without a plugins.yaml: the disk space of the installed plugins' environments.
fn installed_sizes(a: &EstimateSizeArgs, g: &Global, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let discovery = ctx.discover();
    let found: Vec<_> = discovery
        .found
        .iter()
        .filter(|d| a.plugin.as_ref().is_none_or(|p| *p == d.manifest.code.name))
        .collect();
    if let Some(name) = &a.plugin
        && found.is_empty()
    {
        return Err(crate::ctx::not_installed(name, &discovery));
    }
    let specs: Vec<PluginSpec> = found
        .iter()
        .map(|d| crate::install::spec_from_manifest(&d.manifest.code.name, &d.manifest))
        .collect();
    let store = ctx.store_for_reading();
    let outcomes: Vec<Outcome> = found
        .iter()
        .map(|d| {
            let m = &d.manifest;
            let (env_key, dir) = if let Some(k) = crate::plugins::env_key(m) {
                (k.0.clone(), store.dir(&k))
            } else {
                // conda, or an existing interpreter: the prefix above bin/python.
                let python = Path::new(&m.install.python_path);
                let prefix = python.parent().and_then(Path::parent).unwrap_or(python);
                (m.install.conda_env.clone(), prefix.to_owned())
            };
            Outcome::Installed {
                env_key,
                bytes: dir_size(&dir),
                dir,
            }
        })
        .collect();
    let refs: Vec<&PluginSpec> = specs.iter().collect();
    let label = ctx.cfg.manifests_dir();
    if a.json {
        print_json(&label, &refs, &outcomes)?;
    } else {
        print_table(&label, &refs, &outcomes, g.verbose > 0)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn estimate(
    ctx: &Ctx,
    installer: &Installer,
    uv: &Path,
    spec: &PluginSpec,
    offline: bool,
) -> Outcome {
    match spec.backend() {
        Backend::Conda => return conda(ctx, spec),
        Backend::Python => {
            return Outcome::NotEstimated(format!(
                "backend python: uses the existing interpreter {}, nothing is installed",
                spec.python_path.as_deref().unwrap_or("?")
            ));
        }
        Backend::Uv => {}
    }
    match installer.installed(spec) {
        Ok(Some(done)) => {
            let dir = installer.store().dir(&done.env_key);
            return Outcome::Installed {
                env_key: done.env_key.0,
                bytes: dir_size(&dir),
                dir,
            };
        }
        Ok(None) => {}
        Err(e) => return Outcome::Failed(crate::with_causes(&e)),
    }
    let req = match installer.request(spec) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(crate::with_causes(&e)),
    };
    let mut result = compile(uv, &req, true);
    let mut online = false;
    if result.is_err() && !req.no_index && !offline {
        online = true;
        result = compile(uv, &req, false);
    }
    match result {
        Ok(resolved) => Outcome::Estimated {
            packages: sizes(resolved, &req.find_links),
            online,
        },
        Err(e) => Outcome::Failed(e),
    }
}

/// A conda entry: the environment's size when the reference (or cjm) installed it,
/// else nothing — sizing needs the conda solver and its channels online.
fn conda(ctx: &Ctx, spec: &PluginSpec) -> Outcome {
    let discovery = ctx.discover();
    let prefix = discovery
        .get(&spec.name)
        .map(|d| PathBuf::from(&d.manifest.install.python_path))
        .filter(|p| p.exists())
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf));
    if let Some(dir) = prefix {
        return Outcome::Installed {
            env_key: spec.env_name.clone(),
            bytes: dir_size(&dir),
            dir,
        };
    }
    Outcome::NotEstimated(
        "conda environment (env_file): cannot be estimated offline — the reference asks the conda solver for a dry run, which needs its channels".to_owned(),
    )
}

/// Totals, counting an environment several plugins share once.
struct Totals {
    installed: u64,
    envs: usize,
    wheels: u64,
    estimated: usize,
    unknown: usize,
    not_estimated: usize,
    failed: usize,
}

fn totals(outcomes: &[Outcome]) -> Totals {
    let mut t = Totals {
        installed: 0,
        envs: 0,
        wheels: 0,
        estimated: 0,
        unknown: 0,
        not_estimated: 0,
        failed: 0,
    };
    let mut seen = BTreeSet::new();
    for o in outcomes {
        match o {
            Outcome::Installed { dir, bytes, .. } => {
                if seen.insert(dir.clone()) {
                    t.installed += bytes;
                    t.envs += 1;
                }
            }
            Outcome::Estimated { packages, .. } => {
                t.estimated += 1;
                t.wheels += packages.iter().filter_map(|p| p.bytes).sum::<u64>();
                t.unknown += packages.iter().filter(|p| p.bytes.is_none()).count();
            }
            Outcome::NotEstimated(_) => t.not_estimated += 1,
            Outcome::Failed(_) => t.failed += 1,
        }
    }
    t
}

const NOTE: &str = "Note: installed sizes add up the environment's files (uv hard-links them from its\n      \
                    cache, so the new disk space used can be less); wheel sizes are compressed files,\n      \
                    and an installed environment is typically 2-5x larger. Packages that would come\n      \
                    from an index have no size here: nothing is downloaded.";

fn print_table(
    path: &Path,
    specs: &[&PluginSpec],
    outcomes: &[Outcome],
    verbose: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "=== Disk Space Estimates ({}) ===\n", path.display())?;
    for (spec, outcome) in specs.iter().zip(outcomes) {
        writeln!(
            out,
            "{} (env: {}, {})",
            spec.name,
            spec.env_name,
            spec.backend()
        )?;
        match outcome {
            Outcome::Installed {
                env_key,
                dir,
                bytes,
            } => {
                writeln!(
                    out,
                    "  installed: {} on disk (environment {env_key}, {})",
                    human(*bytes),
                    dir.display()
                )?;
            }
            Outcome::Estimated { packages, online } => {
                let local: Vec<&Package> = packages.iter().filter(|p| p.bytes.is_some()).collect();
                let sum: u64 = local.iter().filter_map(|p| p.bytes).sum();
                let unknown = packages.len() - local.len();
                writeln!(
                    out,
                    "  not installed: {} packages resolved{}; wheels found locally: {} compressed ({} of {})",
                    packages.len(),
                    if *online { " (with the index)" } else { "" },
                    human(sum),
                    local.len(),
                    packages.len()
                )?;
                for p in packages {
                    let label = match &p.version {
                        Some(v) => format!("{} {v}", p.name),
                        None => p.name.clone(),
                    };
                    match p.bytes {
                        Some(b) if verbose => writeln!(out, "    {label:<40} {:>10}", human(b))?,
                        Some(_) => {}
                        None => writeln!(out, "    {label:<40} size unknown (from an index)")?,
                    }
                }
                if unknown > 0 {
                    writeln!(out, "  {unknown} package(s) of unknown size")?;
                }
            }
            Outcome::NotEstimated(why) => writeln!(out, "  not estimated: {why}")?,
            Outcome::Failed(why) => writeln!(out, "  ✗ {why}")?,
        }
        writeln!(out)?;
    }
    let t = totals(outcomes);
    writeln!(out, "{}", "─".repeat(40))?;
    writeln!(out, "TOTALS")?;
    writeln!(
        out,
        "  Installed (on disk):  {} in {} environment(s)",
        human(t.installed),
        t.envs
    )?;
    writeln!(
        out,
        "  To install (wheels):  {} compressed for {} plugin(s){}",
        human(t.wheels),
        t.estimated,
        if t.unknown > 0 {
            format!(", plus {} package(s) of unknown size", t.unknown)
        } else {
            String::new()
        }
    )?;
    if t.not_estimated > 0 {
        writeln!(out, "  Not estimated:        {} plugin(s)", t.not_estimated)?;
    }
    if t.failed > 0 {
        writeln!(out, "  Failed to resolve:    {} plugin(s)", t.failed)?;
    }
    writeln!(out)?;
    writeln!(out, "{NOTE}")?;
    Ok(())
}

fn print_json(path: &Path, specs: &[&PluginSpec], outcomes: &[Outcome]) -> anyhow::Result<()> {
    let plugins: Vec<Value> = specs
        .iter()
        .zip(outcomes)
        .map(|(spec, o)| {
            let mut doc = json!({"name": spec.name, "env_name": spec.env_name, "backend": spec.backend().as_str()});
            let fields = match o {
                Outcome::Installed { env_key, dir, bytes } => {
                    json!({"status": "installed", "env_key": env_key, "dir": dir, "installed_bytes": bytes})
                }
                Outcome::Estimated { packages, online } => {
                    let pk: Vec<Value> = packages
                        .iter()
                        .map(|p| json!({"name": p.name, "version": p.version, "bytes": p.bytes, "file": p.file,
                                        "source": if p.bytes.is_some() { "local" } else { "index" }}))
                        .collect();
                    json!({"status": "estimated", "resolved_online": online,
                           "wheel_bytes": packages.iter().filter_map(|p| p.bytes).sum::<u64>(),
                           "unknown": packages.iter().filter(|p| p.bytes.is_none()).map(|p| &p.name).collect::<Vec<_>>(),
                           "packages": pk})
                }
                Outcome::NotEstimated(why) => json!({"status": "not_estimated", "reason": why}),
                Outcome::Failed(why) => json!({"status": "failed", "error": why}),
            };
            if let (Some(d), Value::Object(f)) = (doc.as_object_mut(), fields) {
                d.extend(f);
            }
            doc
        })
        .collect();
    let t = totals(outcomes);
    let doc = json!({
        "plugins_file": path,
        "plugins": plugins,
        "totals": {
            "installed_bytes": t.installed,
            "environments": t.envs,
            "wheel_bytes": t.wheels,
            "unknown_packages": t.unknown,
            "not_estimated": t.not_estimated,
            "failed": t.failed,
        },
        "note": "installed_bytes add up the environment's files (uv hard-links them from its cache, so new disk use can be less); wheel_bytes are compressed wheel files found locally (an installed environment is typically 2-5x larger); packages from an index have no size",
    });
    writeln!(std::io::stdout().lock(), "{doc}")?;
    Ok(())
}
