//! `estimate-size`: the disk space plugins' environments take, or would take.
//!
//! An installed plugin's environment is measured on disk. For one not installed, uv
//! resolves its requirement set (`uv pip compile`, offline first), and the sizes of
//! the resolved wheels found in the entry's `find_links` folders are added up.
//! Unlike the reference, nothing asks PyPI for sizes: a package that would come from
//! an index is listed with an unknown size.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::bail;
use cjm_env::{EnvRequest, Installer};
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
            None => bail!("plugin {name} is not in {}", path.display()),
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

/// A resolved requirement: a name and version, or a local file.
enum Resolved {
    Pinned { name: String, version: String },
    File(PathBuf),
    Other(String),
}

/// `uv pip compile` of `req`'s requirements (its wheels too), with its index
/// options; with `offline`, uv uses only its cache and find_links.
fn compile(uv: &Path, req: &EnvRequest, offline: bool) -> Result<Vec<Resolved>, String> {
    let mut cmd = Command::new(uv);
    cmd.args([
        "pip",
        "compile",
        "-",
        "--quiet",
        "--no-header",
        "--no-annotate",
    ]);
    if offline {
        cmd.arg("--offline");
    }
    if let Some(v) = python_version(&req.python) {
        cmd.args(["--python-version", v]);
    }
    cmd.args(req.index_args());
    // As the store runs it: no activated environment, no project configuration.
    cmd.env_remove("VIRTUAL_ENV")
        .env("UV_NO_CONFIG", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut input = req.requirements.join("\n");
    for w in &req.wheels {
        input.push('\n');
        input.push_str(&w.to_string_lossy());
    }
    input.push('\n');
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", uv.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for uv: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(4)..].join(" / ");
        return Err(format!(
            "uv could not resolve the requirements: {}",
            tail.trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .collect())
}

/// A `--python-version` for uv from the request's Python (`3.11`; not a path, not a
/// bare `3`).
fn python_version(python: &str) -> Option<&str> {
    let mut parts = python.split('.');
    let ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(python)
}

fn parse_line(line: &str) -> Option<Resolved> {
    let line = line.split(';').next().unwrap_or("").trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
        return None;
    }
    if let Some((name, version)) = line.split_once("==") {
        return Some(Resolved::Pinned {
            name: name.trim().to_owned(),
            version: version.trim().to_owned(),
        });
    }
    let location = line.split_once(" @ ").map_or(line, |(_, url)| url.trim());
    let file = location.strip_prefix("file://").unwrap_or(location);
    let file = PathBuf::from(percent_decode(file));
    if file.is_absolute() && file.is_file() {
        return Some(Resolved::File(file));
    }
    Some(Resolved::Other(line.to_owned()))
}

/// `%20` and friends in a `file://` URL.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The distributions in `find_links` folders: (normalized name, normalized version) →
/// the largest matching file (platform wheels of one version differ little).
fn local_files(find_links: &[PathBuf]) -> BTreeMap<(String, String), (PathBuf, u64)> {
    let mut files = BTreeMap::new();
    for dir in find_links.iter().filter(|d| d.is_dir()) {
        let Ok(entries) = fs_err::read_dir(dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(key) = distribution_of(name) else {
                continue;
            };
            let size = e.metadata().map_or(0, |m| m.len());
            let entry = files.entry(key).or_insert((path.clone(), size));
            if size > entry.1 {
                *entry = (path, size);
            }
        }
    }
    files
}

/// (name, version) of a wheel or source archive file name, normalized.
fn distribution_of(file: &str) -> Option<(String, String)> {
    let (name, version) = split_file_name(file)?;
    Some((normalize_name(name), normalize_version(version)))
}

/// (name, version) of a wheel or source archive file name, as written.
fn split_file_name(file: &str) -> Option<(&str, &str)> {
    if let Some(stem) = file.strip_suffix(".whl") {
        let mut parts = stem.splitn(3, '-');
        Some((parts.next()?, parts.next()?))
    } else {
        // Source archives: the version is after the last dash.
        file.strip_suffix(".tar.gz")
            .or_else(|| file.strip_suffix(".zip"))?
            .rsplit_once('-')
    }
}

/// PEP 503: lowercase, runs of `-`, `_` and `.` as one `-`.
fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Lowercase, without trailing `.0` release parts (`1.0.0` and `1.0` are one version).
fn normalize_version(version: &str) -> String {
    let v = version.to_ascii_lowercase();
    let release_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (release, rest) = v.split_at(release_end);
    let mut parts: Vec<&str> = release.trim_end_matches('.').split('.').collect();
    while parts.len() > 1 && parts.last().is_some_and(|p| p.bytes().all(|b| b == b'0')) {
        parts.pop();
    }
    format!("{}{rest}", parts.join("."))
}

fn sizes(resolved: Vec<Resolved>, find_links: &[PathBuf]) -> Vec<Package> {
    let local = local_files(find_links);
    resolved
        .into_iter()
        .map(|r| match r {
            Resolved::Pinned { name, version } => {
                let found = local.get(&(normalize_name(&name), normalize_version(&version)));
                Package {
                    name,
                    version: Some(version),
                    file: found.map(|(p, _)| p.clone()),
                    bytes: found.map(|(_, s)| *s),
                }
            }
            Resolved::File(path) => {
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (name, version) = split_file_name(&file_name).map_or_else(
                    || (file_name.clone(), None),
                    |(n, v)| (normalize_name(n), Some(v.to_owned())),
                );
                Package {
                    name,
                    version,
                    bytes: fs_err::metadata(&path).ok().map(|m| m.len()),
                    file: Some(path),
                }
            }
            Resolved::Other(line) => Package {
                name: line,
                version: None,
                file: None,
                bytes: None,
            },
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_normalize() {
        assert_eq!(
            normalize_name("Cjm_Demo.Plugin--System"),
            "cjm-demo-plugin-system"
        );
        assert_eq!(normalize_version("1.0.0"), "1");
        assert_eq!(normalize_version("1.0"), "1");
        assert_eq!(normalize_version("2.10.0rc1"), "2.10rc1");
        assert_eq!(normalize_version("2.10"), "2.10");
        assert_eq!(
            distribution_of("cjm_worker-0.1.0-cp39-abi3-linux_x86_64.whl"),
            Some(("cjm-worker".to_owned(), "0.1".to_owned()))
        );
        assert_eq!(
            distribution_of("libdemo-1.0.tar.gz"),
            Some(("libdemo".to_owned(), "1".to_owned()))
        );
        assert_eq!(python_version("3.11"), Some("3.11"));
        assert_eq!(python_version("3"), None);
        assert_eq!(python_version("/usr/bin/python3"), None);
    }
}
