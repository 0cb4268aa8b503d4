//! `list`, `remove` and `gc`: what is installed, and taking it away.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cjm_env::{CondaRuntime, EnvKey};
use cjm_manifest::{Discovered, Manifest};
use serde_json::json;

use crate::ctx::{Ctx, Global};

/// List installed plugins (the project's `.cjm/manifests`, then the data dir's).
#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// A plugins.yaml to compare with: entries not installed, plugins not in it.
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// Show each plugin's environment, and every environment with its size.
    #[arg(long, short = 'e')]
    envs: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Remove a plugin's manifest and (unless shared or kept) its environment.
#[derive(clap::Args)]
pub(crate) struct RemoveArgs {
    /// The plugin's name.
    #[arg(value_parser = crate::ctx::plugin_name)]
    name: String,
    /// A plugins.yaml to find the conda env name in (for manifests without one).
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// Keep the environment; only remove the manifest.
    #[arg(long)]
    keep_env: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Delete environments no installed plugin uses.
#[derive(clap::Args)]
pub(crate) struct GcArgs {
    /// Only say what would be deleted.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// The environment key a manifest records (uv environments only).
pub(crate) fn env_key(m: &Manifest) -> Option<EnvKey> {
    m.install
        .extra
        .get("env_key")
        .and_then(serde_json::Value::as_str)
        .filter(|k| !k.is_empty())
        .map(|k| EnvKey(k.to_owned()))
}

/// The bytes under `dir`, not following symbolic links.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// `1.5 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    let mut size = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if size < 1024.0 {
            return format!("{size:.1} {unit}");
        }
        size /= 1024.0;
    }
    format!("{size:.1} TiB")
}

/// What `list` shows: the installed plugins, the plugins.yaml to compare with, and
/// the environments with the plugins that use each.
struct Listing {
    discovery: cjm_manifest::Discovery,
    yaml: Option<cjm_manifest::PluginsFile>,
    store: cjm_env::EnvStore,
    envs: Vec<EnvKey>,
    users: BTreeMap<String, Vec<String>>,
}

impl Listing {
    fn not_installed(&self) -> impl Iterator<Item = &str> {
        self.yaml
            .iter()
            .flat_map(|y| &y.plugins)
            .filter(|p| self.discovery.get(&p.name).is_none())
            .map(|p| p.name.as_str())
    }

    fn used_by(&self, key: &EnvKey) -> Vec<String> {
        self.users.get(&key.0).cloned().unwrap_or_default()
    }
}

pub(crate) fn list(a: &ListArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let discovery = ctx.discover();
    let yaml = match &a.plugins {
        Some(p) => Some(ctx.plugins_file(Some(p))?.1),
        None => None,
    };
    let store = ctx.store_for_reading();
    let envs = if a.envs {
        store.list().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &discovery.found {
        if let Some(k) = env_key(&d.manifest) {
            users
                .entry(k.0)
                .or_default()
                .push(d.manifest.code.name.clone());
        }
    }
    let listing = Listing {
        discovery,
        yaml,
        store,
        envs,
        users,
    };
    if a.json {
        list_json(&listing)?;
    } else {
        list_text(&listing, a, &ctx)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn list_json(l: &Listing) -> anyhow::Result<()> {
    let plugins: Vec<_> = l
        .discovery
        .found
        .iter()
        .map(|d| plugin_json(d, l.yaml.as_ref()))
        .collect();
    let env_docs: Vec<_> = l
        .envs
        .iter()
        .map(|k| {
            json!({"key": k.0, "dir": l.store.dir(k), "bytes": dir_size(&l.store.dir(k)),
                   "used_by": l.used_by(k)})
        })
        .collect();
    let errors: Vec<String> = l
        .discovery
        .errors
        .iter()
        .map(crate::with_causes_ref)
        .collect();
    let not_installed: Vec<&str> = l.not_installed().collect();
    let doc = json!({"plugins": plugins, "envs": env_docs, "errors": errors, "not_installed": not_installed});
    writeln!(std::io::stdout().lock(), "{doc}")?;
    Ok(())
}

fn list_text(l: &Listing, a: &ListArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if l.discovery.found.is_empty() {
        writeln!(
            out,
            "No plugins installed in {}",
            ctx.cfg.manifests_dir().display()
        )?;
    } else {
        writeln!(
            out,
            "=== Installed plugins ({}) ===",
            l.discovery.found.len()
        )?;
    }
    let yaml_name = a.plugins.as_deref().unwrap_or(Path::new("plugins.yaml"));
    for d in &l.discovery.found {
        let m = &d.manifest;
        let kind = m
            .code
            .taxonomy
            .as_ref()
            .map_or_else(String::new, |t| format!(" [{}/{}]", t.domain, t.role));
        writeln!(out, "{} v{}{kind}", m.code.name, m.code.version)?;
        if a.envs {
            let python = Path::new(&m.install.python_path);
            let state = if python.exists() { "exists" } else { "missing" };
            let label = env_key(m).map_or_else(|| m.install.conda_env.clone(), |k| k.0);
            writeln!(out, "  env: {label} ({state}) {}", python.display())?;
        }
        if l.yaml
            .as_ref()
            .is_some_and(|y| y.get(&m.code.name).is_none())
        {
            writeln!(out, "  (not in {})", yaml_name.display())?;
        }
    }
    for name in l.not_installed() {
        writeln!(
            out,
            "{name} (in {}, not installed: run `cjm-ctl install-all`)",
            yaml_name.display()
        )?;
    }
    if a.envs {
        writeln!(
            out,
            "\n=== Environments in {} ({}) ===",
            ctx.envs_dir().display(),
            l.envs.len()
        )?;
        for k in &l.envs {
            let users = l.used_by(k);
            let used = if users.is_empty() {
                "unused: `cjm-ctl gc` deletes it".to_owned()
            } else {
                format!("used by {}", users.join(", "))
            };
            writeln!(out, "{k}  {:>10}  {used}", human(dir_size(&l.store.dir(k))))?;
        }
    }
    let mut err = std::io::stderr().lock();
    for e in &l.discovery.errors {
        writeln!(err, "warning: skipped {}", crate::with_causes_ref(e))?;
    }
    Ok(())
}

fn plugin_json(d: &Discovered, yaml: Option<&cjm_manifest::PluginsFile>) -> serde_json::Value {
    let m = &d.manifest;
    json!({
        "name": m.code.name,
        "version": m.code.version,
        "description": m.code.description,
        "interface": m.code.interface,
        "taxonomy": m.code.taxonomy,
        "manifest": d.path,
        "python": m.install.python_path,
        "env_key": env_key(m).map(|k| k.0),
        "env_exists": Path::new(&m.install.python_path).exists(),
        "in_plugins_yaml": yaml.map(|y| y.get(&m.code.name).is_some()),
    })
}

pub(crate) fn remove(a: &RemoveArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let discovery = ctx.discover();
    let Some(found) = discovery.get(&a.name) else {
        return Err(crate::ctx::not_installed(&a.name, &discovery));
    };
    let m = &found.manifest;
    let backend = m
        .install
        .extra
        .get("backend")
        .and_then(serde_json::Value::as_str);
    let key = env_key(m);
    let shared_with: Vec<&str> = discovery
        .found
        .iter()
        .filter(|d| d.manifest.code.name != a.name && key.is_some() && env_key(&d.manifest) == key)
        .map(|d| d.manifest.code.name.as_str())
        .collect();
    let conda_env = conda_env_name(&ctx, a, m)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "=== Remove plugin {} ===", a.name)?;
    writeln!(out, "Manifest: {} (will be removed)", found.path.display())?;
    let env_action = if a.keep_env {
        "kept (--keep-env)".to_owned()
    } else if backend == Some("python") {
        "kept (backend python: an interpreter cjm does not own)".to_owned()
    } else if !shared_with.is_empty() {
        format!("kept (shared with {})", shared_with.join(", "))
    } else {
        "will be removed".to_owned()
    };
    let env_label = key
        .as_ref()
        .map_or_else(|| conda_env.clone().unwrap_or_default(), |k| k.0.clone());
    if !env_label.is_empty() {
        writeln!(out, "Environment: {env_label} ({env_action})")?;
    }
    drop(out);
    if !a.yes && !crate::confirm("Proceed with removal?", "removing")? {
        writeln!(std::io::stdout().lock(), "Aborted.")?;
        return Ok(ExitCode::from(1));
    }
    if env_action == "will be removed" {
        if let Some(k) = &key {
            ctx.store_for_reading().remove(k).map_err(|e| {
                crate::Failure(format!(
                    "removing environment {k} failed: {}",
                    crate::with_causes_ref(&e)
                ))
            })?;
        } else if let Some(name) = &conda_env {
            let conda = CondaRuntime::from_config(&ctx.cfg);
            if conda.env_exists(name).unwrap_or(false) {
                conda
                    .remove(name)
                    .map_err(|e| crate::Failure(crate::with_causes_ref(&e)))?;
            }
        }
    }
    fs_err::remove_file(&found.path).context("removing the manifest")?;
    writeln!(std::io::stdout().lock(), "✓ plugin {} removed", a.name)?;
    Ok(ExitCode::SUCCESS)
}

/// The conda environment of a conda-installed plugin: the manifest's, else the
/// name in its path, else plugins.yaml's.
fn conda_env_name(ctx: &Ctx, a: &RemoveArgs, m: &Manifest) -> anyhow::Result<Option<String>> {
    if env_key(m).is_some() {
        return Ok(None);
    }
    if !m.install.conda_env.is_empty() {
        return Ok(Some(m.install.conda_env.clone()));
    }
    let parts: Vec<_> = Path::new(&m.install.python_path).iter().collect();
    if let Some(i) = parts.iter().position(|p| *p == "envs")
        && let Some(name) = parts.get(i + 1)
    {
        return Ok(Some(name.to_string_lossy().into_owned()));
    }
    if let Some(p) = &a.plugins {
        return Ok(ctx
            .plugins_file(Some(p))?
            .1
            .get(&a.name)
            .map(|s| s.env_name.clone()));
    }
    Ok(None)
}

pub(crate) fn gc(a: &GcArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let discovery = ctx.discover();
    if !discovery.errors.is_empty() {
        // An unreadable manifest may be the only user of an environment.
        let list: Vec<String> = discovery
            .errors
            .iter()
            .map(crate::with_causes_ref)
            .collect();
        return Err(crate::Failure(format!(
            "not collecting: some manifests cannot be read, and their environments would look unused:\n  - {}\nfix or remove them, then run gc again",
            list.join("\n  - ")
        ))
        .into());
    }
    let keep: BTreeSet<EnvKey> = discovery
        .found
        .iter()
        .filter_map(|d| env_key(&d.manifest))
        .collect();
    let store = ctx.store_for_reading();
    let unused: Vec<EnvKey> = store
        .list()
        .map_err(|e| crate::Failure(crate::with_causes_ref(&e)))?
        .into_iter()
        .filter(|k| !keep.contains(k))
        .collect();
    let sizes: Vec<u64> = unused.iter().map(|k| dir_size(&store.dir(k))).collect();
    if !a.dry_run {
        for k in &unused {
            store
                .remove(k)
                .map_err(|e| crate::Failure(crate::with_causes_ref(&e)))?;
        }
    }
    let total: u64 = sizes.iter().sum();
    if a.json {
        let doc = json!({
            "dry_run": a.dry_run,
            "removed": unused.iter().map(|k| &k.0).collect::<Vec<_>>(),
            "bytes": total,
            "kept": keep.iter().map(|k| &k.0).collect::<Vec<_>>(),
        });
        writeln!(std::io::stdout().lock(), "{doc}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for (k, size) in unused.iter().zip(&sizes) {
        writeln!(out, "{verb} {k} ({})", human(*size))?;
    }
    writeln!(
        out,
        "{} environment(s) {verb}, {} freed; {} in use",
        unused.len(),
        human(total),
        keep.len()
    )?;
    Ok(ExitCode::SUCCESS)
}
