//! `cjm-ctl`, the operator CLI: the reference's verbs over cjm's environments,
//! manifests and workers.
//!
//! Exit codes: 0 success; 1 the operation failed (a plugin's call or install, an
//! invalid file, a failed check); 2 bad usage or configuration (unknown plugin, bad
//! JSON, a cjm.yaml mistake); 3 the worker could not be started or died.

#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are the CLI's help text, read in a terminal"
)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Returns a [`Usage`] error (exit code 2) with a formatted message.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::Usage(format!($($arg)*))))
    };
}

mod call;
mod ctx;
mod doctor;
mod host;
mod inspect;
mod install;
mod jobs;
mod plugins;
mod resources;
mod setup_runtime;
mod size;
mod stores;
mod validate;

/// Install, inspect and call isolated Python plugins.
#[derive(Parser)]
#[command(name = "cjm-ctl", version, about)]
struct Cli {
    #[command(flatten)]
    global: ctx::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install uv into the runtime folder (and micromamba, when conda_type is micromamba).
    SetupRuntime(setup_runtime::SetupRuntimeArgs),
    /// Install and register every plugin of a plugins.yaml, in parallel.
    InstallAll(install::InstallAllArgs),
    /// Re-run introspection for an installed plugin and rewrite its manifest.
    RegenerateManifest(install::RegenerateArgs),
    /// Prepare this host: data folders, tools, and the interface libraries a Python host needs.
    SetupHost(host::SetupHostArgs),
    /// Estimate the disk space the plugins' environments take.
    EstimateSize(size::EstimateSizeArgs),
    /// List installed plugins (and, with --envs, their environments).
    List(plugins::ListArgs),
    /// Remove a plugin's manifest and its environment.
    Remove(plugins::RemoveArgs),
    /// Check a manifest (JSON) or a plugins.yaml; exit 1 listing every problem.
    Validate(validate::ValidateArgs),
    /// Start a plugin's worker, make one call, print the result as JSON, stop it.
    Call(call::CallArgs),
    /// Rebuild a plugin's environment from scratch and rewrite its manifest.
    Repair(install::RepairArgs),
    /// Delete environments no installed plugin uses.
    Gc(plugins::GcArgs),
    /// Check the runtime, the data folder, shared memory, manifests and drift.
    Doctor(doctor::DoctorArgs),
    /// Store a plugin secret (hidden prompt, --value, or stdin).
    SetSecret(stores::SetSecretArgs),
    /// List the names (never the values) of a plugin's secrets.
    ListSecrets(stores::ListSecretsArgs),
    /// Read or change a plugin's persisted configuration, validated.
    Config(stores::ConfigArgs),
    /// Show a plugin's configuration schema and the configuration it loads with.
    Schema(inspect::SchemaArgs),
    /// Show what the scheduler sees: memory, GPUs, footprints, waiting calls.
    Resources(resources::ResourcesArgs),
    /// The durable job queue: submit, list, show, cancel, retry, logs, watch, and work (a host).
    Jobs(jobs::JobsArgs),
    /// Show an installed plugin: manifest, environment, configuration, variables, secrets (names), log.
    Info(inspect::InfoArgs),
    /// Print a shell completion script: `cjm-ctl completions bash > /etc/bash_completion.d/cjm-ctl`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// An operation that ran and failed (exit code 1); its message is complete.
///
/// Exit code 1 is also what any error not marked [`Usage`] gets: an unexpected I/O
/// error is a failure of the operation, not a mistake of the caller's.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Bad usage or configuration (exit code 2): the command line, a cjm.yaml or
/// plugins.yaml mistake, a plugin that is not installed. Its message is complete.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The exit code for an error: 2 when any error in its chain is a [`Usage`], else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.downcast_ref::<Usage>().is_some()) {
        2
    } else {
        1
    }
}

/// An error and its chain of causes on one line.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// [`with_causes`] for `map`.
pub(crate) fn with_causes_ref<E: std::error::Error>(e: &E) -> String {
    with_causes(e)
}

/// Asks `question` on the terminal; refuses (a usage error) when there is none to
/// ask on, saying that -y skips the question. `doing` names the action refused.
pub(crate) fn confirm(question: &str, doing: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        usage!("not {doing} without confirmation: pass -y (stdin is not a terminal)");
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let g = &cli.global;
    g.init_logging();
    let result = match cli.command {
        Command::SetupRuntime(a) => setup_runtime::run(&a, g),
        Command::InstallAll(a) => install::install_all(&a, g),
        Command::RegenerateManifest(a) => install::regenerate(&a, g),
        Command::SetupHost(a) => host::run(&a, g),
        Command::EstimateSize(a) => size::run(&a, g),
        Command::List(a) => plugins::list(&a, g),
        Command::Remove(a) => plugins::remove(&a, g),
        Command::Validate(a) => validate::run(&a),
        Command::Call(a) => call::run(&a, g),
        Command::Repair(a) => install::repair(&a, g),
        Command::Gc(a) => plugins::gc(&a, g),
        Command::Doctor(a) => doctor::run(&a, g),
        Command::SetSecret(a) => stores::set_secret(&a, g),
        Command::ListSecrets(a) => stores::list_secrets(&a, g),
        Command::Config(a) => stores::config(&a, g),
        Command::Schema(a) => inspect::schema(&a, g),
        Command::Info(a) => inspect::info(&a, g),
        Command::Resources(a) => resources::run(&a, g),
        Command::Jobs(a) => jobs::run(&a, g),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "cjm-ctl",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        // `cjm-ctl list | head`: the reader has what it wanted.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            return ExitCode::SUCCESS;
        }
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        ExitCode::from(exit_code(&e))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
