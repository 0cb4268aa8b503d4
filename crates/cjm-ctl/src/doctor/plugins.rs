//! The checks of what is installed: manifests, plugins.yaml, secrets, and each plugin
//! (its environment, its drift, and optionally a live start).

//! `doctor`: everything cjm relies on, checked, each with what to do when it is not
//! right.
//!
//! Each check is `ok`, `warn` or `fail`. Exit 1 when one fails (with `--strict`, when
//! one warns), 0 otherwise. A drifted plugin is a warning: it still runs (the
//! reference only logs drift when it loads a plugin), but its manifest describes an
//! older config schema until `cjm-ctl regenerate-manifest` rewrites it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cjm::core::CjmConfig;
use cjm::manifest::{Discovered, Discovery, Manifest};
use cjm::proto::Value;
use cjm::proxy::{CallOptions, Worker};

use super::Check;
use crate::ctx::Ctx;

/// The secret store is readable, and every secret a plugin requires is set.
pub(super) fn secrets(ctx: &Ctx, discovery: &Discovery) -> Check {
    let name = "secrets";
    let store = crate::stores::secret_store(ctx);
    let Ok(rt) = crate::stores::tokio_runtime() else {
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

pub(super) fn manifests(cfg: &CjmConfig, discovery: &cjm_manifest::Discovery) -> Check {
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

pub(super) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn plugins_file(
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
pub(super) fn plugin(
    cfg: &CjmConfig,
    d: &Discovered,
    skip_drift: Option<&str>,
    timeout: Duration,
) -> Check {
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

pub(super) type Live = (
    Result<Value, cjm::proxy::WorkerError>,
    Result<Option<cjm::launch::Drift>, cjm::proxy::WorkerError>,
);

/// Starts `m`'s worker, initializes it with `{}`, checks drift, stops it. The calls
/// run on a thread so a plugin that hangs cannot hang doctor: at the deadline the
/// worker is stopped, which ends its pending call. `Err`: (detail, hint).
pub(super) fn live(
    cfg: &CjmConfig,
    m: &Manifest,
    timeout: Duration,
) -> Result<Live, (String, String)> {
    let worker = Worker::spawn(cjm::launch::worker_spec(m, cfg)).map_err(|e| {
        let log = cjm::launch::log_file(cfg, &m.code.name);
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
