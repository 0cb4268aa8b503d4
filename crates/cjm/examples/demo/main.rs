//! `cargo xtask demo`: example plugins installed from a plugins.yaml into their own
//! environments, then example plugins in their own worker processes, then the
//! scheduler on a scripted fake GPU (`scheduling.rs`), then the durable job
//! queue with a host process killed mid-queue (`queue.rs`; the demo runs
//! itself as that host with `--queue-host DATA`).
//!
//! Needs `CJM_PYTHON` (an interpreter with the cjm-worker package and numpy),
//! `CJM_UV` and `CJM_WORKER_WHEEL`, which `cargo xtask demo` prepares.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod queue;
mod scheduling;

use cjm::proto::{Array, Buffer, Value};
use cjm::proxy::{CallOptions, CancelPolicy, Event, Worker, WorkerError, WorkerSpec};

/// A path from the environment `cargo xtask demo` prepares.
fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name).map_or_else(
        || {
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "demo: set {name}, or run `cargo xtask demo`, which does"
            );
            std::process::exit(2);
        },
        PathBuf::from,
    )
}

fn spec(plugin: &str, class: &str) -> WorkerSpec {
    let python = env_path("CJM_PYTHON");
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    let mut s = WorkerSpec::new(plugin, python, "demo_plugins", class).python_path(plugins);
    s.log_file = Some(std::env::temp_dir().join(format!("cjm-demo/logs/{plugin}.log")));
    s
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

fn heading(n: u32, title: &str) {
    out(&format!("\n\x1b[1m{n}. {title}\x1b[0m"));
}

/// Section 1: `examples/plugins.yaml` installed into a fresh data folder, each plugin
/// in its own environment, then both called from their manifests.
fn install_from_plugins_yaml() -> Result<cjm::core::CjmConfig, Box<dyn std::error::Error>> {
    use cjm::env::{EnvStore, Installer};
    use cjm::manifest::PluginsFile;

    heading(
        1,
        "Plugins installed from plugins.yaml, each in its own environment",
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    // The example packages, built into the wheelhouse plugins.yaml points at.
    let wheelhouse = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cjm/demo-wheelhouse");
    let built = std::process::Command::new(env_path("CJM_PYTHON"))
        .arg(examples.join("packages/build_wheels.py"))
        .arg(&wheelhouse)
        .output()?;
    if !built.status.success() {
        return Err(String::from_utf8_lossy(&built.stderr).into_owned().into());
    }
    let data = std::env::temp_dir().join(format!("cjm-demo-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&data);
    let cfg = cjm::core::load_config(
        &cjm::core::LoadOptions {
            data_dir: Some(data.clone()),
            ..Default::default()
        },
        &|_| None,
        &examples,
    )?;
    let file = PluginsFile::load(examples.join("plugins.yaml"))?;
    let store = EnvStore::new(
        data.join("envs"),
        env_path("CJM_UV"),
        env!("CARGO_PKG_VERSION"),
    );
    let installer = Installer::new(store, cfg.manifests_dir(), env_path("CJM_WORKER_WHEEL"))
        .plugin_data_dir(cfg.plugin_data_dir())
        .base_dir(&examples);
    let timer = Instant::now();
    let outcomes = installer.install_all(&file.plugins, false, 2, &|_, _| {});
    let took = timer.elapsed();
    for outcome in &outcomes {
        let done = outcome.as_ref().map_err(ToString::to_string)?;
        let m = &done.manifest;
        out(&format!(
            "   {} {} ({}): environment {}, manifest {}",
            m.code.name,
            m.code.version,
            done.source.as_deref().unwrap_or("meta"),
            done.env_key,
            done.manifest_path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
    }
    out(&format!(
        "   installed {} plugins in {took:.1?} (uv, from a local wheelhouse)",
        outcomes.len()
    ));
    let timer = Instant::now();
    let again = installer.install_all(&file.plugins, false, 2, &|_, _| {});
    let unchanged = again
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|d| d.unchanged))
        .count();
    out(&format!(
        "   installing again: {unchanged} of {} up to date, nothing to do, {:.1?}",
        again.len(),
        timer.elapsed()
    ));
    for done in outcomes.iter().flatten() {
        // The manifest is all the host needs: the plugin is never imported here.
        let worker = Worker::spawn(cjm::launch::worker_spec(&done.manifest, &cfg))?;
        worker.call_blocking(
            "initialize",
            vec![Value::Map(vec![])],
            vec![],
            CallOptions::default(),
        )?;
        let reply = worker.execute_blocking(vec![], vec![("text".into(), Value::from("Hello"))])?;
        out(&format!(
            "   {} -> {}",
            done.manifest.code.name,
            reply.to_json()
        ));
        worker.stop_blocking();
    }
    Ok(cfg)
}

/// Section 2: the installed plugins through the manager: two instances with their
/// own configs, a config error, a plugin that needs a secret, and a crash loop
/// quarantined while the other instances keep working.
fn through_the_manager(cfg: cjm::core::CjmConfig) -> Result<(), Box<dyn std::error::Error>> {
    use cjm::manager::{
        LoadSpec, Manager, ManagerEvent, ManagerOptions, RestartPolicy, SecretValue,
    };

    heading(
        2,
        "The manager: instances, validated config, secrets, supervision",
    );
    let data = cfg.data_dir.clone();
    let manager = Manager::new(
        cfg,
        ManagerOptions {
            restart: RestartPolicy {
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                max_crashes: 2,
                window: Duration::from_mins(1),
            },
            ..ManagerOptions::default()
        },
    );
    let config = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let text = || vec![("text".to_owned(), Value::from("Hi"))];

    let loaded = manager.load_many(&[
        LoadSpec::new("cjm-text-plugin-shout")
            .instance("loud")
            .config(config(serde_json::json!({"repeat": 3}))),
        LoadSpec::new("cjm-text-plugin-shout")
            .instance("quiet")
            .config(config(serde_json::json!({"repeat": 1}))),
    ]);
    for id in loaded {
        let id = id?;
        let reply = manager.execute(&id, vec![], text())?;
        out(&format!("   instance {id:<6} -> {}", reply.to_json()));
    }

    out("   a config that does not fit the plugin's schema is refused before any worker starts:");
    let bad = manager.load(
        &LoadSpec::new("cjm-text-plugin-shout")
            .instance("bad")
            .config(config(serde_json::json!({"repeat": "three", "volume": 11}))),
    );
    if let Err(e) = bad {
        for line in e.to_string().lines() {
            out(&format!("     {line}"));
        }
    }

    if let Err(e) = manager.load(&LoadSpec::new("cjm-text-plugin-echo")) {
        out(&format!("   {e}"));
        if let Some(h) = e.hint() {
            out(&format!("     hint: {h}"));
        }
    }
    manager.set_plugin_secret(
        "cjm-text-plugin-echo",
        "ECHO_API_KEY",
        &SecretValue::new("demo-key-0000"),
    )?;
    let echo = manager.load(&LoadSpec::new("cjm-text-plugin-echo"))?;
    out(&format!(
        "   secret stored; {echo} -> {}",
        manager.execute(&echo, vec![], text())?.to_json()
    ));

    let mut events = manager.subscribe();
    // Break the plugin for good: every start of its worker dies from now on.
    fs_err::create_dir_all(data.join("data"))?;
    fs_err::write(data.join("data").join("echo-broken"), "")?;
    let _ = manager.execute(
        &echo,
        vec![],
        vec![("action".to_owned(), Value::from("crash"))],
    );
    while let Some(e) = events.blocking_recv() {
        match e {
            ManagerEvent::Crashed(r) => out(&format!("   crash: {r}")),
            ManagerEvent::RestartScheduled { delay, .. } => {
                out(&format!("   restart in {delay:.0?}"));
            }
            ManagerEvent::CrashLooping {
                instance_id,
                reason,
            } => {
                out(&format!("   {instance_id} quarantined: {reason}"));
                break;
            }
            _ => {}
        }
    }
    out(&format!(
        "   meanwhile loud -> {}",
        manager.execute("loud", vec![], text())?.to_json()
    ));
    drop(manager);
    let _ = fs_err::remove_dir_all(&data);
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "the demo reads top to bottom, like a script"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, data] = args.as_slice()
        && flag == "--queue-host"
    {
        return queue::host(Path::new(data));
    }
    out("cjm demo: every plugin below runs in its own Python worker process.");

    let installed = install_from_plugins_yaml()?;
    through_the_manager(installed)?;

    heading(3, "A call");
    let started = Instant::now();
    let stats = Worker::spawn(spec("text-stats", "TextStats"))?;
    let spawned = started.elapsed();
    stats.call_blocking(
        "initialize",
        vec![Value::map([("lowercase", Value::Bool(true))])],
        vec![],
        CallOptions::default(),
    )?;
    let text = "The cat sat on the mat and the dog sat on the log";
    let timer = Instant::now();
    let result = stats.execute_blocking(vec![Value::from(text)], vec![])?;
    let call = timer.elapsed();
    out(&format!(
        "   worker pid {} started in {spawned:.0?}",
        stats.pid()
    ));
    out(&format!("   execute({text:?}) -> {}", result.to_json()));
    let n = 2000;
    let timer = Instant::now();
    for _ in 0..n {
        stats.execute_blocking(vec![Value::from("a b c")], vec![])?;
    }
    out(&format!(
        "   first call {call:.0?}; {n} more calls averaged {:.1} µs each",
        timer.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    ));

    heading(4, "A streamed result with progress");
    let tr = Worker::spawn(spec("transcriber", "Transcriber"))?;
    let mut events = tr.events();
    let mut stream = tr.stream(vec![], vec![("segments".into(), Value::Int(8))])?;
    let mut segments = Vec::new();
    while let Some(chunk) = stream.next_blocking() {
        let chunk = chunk?;
        while let Ok(e) = events.try_recv() {
            if let Event::Progress {
                progress, message, ..
            } = e
            {
                let filled = (progress * 30.0).round() as usize;
                let mut o = std::io::stdout().lock();
                let _ = write!(
                    o,
                    "\r   [{}{}] {:>3.0}% {message}   ",
                    "█".repeat(filled),
                    "·".repeat(30 - filled),
                    progress * 100.0
                );
                let _ = o.flush();
            }
        }
        segments.push(
            chunk
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        );
    }
    out("");
    out(&format!("   transcript: {}", segments.join(" ")));

    heading(5, "A large array passed zero-copy");
    let img = Worker::spawn(spec("image-ops", "ImageOps"))?;
    let (height, width) = (8192usize, 8192usize);
    let len = height * width * 4;
    let mut buf = img.alloc(len)?;
    for (i, px) in buf.as_mut_slice().iter_mut().enumerate() {
        *px = (i % 251) as u8;
    }
    let data = Buffer::Shm(buf.freeze());
    let arr = Value::Array(Array {
        dtype: "|u1".into(),
        shape: vec![height as u64, width as u64, 4],
        data: data.clone(),
    });
    let timer = Instant::now();
    let mean = img.execute_blocking(vec![arr.clone()], vec![])?;
    let took = timer.elapsed();
    out(&format!(
        "   {} MiB uint8 image ({height}x{width}x4) -> worker: {} in {took:.1?}",
        len >> 20,
        mean.to_json()
    ));
    let timer = Instant::now();
    let inverted = img.execute_blocking(vec![arr], vec![("op".into(), Value::from("invert"))])?;
    let took = timer.elapsed();
    if let Value::Array(a) = &inverted {
        let ok = a
            .data
            .iter()
            .take(1 << 20)
            .zip(data.iter())
            .all(|(x, y)| *x == 255 - *y);
        out(&format!(
            "   inverted by the plugin into its own shared memory: {} MiB back in {took:.1?}, zero-copy: {}, correct: {ok}",
            a.data.len() >> 20,
            a.data.is_shared()
        ));
    }

    heading(6, "A cancellation");
    let flaky = Worker::spawn(spec("flaky", "Flaky"))?;
    let call = flaky.start("execute", vec![Value::from("slow")], vec![])?;
    // Give the call a moment to be running before cancelling it.
    let _ = flaky.worker_stats_blocking(Duration::from_secs(5))?;
    let timer = Instant::now();
    let phase = flaky.cancel_blocking(call.id(), CancelPolicy::default())?;
    let outcome = call.wait();
    let how = phase.map_or_else(
        || "after it had already finished".to_owned(),
        |p| p.to_string(),
    );
    out(&format!(
        "   the call was cancelled {how}, in {:.1?}",
        timer.elapsed()
    ));
    if let Err(e) = outcome {
        out(&format!("   the caller got: {e}"));
    }

    heading(7, "A crash the host survives");
    match flaky.execute_blocking(vec![Value::from("segfault")], vec![]) {
        Err(e @ WorkerError::Died { .. }) => {
            out(&format!("   {e}"));
            if let Some(hint) = e.hint() {
                out(&format!("   hint: {hint}"));
            }
        }
        other => out(&format!("   unexpected: {other:?}")),
    }
    flaky.restart_blocking()?;
    let again = flaky.execute_blocking(vec![Value::from("ok")], vec![])?;
    out(&format!(
        "   restarted as pid {}; next call -> {}",
        flaky.pid(),
        again.to_json()
    ));

    for worker in [&stats, &tr, &img, &flaky] {
        worker.stop_blocking();
    }
    scheduling::on_a_fake_gpu()?;
    queue::durable_queue()?;
    out("\nAll workers stopped; nothing left running.");
    Ok(())
}
