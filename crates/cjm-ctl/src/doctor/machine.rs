//! The checks of the machine and the configuration: cjm.yaml, the data dir, uv, the
//! worker wheel, conda, /dev/shm, memfds and worker cgroups.

//! `doctor`: everything cjm relies on, checked, each with what to do when it is not
//! right.
//!
//! Each check is `ok`, `warn` or `fail`. Exit 1 when one fails (with `--strict`, when
//! one warns), 0 otherwise. A drifted plugin is a warning: it still runs (the
//! reference only logs drift when it loads a plugin), but its manifest describes an
//! older config schema until `cjm-ctl regenerate-manifest` rewrites it.

use std::path::{Path, PathBuf};

use cjm::core::{CjmConfig, CondaType};
use cjm::manifest::Discovered;
use cjm_env::CondaRuntime;

use super::Check;
use crate::ctx::Ctx;
use crate::plugins::{env_key, human};

/// Whether each worker gets a cgroup of its own (which holds what it starts, even
/// a grandchild that calls `setsid`).
pub(super) fn worker_cgroups() -> Check {
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

/// The GPUs the scheduler will see (none is never a failure: cjm runs without).
pub(super) fn gpus() -> Check {
    let gpus = cjm::sched::Gpus::detect();
    let detail = match gpus.sample() {
        Ok(sample) if !sample.devices.is_empty() => {
            let devices: Vec<String> = sample
                .devices
                .iter()
                .map(|d| {
                    format!(
                        "GPU {} {} ({} free of {})",
                        d.index,
                        d.name,
                        cjm::sched::amount::show(d.free_bytes),
                        cjm::sched::amount::show(d.total_bytes)
                    )
                })
                .collect();
            format!("{}: {}", gpus.describe(), devices.join(", "))
        }
        Ok(_) => gpus.describe(),
        Err(e) => {
            return Check::warn(
                "GPUs",
                format!("{}: {e}", gpus.describe()),
                "check the NVIDIA driver (`nvidia-smi`); until it reads, calls are scheduled as if there were no GPU",
            );
        }
    };
    Check::ok("GPUs", detail)
}

/// The memory the scheduler admits calls into, and how it measures workers.
pub(super) fn memory() -> Check {
    match cjm::sched::MachineSample::read() {
        Ok(m) => {
            let show = cjm::sched::amount::show;
            let limit = m.limit.as_ref().map_or_else(String::new, |l| {
                format!(" (cgroup limit {})", show(l.limit_bytes))
            });
            let pressure = m.pressure.as_ref().map_or_else(String::new, |p| {
                format!("; pressure {:.1} % (some, 10 s)", p.some_avg10)
            });
            let workers = match cjm::proxy::memory_accounting() {
                Ok(dir) => format!(
                    "workers measured by their own cgroups under {} (memory.current, \
                     memory.peak, memory.events; hard limits with memory.max)",
                    dir.display()
                ),
                Err(why) => format!(
                    "workers measured through procfs (RSS of each worker's process tree), \
                     not cgroups: {why}"
                ),
            };
            let detail = format!(
                "{} available of {}{limit}{pressure}; {workers}",
                show(m.free_bytes()),
                show(m.capacity_bytes())
            );
            Check::ok("memory", detail)
        }
        Err(e) => Check::warn(
            "memory",
            format!("cannot read /proc/meminfo: {e}"),
            "calls are admitted as if memory were unlimited; check that /proc is mounted",
        ),
    }
}

pub(super) fn configuration(cfg: &CjmConfig) -> Check {
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

pub(super) fn data_dir(cfg: &CjmConfig) -> Check {
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
pub(super) fn free_space(path: &Path) -> Option<(u64, u64)> {
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

pub(super) fn uv(ctx: &Ctx) -> Check {
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
    match crate::setup_runtime::tool_version(&path) {
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

pub(super) fn worker_wheel(ctx: &Ctx) -> Check {
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
pub(super) fn conda_users(
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

pub(super) fn conda(cfg: &CjmConfig, users: &[String]) -> Option<Check> {
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

/// Below this much free space in /dev/shm, warn (docker's default is 64 MiB).
pub(super) const SHM_MIN_FREE: u64 = 512 * 1024 * 1024;

pub(super) fn shm() -> Check {
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
pub(super) fn memfd() -> Option<Check> {
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
