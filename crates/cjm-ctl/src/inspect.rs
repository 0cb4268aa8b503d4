//! `schema` and `info`: what an installed plugin is, reads and needs, from its
//! manifest and the stores, without starting it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use cjm_manifest::Manifest;
use cjm_stores::ConfigStore;
use serde_json::{Map, Value, json};

use crate::ctx::{Ctx, Global};
use crate::stores::{compile, secret_store, tokio_runtime};

/// Show a plugin's configuration schema and the configuration it loads with.
#[derive(clap::Args)]
pub(crate) struct SchemaArgs {
    /// The plugin's name.
    #[arg(value_parser = crate::ctx::plugin_name)]
    plugin: String,
    /// Print one JSON object: the schema, the configuration, whether it is persisted.
    #[arg(long)]
    json: bool,
}

/// Show what is known of an installed plugin: manifest, environment, configuration,
/// variables and secrets (by name), log.
#[derive(clap::Args)]
pub(crate) struct InfoArgs {
    /// The plugin's name.
    #[arg(value_parser = crate::ctx::plugin_name)]
    plugin: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The configuration a load of the default instance would use: the persisted one
/// (or none), checked against the schema, defaults filled; and whether it was
/// persisted, and the enabled flag.
pub(crate) fn effective_config(
    ctx: &Ctx,
    plugin: &str,
    manifest: &Manifest,
) -> anyhow::Result<(Map<String, Value>, bool, bool)> {
    let schema = compile(plugin, manifest)?;
    let store = ConfigStore::new(ctx.cfg.data_dir.join(cjm_stores::CONFIG_DB_FILE_NAME));
    let record = tokio_runtime()?
        .block_on(store.get(plugin))
        .map_err(|e| crate::Failure(crate::with_causes(&e)))?;
    let (config, enabled, persisted) = match record {
        Some(r) => (r.config, r.enabled, true),
        None => (Map::new(), true, false),
    };
    let effective = schema
        .validate(&config, cjm_schema::Strictness::Strict)
        .map_err(|e| {
            crate::Failure(format!(
                "the persisted configuration of {plugin} no longer fits its schema: {e}\nhint: {}",
                e.hint()
            ))
        })?;
    Ok((effective.config, persisted, enabled))
}

pub(crate) fn schema(a: &SchemaArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let manifest = crate::stores::manifest(&ctx, &a.plugin)?;
    let (config, persisted, _) = effective_config(&ctx, &a.plugin, &manifest)?;
    let schema = manifest.code.config_schema.clone().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if a.json {
        let doc =
            json!({"plugin": a.plugin, "schema": schema, "config": config, "persisted": persisted});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    writeln!(
        out,
        "{} v{}: {} field(s); configuration {}",
        manifest.code.name,
        manifest.code.version,
        properties.len(),
        if persisted {
            "persisted (`cjm-ctl config set` changes it)"
        } else {
            "from the schema's defaults"
        }
    )?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, field) in &properties {
        let kind = field
            .get("type")
            .map_or_else(|| "any".to_owned(), type_text);
        let current = config
            .get(name)
            .map_or_else(|| "(unset)".to_owned(), Value::to_string);
        writeln!(
            out,
            "  {name}: {kind}{} = {current}",
            if required.contains(&name.as_str()) {
                " (required)"
            } else {
                ""
            }
        )?;
        let mut facts = Vec::new();
        for key in [
            "default",
            "enum",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "pattern",
        ] {
            if let Some(v) = field.get(key) {
                facts.push(format!("{key} {v}"));
            }
        }
        if let Some(d) = field
            .get("description")
            .or_else(|| field.get("title"))
            .and_then(Value::as_str)
        {
            facts.insert(0, d.to_owned());
        }
        if !facts.is_empty() {
            writeln!(out, "      {}", facts.join("; "))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn type_text(t: &Value) -> String {
    match t {
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        other => other.as_str().unwrap_or("any").to_owned(),
    }
}

pub(crate) fn info(a: &InfoArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let discovery = ctx.discover();
    let Some(found) = discovery.get(&a.plugin) else {
        return Err(crate::ctx::not_installed(&a.plugin, &discovery));
    };
    let m = &found.manifest;
    let (config, persisted, enabled) = effective_config(&ctx, &a.plugin, m)?;
    let stored = tokio_runtime()?
        .block_on(secret_store(&ctx).list_keys(&a.plugin, None))
        .map_err(|e| crate::Failure(crate::with_causes(&e)))?;
    let vars = m.code.worker_env_vars();
    let secrets: Vec<Value> = vars
        .iter()
        .filter(|v| v.secret)
        .map(|v| json!({"name": v.name, "required": v.required, "set": stored.contains(&v.name), "description": v.description}))
        .collect();
    let visible: Vec<Value> = vars
        .iter()
        .filter(|v| !v.secret)
        .map(|v| json!({"name": v.name, "required": v.required, "default": v.default, "description": v.description}))
        .collect();
    let python = Path::new(&m.install.python_path);
    let log = cjm::launch::log_file(&ctx.cfg, &m.code.name);
    let log_bytes = fs_err::metadata(&log).ok().map(|md| md.len());
    let extra = |k: &str| m.install.extra.get(k).cloned().unwrap_or(Value::Null);
    let doc = json!({
        "name": m.code.name,
        "version": m.code.version,
        "description": m.code.description,
        "manifest": found.path,
        "module": m.code.module,
        "class": m.code.class_name,
        "interface": m.code.interface,
        "taxonomy": m.code.taxonomy,
        "package": m.install.package_source,
        "installed_at": m.install.installed_at,
        "environment": {
            "backend": extra("backend"),
            "key": extra("env_key"),
            "conda_env": m.install.conda_env,
            "python": m.install.python_path,
            "exists": python.exists(),
        },
        "config": config,
        "config_persisted": persisted,
        "enabled": enabled,
        "env_vars": m.install.env_vars,
        "worker_env": visible,
        "secrets": secrets,
        "log": {"path": log, "bytes": log_bytes},
        "install_warnings": extra("install_warnings"),
    });
    if a.json {
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&doc)?
        )?;
    } else {
        print_info(m, &found.path, &doc, &vars, &stored)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `info` for a terminal: one line per fact.
fn print_info(
    m: &Manifest,
    manifest_path: &Path,
    doc: &Value,
    vars: &[cjm_manifest::WorkerEnvVar],
    stored: &[String],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let python = Path::new(&m.install.python_path);
    let extra = |k: &str| m.install.extra.get(k).cloned().unwrap_or(Value::Null);
    let persisted = doc["config_persisted"] == true;
    let (config, enabled) = (&doc["config"], &doc["enabled"]);
    writeln!(
        out,
        "{} v{}: {}",
        m.code.name, m.code.version, m.code.description
    )?;
    writeln!(out, "  manifest     {}", manifest_path.display())?;
    writeln!(
        out,
        "  class        {}.{} (interface {})",
        m.code.module, m.code.class_name, m.code.interface
    )?;
    if let Some(t) = &m.code.taxonomy {
        writeln!(out, "  taxonomy     {}/{}", t.domain, t.role)?;
    }
    writeln!(out, "  package      {}", m.install.package_source)?;
    writeln!(
        out,
        "  environment  {} ({}) {}",
        extra("env_key").as_str().unwrap_or(&m.install.conda_env),
        if python.exists() {
            "exists"
        } else {
            "missing: `cjm-ctl repair` rebuilds it"
        },
        python.display()
    )?;
    writeln!(
        out,
        "  config       {} ({})",
        config,
        if persisted { "persisted" } else { "defaults" }
    )?;
    writeln!(out, "  enabled      {enabled}")?;
    for v in vars {
        let state = if v.secret {
            if stored.contains(&v.name) {
                "secret, set".to_owned()
            } else if v.required {
                format!(
                    "secret, REQUIRED, not set: `cjm-ctl set-secret {} {}`",
                    m.code.name, v.name
                )
            } else {
                "secret, not set".to_owned()
            }
        } else {
            v.default.as_ref().map_or_else(
                || "visible".to_owned(),
                |d| format!("visible, default {d:?}"),
            )
        };
        writeln!(out, "  variable     {} ({state})", v.name)?;
    }
    writeln!(
        out,
        "  log          {}{}",
        doc["log"]["path"].as_str().unwrap_or_default(),
        doc["log"]["bytes"]
            .as_u64()
            .map_or_else(|| " (none yet)".to_owned(), |b| format!(" ({b} bytes)"))
    )?;
    Ok(())
}
