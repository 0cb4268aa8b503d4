//! `doctor`: everything cjm relies on, checked, each with what to do when it is not
//! right.
//!
//! Each check is `ok`, `warn` or `fail`. Exit 1 when one fails (with `--strict`, when
//! one warns), 0 otherwise. A drifted plugin is a warning: it still runs (the
//! reference only logs drift when it loads a plugin), but its manifest describes an
//! older config schema until `cjm-ctl regenerate-manifest` rewrites it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cjm::core::{CjmConfig, CondaType};
use cjm::manifest::{Discovered, Discovery, Manifest};
use cjm::proto::Value;
use cjm::proxy::{CallOptions, Worker};
use cjm_env::CondaRuntime;
use serde_json::json;

use crate::ctx::{Ctx, Global};
use crate::plugins::{env_key, human};

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

/// Below this much free space in /dev/shm, warn (docker's default is 64 MiB).
const SHM_MIN_FREE: u64 = 512 * 1024 * 1024;

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
        configuration(cfg),
        data_dir(cfg),
        uv(&ctx),
        worker_wheel(&ctx),
    ];
    let conda_users = conda_users(
        &discovery.found,
        plugins.as_ref().and_then(|p| p.as_ref().ok()),
    );
    checks.extend(conda(cfg, &conda_users));
    checks.push(shm());
    checks.push(worker_cgroups());
    checks.extend(memfd());
    checks.push(manifests(cfg, &discovery));
    checks.push(secrets(&ctx, &discovery));
    if let Some(p) = &plugins {
        checks.push(plugins_file(p, &discovery));
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
        checks.push(plugin(cfg, d, drift, timeout));
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

/// Whether each worker gets a cgroup of its own (which holds what it starts, even
/// a grandchild that calls `setsid`).
fn worker_cgroups() -> Check {
    match cjm::proxy::cgroup_isolation() {
        Ok(dir) => Check::ok(
            "worker cgroups",
            format!("each worker in its own cgroup v2 under {}", dir.display()),
        ),
        Err(why) => Check::warn(
            "worker cgroups",
            format!("none: {why}"),
            "stopping a worker still takes its process group, but a grandchild that calls setsid can outlive it; run cjm in a delegated cgroup v2 (e.g. `systemd-run --user --scope -p Delegate=yes cjm-ctl ...`)",
        ),
    }
}

/// The secret store is readable, and every secret a plugin requires is set.
fn secrets(ctx: &Ctx, discovery: &Discovery) -> Check {
    let name = "secrets";
    let store = crate::secrets::secret_store(ctx);
    let Ok(rt) = crate::secrets::runtime() else {
        return Check::fail(
            name,
            "cannot start an async runtime",
            "report this as a bug",
        );
    };
    let path = store.path().display().to_string();
    // Reading the file once checks it even when no plugin declares a secret.
    if let Err(e) = rt.block_on(store.list_keys("", None)) {
        return Check::fail(
            name,
            crate::with_causes(&e),
            format!(
                "cjm never rewrites a broken secrets file: fix {path} by hand, or move it aside and set the secrets again with `cjm-ctl set-secret`"
            ),
        );
    }
    let mut missing = Vec::new();
    let mut declared = 0;
    for d in &discovery.found {
        let code = &d.manifest.code;
        let vars: Vec<_> = code
            .worker_env_vars()
            .into_iter()
            .filter(|v| v.secret)
            .collect();
        if vars.is_empty() {
            continue;
        }
        declared += vars.len();
        let stored = rt
            .block_on(store.list_keys(&code.name, None))
            .unwrap_or_default();
        missing.extend(
            vars.iter()
                .filter(|v| v.required && !stored.contains(&v.name))
                .map(|v| (code.name.clone(), v.name.clone())),
        );
    }
    if missing.is_empty() {
        return Check::ok(
            name,
            format!("{path}: readable; {declared} declared secret(s), every required one set"),
        );
    }
    let list: Vec<String> = missing.iter().map(|(p, k)| format!("{p}: {k}")).collect();
    let (plugin, key) = &missing[0];
    Check::fail(
        name,
        format!("required secret(s) not set: {}", list.join(", ")),
        format!(
            "these plugins cannot load until they are set: `cjm-ctl set-secret {plugin} {key}`"
        ),
    )
}

fn configuration(cfg: &CjmConfig) -> Check {
    let source = cfg.source.as_ref().map_or_else(
        || "no cjm.yaml (defaults and environment)".to_owned(),
        |p| format!("read {}", p.display()),
    );
    let detail = format!(
        "{source}; data dir {}; {} warning(s)",
        cfg.data_dir.display(),
        cfg.warnings.len()
    );
    if cfg.warnings.is_empty() {
        Check::ok("configuration", detail)
    } else {
        let first = cfg
            .warnings
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        Check::warn(
            "configuration",
            detail,
            format!("fix or remove the keys cjm ignores (printed above), e.g. {first}"),
        )
    }
}

fn data_dir(cfg: &CjmConfig) -> Check {
    let dir = &cfg.data_dir;
    let name = "data dir";
    if !dir.exists() {
        return Check::warn(
            name,
            format!("{} does not exist yet", dir.display()),
            "it will be created by `cjm-ctl install-all` (or `cjm-ctl setup-host`)",
        );
    }
    if !dir.is_dir() {
        return Check::fail(
            name,
            format!("{} is not a folder", dir.display()),
            "choose another data folder with --data-dir, CJM_DATA_DIR or data_dir in cjm.yaml",
        );
    }
    let probe = dir.join(format!(".cjm-doctor-{}", std::process::id()));
    if let Err(e) = fs_err::write(&probe, b"") {
        return Check::fail(
            name,
            format!("cannot write in {}: {e}", dir.display()),
            "fix the folder's permissions, or choose another with --data-dir or CJM_DATA_DIR",
        );
    }
    let _ = fs_err::remove_file(&probe);
    let free =
        free_space(dir).map_or_else(String::new, |(free, _)| format!(", {} free", human(free)));
    Check::ok(name, format!("{} is writable{free}", dir.display()))
}

/// (available, total) bytes of the file system holding `path`.
fn free_space(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let s = rustix::fs::statvfs(path).ok()?;
        let unit = if s.f_frsize > 0 {
            s.f_frsize
        } else {
            s.f_bsize
        };
        Some((
            s.f_bavail.saturating_mul(unit),
            s.f_blocks.saturating_mul(unit),
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn uv(ctx: &Ctx) -> Check {
    let Ok(path) = ctx.uv() else {
        return Check::fail(
            "uv",
            format!(
                "not found (looked at $CJM_UV, {} and PATH); install-all needs it",
                cjm_env::runtime_dir(&ctx.cfg).join("bin/uv").display()
            ),
            "run `cjm-ctl setup-runtime` to install it, or set CJM_UV",
        );
    };
    match crate::runtime::tool_version(&path) {
        Some(v) => {
            let note = if v.split_whitespace().nth(1) == Some(cjm_env::UV_VERSION) {
                String::new()
            } else {
                format!("; cjm is tested with uv {}", cjm_env::UV_VERSION)
            };
            Check::ok("uv", format!("{} ({v}){note}", path.display()))
        }
        None => Check::fail(
            "uv",
            format!("{} does not run (`--version` failed)", path.display()),
            "fix or unset CJM_UV, or run `cjm-ctl setup-runtime --force`",
        ),
    }
}

fn worker_wheel(ctx: &Ctx) -> Check {
    let name = "cjm-worker wheel";
    match ctx.worker_wheel() {
        Ok(w) if w.is_file() => Check::ok(name, w.display().to_string()),
        Ok(w) => Check::fail(
            name,
            format!("{} does not exist", w.display()),
            "fix CJM_WORKER_WHEEL, or unset it to use the wheel built with `cargo xtask wheel`",
        ),
        Err(_) => Check::fail(
            name,
            "not found (looked at $CJM_WORKER_WHEEL and beside cjm-ctl); install-all puts it in every environment",
            "build it with `cargo xtask wheel`, or set CJM_WORKER_WHEEL",
        ),
    }
}

/// The installed plugins and plugins.yaml entries that run in conda environments.
fn conda_users(
    found: &[Discovered],
    plugins: Option<&(PathBuf, cjm_manifest::PluginsFile)>,
) -> Vec<String> {
    let mut users: Vec<String> = found
        .iter()
        .filter(|d| {
            let backend = d
                .manifest
                .install
                .extra
                .get("backend")
                .and_then(serde_json::Value::as_str);
            // A manifest the reference wrote has no backend and no env key: conda.
            backend == Some("conda") || (backend.is_none() && env_key(&d.manifest).is_none())
        })
        .map(|d| d.manifest.code.name.clone())
        .collect();
    if let Some((_, file)) = plugins {
        for p in &file.plugins {
            if p.backend() == cjm_manifest::Backend::Conda && !users.contains(&p.name) {
                users.push(p.name.clone());
            }
        }
    }
    users
}

fn conda(cfg: &CjmConfig, users: &[String]) -> Option<Check> {
    let configured =
        cfg.runtime.conda_type == CondaType::Micromamba && cfg.runtime.prefix.is_some();
    if users.is_empty() && !configured {
        return None;
    }
    let rt = CondaRuntime::from_config(cfg);
    let used = if users.is_empty() {
        "no plugin uses it".to_owned()
    } else {
        format!("used by {}", users.join(", "))
    };
    Some(if rt.available() {
        Check::ok(
            "conda runtime",
            format!("{} at {} ({used})", rt.kind(), rt.program().display()),
        )
    } else {
        let detail = format!("{} not available ({used})", rt.kind());
        if users.is_empty() {
            Check::warn("conda runtime", detail, rt.missing_hint())
        } else {
            Check::fail("conda runtime", detail, rt.missing_hint())
        }
    })
}

fn shm() -> Check {
    let name = "shm";
    let path = Path::new("/dev/shm");
    let why = "plugins' own shared memory (Python multiprocessing, PyTorch DataLoader workers) lives there; cjm's buffers are memfds and count against RAM";
    if !path.is_dir() {
        return Check::warn(name, "/dev/shm does not exist", why);
    }
    match free_space(path) {
        Some((free, total)) if free < SHM_MIN_FREE => Check::warn(
            name,
            format!(
                "/dev/shm has {} free of {} (under {})",
                human(free),
                human(total),
                human(SHM_MIN_FREE)
            ),
            format!(
                "{why}; in docker the default is 64 MiB: run with --shm-size=2g (compose: shm_size: 2gb)"
            ),
        ),
        Some((free, total)) => Check::ok(
            name,
            format!("/dev/shm: {} free of {}", human(free), human(total)),
        ),
        None => Check::warn(name, "cannot read /dev/shm's size", why),
    }
}

/// cjm's shared-memory buffers are memfds: one is made and sized.
#[allow(clippy::unnecessary_wraps, reason = "no memfd check off Linux")]
fn memfd() -> Option<Check> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
        let made = memfd_create(
            c"cjm-doctor",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .and_then(|fd| ftruncate(&fd, 1 << 20));
        Some(match made {
            Ok(()) => Check::ok("memfd", "memfd_create works (cjm's shared-memory buffers)"),
            Err(e) => Check::fail(
                "memfd",
                format!("memfd_create failed: {e}"),
                "cjm passes buffers in memfds (Linux 3.17+): a seccomp profile may block memfd_create; allow it",
            ),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn manifests(cfg: &CjmConfig, discovery: &cjm_manifest::Discovery) -> Check {
    let name = "manifests";
    let mut problems: Vec<String> = Vec::new();
    for d in &discovery.found {
        if let Err(e) = Manifest::load_validated(&d.path) {
            problems.push(one_line(&crate::with_causes(&e)));
        }
    }
    problems.extend(
        discovery
            .errors
            .iter()
            .map(|e| one_line(&crate::with_causes(e))),
    );
    let n = discovery.found.len();
    if !problems.is_empty() {
        return Check::fail(
            name,
            format!(
                "{} manifest(s) invalid: {}",
                problems.len(),
                problems.join("; ")
            ),
            "reinstall with `cjm-ctl install-all` or `cjm-ctl regenerate-manifest NAME`, or remove the file",
        );
    }
    if n == 0 {
        return Check::ok(
            name,
            format!("no plugins installed ({})", cfg.manifests_dir().display()),
        );
    }
    let names: Vec<&str> = discovery
        .found
        .iter()
        .map(|d| d.manifest.code.name.as_str())
        .collect();
    Check::ok(name, format!("{n} valid: {}", names.join(", ")))
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn plugins_file(
    loaded: &anyhow::Result<(PathBuf, cjm_manifest::PluginsFile)>,
    discovery: &cjm_manifest::Discovery,
) -> Check {
    let name = "plugins.yaml";
    let (path, file) = match loaded {
        Ok(l) => l,
        Err(e) => {
            return Check::fail(
                name,
                one_line(&format!("{e:#}")),
                "fix it (`cjm-ctl validate FILE` lists every problem)",
            );
        }
    };
    let missing: Vec<&str> = file
        .plugins
        .iter()
        .filter(|p| discovery.get(&p.name).is_none())
        .map(|p| p.name.as_str())
        .collect();
    let detail = format!("{}: {} entries", path.display(), file.plugins.len());
    if missing.is_empty() {
        Check::ok(name, format!("{detail}, all installed"))
    } else {
        Check::warn(
            name,
            format!("{detail}; not installed: {}", missing.join(", ")),
            format!("run `cjm-ctl install-all --plugins {}`", path.display()),
        )
    }
}

/// One installed plugin: its interpreter, and (unless `skip_drift` says why not)
/// its live config schema against its manifest's.
fn plugin(cfg: &CjmConfig, d: &Discovered, skip_drift: Option<&str>, timeout: Duration) -> Check {
    let m = &d.manifest;
    let name = format!("plugin {}", m.code.name);
    let python = Path::new(&m.install.python_path);
    if !python.exists() {
        return Check::fail(
            name,
            format!("its interpreter {} is missing", python.display()),
            format!(
                "run `cjm-ctl repair {0}` (or `cjm-ctl install-all`); `cjm-ctl remove {0}` if it is not wanted",
                m.code.name
            ),
        );
    }
    if let Some(why) = skip_drift {
        return Check::ok(
            name,
            format!(
                "v{}, interpreter present; drift not checked ({why})",
                m.code.version
            ),
        );
    }
    if m.drift_tracking.config_schema_hash.is_none() {
        return Check::ok(
            name,
            format!(
                "v{}, interpreter present; no schema hash recorded (an upgraded v1.0 manifest): `cjm-ctl regenerate-manifest {}` starts tracking drift",
                m.code.version, m.code.name
            ),
        );
    }
    let started = Instant::now();
    let (init, drift) = match live(cfg, m, timeout) {
        Ok(results) => results,
        Err((detail, hint)) => return Check::fail(name, detail, hint),
    };
    let secs = started.elapsed().as_secs_f64();
    let init_note = init
        .err()
        .map(|e| format!("; initialize({{}}) failed: {}", one_line(&e.to_string())));
    match drift {
        Ok(Some(mut drifted)) => {
            drifted.manifest_path = Some(d.path.clone());
            Check::warn(
                name,
                format!("{drifted}{}", init_note.unwrap_or_default()),
                format!(
                    "run `cjm-ctl regenerate-manifest {}` to refresh the manifest",
                    m.code.name
                ),
            )
        }
        Ok(None) => {
            let detail = format!(
                "v{}, config schema matches its manifest (worker checked in {secs:.1}s)",
                m.code.version
            );
            match init_note {
                None => Check::ok(name, detail),
                Some(note) => Check::warn(
                    name,
                    format!("{detail}{note}"),
                    "the plugin may need configuration to initialize; check its config schema",
                ),
            }
        }
        Err(e) => Check::fail(
            name,
            format!(
                "drift check failed: {}{}",
                one_line(&e.to_string()),
                init_note.unwrap_or_default()
            ),
            e.hint()
                .unwrap_or_else(|| "see the plugin's log".to_owned()),
        ),
    }
}

type Live = (
    Result<Value, cjm::proxy::WorkerError>,
    Result<Option<cjm::launch::Drift>, cjm::proxy::WorkerError>,
);

/// Starts `m`'s worker, initializes it with `{}`, checks drift, stops it. The calls
/// run on a thread so a plugin that hangs cannot hang doctor: at the deadline the
/// worker is stopped, which ends its pending call. `Err`: (detail, hint).
fn live(cfg: &CjmConfig, m: &Manifest, timeout: Duration) -> Result<Live, (String, String)> {
    let worker = Worker::spawn(cjm::launch::worker_spec(m, cfg)).map_err(|e| {
        let log = cfg.logs_dir().join(format!("{}.log", m.code.name));
        (
            format!("its worker could not start: {}", one_line(&e.to_string())),
            e.hint().unwrap_or_else(|| format!("see {}", log.display())),
        )
    })?;
    let (tx, rx) = mpsc::channel();
    let (w, manifest) = (worker.clone(), m.clone());
    let calls = std::thread::spawn(move || {
        let init = w.call_blocking(
            "initialize",
            vec![Value::Map(Vec::new())],
            vec![],
            CallOptions::default(),
        );
        let drift = cjm::launch::check_drift(&w, &manifest);
        let _ = tx.send((init, drift));
    });
    let outcome = rx.recv_timeout(timeout);
    worker.stop_blocking();
    let _ = calls.join();
    outcome.map_err(|_| {
        (
            format!(
                "no answer to initialize/get_config_schema within {}s",
                timeout.as_secs_f64()
            ),
            "see the plugin's log; raise --timeout, or skip with --no-drift".to_owned(),
        )
    })
}
