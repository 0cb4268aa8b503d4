//! `setup-runtime`: the tools cjm builds environments with, in its runtime folder.
//!
//! The reference only downloads micromamba; cjm's default backend is uv, so this
//! installs a pinned uv first (unless one is found), then micromamba when the
//! configuration's `conda_type` is micromamba, as the reference does.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use cjm::core::CondaType;
use serde_json::{Value, json};

use crate::ctx::{Ctx, Global};

/// Install uv into the runtime folder (and micromamba, when conda_type is micromamba).
///
/// uv goes to `<runtime>/bin/uv` (`runtime.prefix` in cjm.yaml, else
/// `<data_dir>/runtime`), installed with `pip install --target` by a Python it never
/// modifies. Nothing is done for a tool that is found already, unless --force.
#[derive(clap::Args)]
pub(crate) struct SetupRuntimeArgs {
    /// Install again even if the tool is found.
    #[arg(long, short = 'f')]
    force: bool,
    /// The Python whose pip fetches uv (default: python3 on PATH); it is not modified.
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// What happened to one tool.
struct Step {
    tool: &'static str,
    /// `found`, `installed`, `skipped` or `failed`.
    action: &'static str,
    path: Option<PathBuf>,
    detail: String,
}

impl Step {
    fn to_json(&self) -> Value {
        json!({"tool": self.tool, "action": self.action, "path": self.path, "detail": self.detail})
    }
}

pub(crate) fn run(a: &SetupRuntimeArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(g)?;
    let cfg = &ctx.cfg;
    let mut out = Output { json: a.json };
    let platform = cjm::core::current_platform();
    out.line("=== Setup Runtime ===\n")?;
    out.line(&format!("Platform: {platform}"))?;
    out.line(&format!(
        "Runtime folder: {}",
        cjm_env::runtime_dir(cfg).display()
    ))?;
    out.line("")?;

    let mut steps = Vec::new();
    let uv = setup_uv(&ctx, a, &mut out);
    let uv_failed = uv.action == "failed";
    steps.push(uv);

    if !uv_failed {
        if cfg.runtime.conda_type == CondaType::Micromamba {
            steps.push(setup_micromamba(&ctx, a.force, &mut out)?);
        } else {
            let detail = format!(
                "not needed: conda_type is {}; for a project-local micromamba set runtime.conda_type: micromamba and runtime.prefix in cjm.yaml",
                cfg.runtime.conda_type
            );
            out.line(&format!("micromamba: {detail}"))?;
            steps.push(Step {
                tool: "micromamba",
                action: "skipped",
                path: None,
                detail,
            });
        }
    }

    let failed: Vec<&Step> = steps.iter().filter(|s| s.action == "failed").collect();
    if a.json {
        let doc = json!({
            "ok": failed.is_empty(),
            "platform": platform,
            "runtime_dir": cjm_env::runtime_dir(cfg),
            "steps": steps.iter().map(Step::to_json).collect::<Vec<_>>(),
        });
        writeln!(std::io::stdout().lock(), "{doc}")?;
    }
    if let Some(first) = failed.first() {
        return Err(crate::Failure(first.detail.clone()).into());
    }
    out.line("\nRuntime setup complete.")?;
    out.line("next: cjm-ctl install-all --plugins plugins.yaml")?;
    Ok(ExitCode::SUCCESS)
}

/// Human lines on stdout, unless the output is JSON.
struct Output {
    json: bool,
}

impl Output {
    fn line(&mut self, text: &str) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        writeln!(std::io::stdout().lock(), "{text}")
    }
}

fn setup_uv(ctx: &Ctx, a: &SetupRuntimeArgs, out: &mut Output) -> Step {
    let found = cjm_env::find_uv(&ctx.cfg, &|k| std::env::var_os(k));
    if !a.force
        && let Some(path) = found
    {
        if !path.is_file() {
            let detail = format!(
                "uv is set to {} (from $CJM_UV), which is not a file: fix CJM_UV or unset it",
                path.display()
            );
            return failed("uv", detail);
        }
        let version = tool_version(&path).unwrap_or_else(|| "version unknown".to_owned());
        let detail = format!(
            "uv already available at {} ({version}); --force installs uv {} into the runtime folder anyway",
            path.display(),
            cjm_env::UV_VERSION
        );
        let _ = out.line(&format!("uv: {detail}"));
        return Step {
            tool: "uv",
            action: "found",
            path: Some(path),
            detail,
        };
    }
    let dest = cjm_env::runtime_dir(&ctx.cfg).join("bin").join("uv");
    let Some(python) = a.python.clone().or_else(|| on_path("python3")) else {
        return failed(
            "uv",
            "installing uv needs a Python with pip, and there is no python3 on PATH: pass --python PATH, or install uv yourself and set CJM_UV".to_owned(),
        );
    };
    let _ = out.line(&format!(
        "Installing uv {} with {}",
        cjm_env::UV_VERSION,
        python.display()
    ));
    let _ = out.line(&format!("Destination: {}", dest.display()));
    match cjm_env::setup_uv(&ctx.cfg, &python, a.force) {
        Ok(path) => {
            let version = tool_version(&path).unwrap_or_default();
            let detail = format!("installed {version} at {}", path.display());
            let _ = out.line(&format!("✓ uv {detail}"));
            Step {
                tool: "uv",
                action: "installed",
                path: Some(path),
                detail,
            }
        }
        Err(e) => failed(
            "uv",
            format!(
                "installing uv {} into {} failed: {}; offline, install uv yourself (any recent uv) and point CJM_UV at it",
                cjm_env::UV_VERSION,
                dest.display(),
                crate::with_causes(&e)
            ),
        ),
    }
}

fn setup_micromamba(ctx: &Ctx, force: bool, out: &mut Output) -> anyhow::Result<Step> {
    let cfg = &ctx.cfg;
    let Some(dest) = cfg.conda_binary_path() else {
        return Ok(failed(
            "micromamba",
            format!(
                "cannot tell where micromamba goes: set runtime.prefix (or runtime.binaries.{}) in cjm.yaml, or pass --conda-prefix",
                cjm::core::current_platform()
            ),
        ));
    };
    if dest.is_file() && !force {
        let detail = format!(
            "micromamba already installed at {} (--force downloads it again)",
            dest.display()
        );
        out.line(&format!("micromamba: {detail}"))?;
        return Ok(Step {
            tool: "micromamba",
            action: "found",
            path: Some(dest),
            detail,
        });
    }
    out.line(&format!(
        "Downloading micromamba (conda_type is micromamba)\nDestination: {}",
        dest.display()
    ))?;
    if let Some(prefix) = &cfg.runtime.prefix {
        out.line(&format!(
            "Runtime directories: {}/bin, {0}/envs",
            prefix.display()
        ))?;
    }
    Ok(match cjm_env::setup_micromamba(cfg, force) {
        Ok(path) => {
            let detail = format!("installed at {}", path.display());
            out.line(&format!("✓ micromamba {detail}"))?;
            Step {
                tool: "micromamba",
                action: "installed",
                path: Some(path),
                detail,
            }
        }
        Err(e) => failed(
            "micromamba",
            format!("setting up micromamba failed: {}", crate::with_causes(&e)),
        ),
    })
}

fn failed(tool: &'static str, detail: String) -> Step {
    Step {
        tool,
        action: "failed",
        path: None,
        detail,
    }
}

/// `TOOL --version`'s first line, if it runs.
pub(crate) fn tool_version(tool: &Path) -> Option<String> {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
}

/// The first executable `name` in `$PATH`'s folders (empty entries skipped).
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = fs_err::metadata(p) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}
