//! `setup-host`: this machine's side of cjm — the data folders, the tools, and the
//! interface libraries a *Python* host application needs.
//!
//! The reference pip-installs every plugin's `interface_libs` into the Python that
//! runs its CLI, because that Python is the host. A cjm host is Rust and imports no
//! plugin code, so it needs none of them; they are installed only into an
//! interpreter named with `--python` (a Python application's own environment).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use cjm_manifest::PluginsFile;

use crate::ctx::{Ctx, Global};

/// Prepare this host: data folders, tools, and the interface libraries a Python host needs.
///
/// Creates `manifests`, `logs`, `data` and `envs` in the data folder, reports whether
/// uv and the cjm-worker wheel are found, and lists the plugins' `interface_libs`.
/// A Rust host needs none of those libraries; with --python they are installed into
/// that interpreter (a Python host application's environment) with uv.
#[derive(clap::Args)]
pub(crate) struct SetupHostArgs {
    /// The plugins.yaml whose interface_libs to list (default: the configuration's).
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Option<PathBuf>,
    /// Do not ask before installing into --python.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Install the interface libraries into this Python (a Python host's interpreter).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

/// What cjm-plugin-system's own name looks like in interface_libs (the reference
/// filters it: its CLI runs in that package already).
fn is_plugin_system(lib: &str) -> bool {
    lib == "cjm-plugin-system" || lib.contains("cjm-plugin-system.git")
}

/// The interface libraries to install and where pip/uv should look for them.
#[derive(Default)]
struct Libs {
    names: BTreeSet<String>,
    find_links: BTreeSet<String>,
    index_urls: BTreeSet<String>,
    extra_index_urls: BTreeSet<String>,
    /// Whether every entry naming a library installs from find_links only.
    no_index: bool,
}

fn collect(file: &PluginsFile, base: &Path) -> Libs {
    let mut out = Libs {
        no_index: true,
        ..Libs::default()
    };
    for p in &file.plugins {
        let libs: Vec<&String> = p
            .interface_libs
            .iter()
            .filter(|l| !is_plugin_system(l))
            .collect();
        if libs.is_empty() {
            continue;
        }
        out.names.extend(libs.into_iter().cloned());
        out.no_index &= p.no_index;
        out.find_links.extend(p.find_links.iter().map(|l| {
            if l.contains("://") {
                l.clone()
            } else {
                base.join(l).to_string_lossy().into_owned()
            }
        }));
        out.index_urls.extend(p.index_url.iter().cloned());
        out.extra_index_urls
            .extend(p.extra_index_urls.iter().cloned());
    }
    if out.names.is_empty() {
        out.no_index = false;
    }
    out
}

pub(crate) fn run(a: &SetupHostArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(g)?;
    // A plugins.yaml asked for must be there; the configuration's default may not be.
    let plugins = if a.plugins.is_some() || ctx.plugins_path(None).is_file() {
        Some(ctx.plugins_file(a.plugins.as_deref())?)
    } else {
        None
    };
    if a.python.is_some() && plugins.is_none() {
        usage!(
            "no plugins.yaml to read interface libraries from ({} does not exist): pass --plugins PATH",
            ctx.plugins_path(None).display()
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "=== Setup Host ===\n")?;
    layout(&ctx, &mut out)?;
    let missing_tools = tools(&ctx, &mut out)?;

    let Some((path, file)) = plugins else {
        writeln!(
            out,
            "\nNo plugins.yaml ({} does not exist): no interface libraries to list.",
            ctx.plugins_path(None).display()
        )?;
        next_steps(&mut out, missing_tools, None)?;
        return Ok(ExitCode::SUCCESS);
    };
    let base = path
        .parent()
        .map_or_else(|| ctx.cwd.clone(), Path::to_path_buf);
    let libs = collect(&file, &base);
    writeln!(out, "\nReading {}...", path.display())?;
    if libs.names.is_empty() {
        writeln!(out, "No interface libraries found in config.")?;
        next_steps(&mut out, missing_tools, Some(&path))?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "Found {} unique interface libraries:",
        libs.names.len()
    )?;
    for lib in &libs.names {
        writeln!(out, "  - {lib}")?;
    }

    let Some(python) = &a.python else {
        writeln!(
            out,
            "\nThis host is cjm (Rust): it imports no plugin code and needs none of these;\n\
             each plugin's environment gets them at install-all. A Python host application\n\
             that imports these interfaces needs them in its own environment:\n  \
             cjm-ctl setup-host --plugins {} --python /path/to/app/venv/bin/python",
            path.display()
        )?;
        next_steps(&mut out, missing_tools, Some(&path))?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(out)?;
    drop(out);
    let uv = ctx.uv().map_err(|e| crate::Failure(format!("{e:#}")))?;
    if !python.exists() {
        usage!("--python {} does not exist", python.display());
    }
    if !a.yes
        && !crate::confirm(
            &format!("Install these into {}?", python.display()),
            "installing",
        )?
    {
        writeln!(std::io::stdout().lock(), "Aborted.")?;
        return Ok(ExitCode::from(1));
    }
    install(&uv, python, &libs)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n✓ interface libraries installed into {}",
        python.display()
    )?;
    writeln!(out, "Host environment setup complete.")?;
    next_steps(&mut out, missing_tools, Some(&path))?;
    Ok(ExitCode::SUCCESS)
}

/// Creates the data folder's layout, saying what was there.
fn layout(ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let data = &ctx.cfg.data_dir;
    writeln!(out, "Data folder: {}", data.display())?;
    for dir in [
        ctx.cfg.manifests_dir(),
        ctx.cfg.logs_dir(),
        ctx.cfg.plugin_data_dir(),
        ctx.envs_dir(),
    ] {
        let existed = dir.is_dir();
        fs_err::create_dir_all(&dir).map_err(|e| {
            crate::Failure(format!(
                "cannot create {}: {e}; choose a writable data folder with --data-dir or CJM_DATA_DIR",
                dir.display()
            ))
        })?;
        let name = dir.strip_prefix(data).unwrap_or(&dir).display().to_string();
        writeln!(
            out,
            "  {name:<10} {}",
            if existed { "exists" } else { "created" }
        )?;
    }
    Ok(())
}

/// Reports uv and the worker wheel; true when one is missing.
fn tools(ctx: &Ctx, out: &mut impl Write) -> std::io::Result<bool> {
    writeln!(out, "\nTools:")?;
    let mut missing = false;
    match ctx.uv() {
        Ok(uv) => {
            if let Some(v) = crate::setup_runtime::tool_version(&uv) {
                writeln!(out, "  ✓ uv: {} ({v})", uv.display())?;
            } else {
                missing = true;
                writeln!(
                    out,
                    "  ✗ uv: {} does not run: fix CJM_UV or run `cjm-ctl setup-runtime --force`",
                    uv.display()
                )?;
            }
        }
        Err(e) => {
            missing = true;
            writeln!(out, "  ✗ {e:#}")?;
        }
    }
    match ctx.worker_wheel() {
        Ok(w) if w.is_file() => writeln!(out, "  ✓ cjm-worker wheel: {}", w.display())?,
        Ok(w) => {
            missing = true;
            writeln!(
                out,
                "  ✗ cjm-worker wheel: {} does not exist (CJM_WORKER_WHEEL)",
                w.display()
            )?;
        }
        Err(e) => {
            missing = true;
            writeln!(out, "  ✗ {e:#}")?;
        }
    }
    Ok(missing)
}

fn next_steps(
    out: &mut impl Write,
    missing_tools: bool,
    plugins: Option<&Path>,
) -> std::io::Result<()> {
    writeln!(out)?;
    if missing_tools {
        writeln!(
            out,
            "next: cjm-ctl setup-runtime (uv), `cargo xtask wheel` or CJM_WORKER_WHEEL (the worker wheel)"
        )?;
    }
    let plugins = plugins.map_or_else(|| "plugins.yaml".to_owned(), |p| p.display().to_string());
    writeln!(out, "next: cjm-ctl install-all --plugins {plugins}")
}

/// `uv pip install --python PYTHON LIBS...` with the entries' index options.
fn install(uv: &Path, python: &Path, libs: &Libs) -> anyhow::Result<()> {
    let mut cmd = Command::new(uv);
    cmd.args(["pip", "install", "--python"]).arg(python);
    if libs.no_index {
        cmd.arg("--no-index");
    }
    for url in &libs.index_urls {
        cmd.args(["--index-url", url]);
    }
    for url in &libs.extra_index_urls {
        cmd.args(["--extra-index-url", url]);
    }
    for l in &libs.find_links {
        cmd.args(["--find-links", l]);
    }
    cmd.args(&libs.names).stdin(Stdio::null());
    let status = cmd
        .status()
        .map_err(|e| crate::Failure(format!("cannot run {}: {e}", uv.display())))?;
    if !status.success() {
        return Err(crate::Failure(format!(
            "installing the interface libraries into {} failed (uv {status}); its output is above",
            python.display()
        ))
        .into());
    }
    Ok(())
}
