//! `set-secret`, `list-secrets` and `config get|set`: the stores an operator edits.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use cjm_manifest::Manifest;
use cjm_stores::{ConfigRecord, ConfigStore, SecretStore, SecretValue};
use serde_json::Value;

use crate::ctx::{Ctx, Global};

/// Store a plugin secret (the variable its worker reads) in the project's secret store.
#[derive(clap::Args)]
pub(crate) struct SetSecretArgs {
    /// The plugin's name (as in its manifest).
    #[arg(value_parser = crate::ctx::plugin_name)]
    plugin: String,
    /// The secret's key: the environment variable the worker reads (e.g. GEMINI_API_KEY).
    key: String,
    /// The value; without it, it is read from a hidden prompt, or from stdin when
    /// stdin is not a terminal (keeps it out of shell history).
    #[arg(long)]
    value: Option<String>,
    /// Reserved multi-user scope (default: single-user).
    #[arg(long)]
    scope: Option<String>,
    /// Store it even if the plugin is not installed or does not declare this
    /// secret in its WORKER_ENV (e.g. before installing it).
    #[arg(long)]
    force: bool,
}

/// List the NAMES of a plugin's stored secrets (never the values).
#[derive(clap::Args)]
pub(crate) struct ListSecretsArgs {
    /// The plugin's name.
    #[arg(value_parser = crate::ctx::plugin_name)]
    plugin: String,
    /// Reserved multi-user scope.
    #[arg(long)]
    scope: Option<String>,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

/// Read or change a plugin's persisted configuration (validated against its schema).
#[derive(clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(clap::Subcommand)]
enum ConfigAction {
    /// Print the configuration a plugin's default instance loads with.
    Get {
        /// The plugin's name.
        #[arg(value_parser = crate::ctx::plugin_name)]
        plugin: String,
        /// The instance (only a plugin's default instance is persisted).
        #[arg(long)]
        instance: Option<String>,
    },
    /// Set keys of a plugin's persisted configuration: KEY=VALUE pairs (VALUE is
    /// JSON, or a plain string), validated against the plugin's schema.
    Set {
        /// The plugin's name.
        #[arg(value_parser = crate::ctx::plugin_name)]
        plugin: String,
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        /// The instance (only a plugin's default instance is persisted).
        #[arg(long)]
        instance: Option<String>,
        /// Drop keys the schema does not know (with a warning) instead of refusing.
        #[arg(long)]
        lenient: bool,
    },
}

pub(crate) fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start an async runtime")
}

pub(crate) fn secret_store(ctx: &Ctx) -> SecretStore {
    SecretStore::new(ctx.cfg.data_dir.join(cjm_stores::SECRETS_DIR_NAME))
}

pub(crate) fn set_secret(a: &SetSecretArgs, global: &Global) -> anyhow::Result<ExitCode> {
    if let Some(why) = cjm_stores::secret_key_problem(&a.key) {
        usage!("cannot store secret {:?} for {}: {why}", a.key, a.plugin);
    }
    let ctx = Ctx::load(global)?;
    if !a.force {
        check_declared(&ctx, &a.plugin, &a.key)?;
    }
    let value = match &a.value {
        Some(v) => v.clone(),
        None => read_secret(&format!("{} for {}: ", a.key, a.plugin))?,
    };
    if value.is_empty() {
        usage!(
            "an empty secret was given for {} of {}; nothing stored",
            a.key,
            a.plugin
        );
    }
    let store = secret_store(&ctx);
    tokio_runtime()?
        .block_on(store.set_secret(
            &a.plugin,
            &a.key,
            &SecretValue::new(value),
            a.scope.as_deref(),
        ))
        .map_err(|e| crate::Failure(crate::with_causes(&e)))?;
    writeln!(
        std::io::stdout().lock(),
        "✓ stored {} for plugin {} in {}\n  running workers get it when the plugin is reloaded (the manager's set_plugin_secret does that)",
        a.key,
        a.plugin,
        store.path().display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses a secret the plugin would never read: an unknown plugin (a typo), or a
/// key its WORKER_ENV does not declare as a secret.
fn check_declared(ctx: &Ctx, plugin: &str, key: &str) -> anyhow::Result<()> {
    let discovery = ctx.discover();
    let Some(found) = discovery.get(plugin) else {
        let installed: Vec<&str> = discovery
            .found
            .iter()
            .map(|d| d.manifest.code.name.as_str())
            .collect();
        usage!(
            "plugin {plugin} is not installed (installed: {}); check the name with `cjm-ctl list`, or pass --force to store the secret before installing it",
            if installed.is_empty() {
                "none".to_owned()
            } else {
                installed.join(", ")
            }
        );
    };
    let vars = found.manifest.code.worker_env_vars();
    if let Some(var) = vars.iter().find(|v| v.name == key) {
        if var.secret {
            return Ok(());
        }
        usage!(
            "{key} is a visible variable of plugin {plugin}, not a secret: set it in plugins.yaml's env_vars (or with the manager's set_env_override)"
        );
    }
    let secrets = found.manifest.code.secret_names();
    usage!(
        "plugin {plugin} does not declare a secret {key} in its WORKER_ENV (its secrets: {}); its worker would never read it; pass --force to store it anyway",
        if secrets.is_empty() {
            "none".to_owned()
        } else {
            secrets.join(", ")
        }
    )
}

/// A secret from a hidden prompt, or from stdin when it is not a terminal.
fn read_secret(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    eprint!("{prompt}");
    let fd = std::io::stdin();
    let old = rustix::termios::tcgetattr(&fd).context("reading the terminal's settings")?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet)
        .context("hiding the input")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &old);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub(crate) fn list_secrets(a: &ListSecretsArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let keys = tokio_runtime()?
        .block_on(secret_store(&ctx).list_keys(&a.plugin, a.scope.as_deref()))
        .map_err(|e| crate::Failure(crate::with_causes(&e)))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::json!(keys))?;
    } else if keys.is_empty() {
        writeln!(out, "no secrets stored for {}", a.plugin)?;
    } else {
        for k in keys {
            writeln!(out, "{k}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn config(a: &ConfigArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(global)?;
    let store = ConfigStore::new(ctx.cfg.data_dir.join(cjm_stores::CONFIG_DB_FILE_NAME));
    let rt = tokio_runtime()?;
    match &a.action {
        ConfigAction::Get { plugin, instance } => {
            default_instance_only(plugin, instance.as_deref())?;
            let manifest = manifest(&ctx, plugin)?;
            let (config, stored, enabled) =
                crate::inspect::effective_config(&ctx, plugin, &manifest)?;
            let doc = serde_json::json!({
                "plugin": plugin,
                "config": config,
                "enabled": enabled,
                "persisted": stored,
            });
            writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::to_string_pretty(&doc)?
            )?;
        }
        ConfigAction::Set {
            plugin,
            pairs,
            instance,
            lenient,
        } => {
            default_instance_only(plugin, instance.as_deref())?;
            let manifest = manifest(&ctx, plugin)?;
            let schema = compile(plugin, &manifest)?;
            let existing = rt
                .block_on(store.get(plugin))
                .map_err(|e| crate::Failure(crate::with_causes(&e)))?;
            let enabled = existing.as_ref().is_none_or(|r| r.enabled);
            let mut config = existing.map(|r| r.config).unwrap_or_default();
            for pair in pairs {
                let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.trim().is_empty())
                else {
                    usage!("expected KEY=VALUE with a non-empty KEY, got {pair:?}");
                };
                let value =
                    cjm::core::json_loads(v).unwrap_or_else(|_| Value::String(v.to_owned()));
                config.insert(k.to_owned(), value);
            }
            let mode = if *lenient {
                cjm_schema::Strictness::Lenient
            } else {
                cjm_schema::Strictness::Strict
            };
            let validated = schema
                .validate(&config, mode)
                .map_err(|e| crate::Failure(format!("{e}\nhint: {}", e.hint())))?;
            for w in &validated.warnings {
                eprintln!("warning: {w}");
            }
            let record = ConfigRecord {
                config: validated.config.clone(),
                enabled,
                updated_at: 0.0,
            };
            rt.block_on(store.set(plugin, &record))
                .map_err(|e| crate::Failure(crate::with_causes(&e)))?;
            writeln!(
                std::io::stdout().lock(),
                "✓ {plugin}: {}\n  a running instance takes it on its next load (or through the manager's update_config)",
                Value::Object(validated.config)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn default_instance_only(plugin: &str, instance: Option<&str>) -> anyhow::Result<()> {
    match instance {
        Some(id) if id != plugin => usage!(
            "only a plugin's default instance has a persisted configuration (as in the reference); instance {id} of {plugin} lives only in the manager that loaded it"
        ),
        _ => Ok(()),
    }
}

pub(crate) fn manifest(ctx: &Ctx, plugin: &str) -> anyhow::Result<Manifest> {
    ctx.discover()
        .get(plugin)
        .map(|d| d.manifest.clone())
        .with_context(|| format!("plugin {plugin} is not installed; `cjm-ctl list` shows what is"))
}

pub(crate) fn compile(
    plugin: &str,
    manifest: &Manifest,
) -> anyhow::Result<cjm_schema::ConfigSchema> {
    cjm_schema::ConfigSchema::compile(plugin, manifest.code.config_schema.as_ref())
        .map_err(|e| anyhow::Error::from(crate::Failure(format!("{e}\nhint: {}", e.hint()))))
}
