//! Secrets and `WORKER_ENV`: a secret reaches only its plugin's workers, and never
//! a file, an event, a `Debug` output or a log record.

use std::io::Write;
use std::sync::{Arc, Mutex};

use cjm_manager::{InstanceState, LoadSpec, ManagerError, ManagerEvent, SecretValue};
use cjm_proto::Value;
use serde_json::json;

use crate::support::{Project, crash, wait_for};

const TOKEN: &str = "s3cr3t-t0ken-value-9f8e7d";

fn env_of(m: &cjm_manager::Manager, id: &str) -> serde_json::Value {
    m.execute(id, vec![], vec![("action".into(), Value::from("env"))])
        .unwrap()
        .to_json()
}

/// Every file under `dir`, as text, and whether any contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = fs_err::read_dir(dir) else {
        return hits;
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = fs_err::read(&path)
            && String::from_utf8_lossy(&bytes).contains(needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[test]
fn secrets_reach_only_their_plugins_workers_and_nothing_else() {
    let p = Project::new("secrets");
    p.manifest_with(
        "gemini",
        "demo",
        "CounterPlugin",
        Some(json!([
            {"name": "DEMO_TOKEN", "secret": true, "required": true, "description": "the API key"},
            {"name": "VISIBLE", "secret": false, "required": false, "default": "on"},
            // Read as the reference reads them: any true value makes a secret,
            // and a default that is not a string is passed as its text.
            {"name": "OTHER_TOKEN", "secret": 1},
            {"name": "PORT", "default": 8080}
        ])),
    );
    let m = p.manager();
    let mut events = m.subscribe();

    let err = m.load(&LoadSpec::new("gemini")).unwrap_err();
    assert!(matches!(err, ManagerError::MissingSecret { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin gemini needs the secret DEMO_TOKEN (the API key), which is not set"
    );
    assert!(
        err.hint()
            .unwrap()
            .contains("cjm-ctl set-secret gemini DEMO_TOKEN")
    );

    m.set_plugin_secret("gemini", "DEMO_TOKEN", &SecretValue::new(TOKEN))
        .unwrap();
    assert_eq!(m.secret_keys("gemini").unwrap(), ["DEMO_TOKEN"]);
    let a = m.load(&LoadSpec::new("gemini")).unwrap();
    let b = m.load(&LoadSpec::new("gemini").instance("second")).unwrap();
    for id in [&a, &b] {
        let env = env_of(&m, id);
        assert_eq!(
            env["DEMO_TOKEN"], TOKEN,
            "every instance shares the plugin's secret"
        );
        assert_eq!(env["VISIBLE"], "on", "a visible default");
        assert_eq!(env["PORT"], "8080");
        assert_eq!(
            env["OTHER_TOKEN"],
            serde_json::Value::Null,
            "an optional secret that is not set"
        );
    }
    // Another plugin's worker never sees it.
    let other = m.load(&LoadSpec::new("counter")).unwrap();
    assert_eq!(env_of(&m, &other)["DEMO_TOKEN"], serde_json::Value::Null);

    // An operator override of a visible variable respawns the plugin's workers.
    let before = m.info(&a).unwrap().pid;
    m.set_env_override("gemini", "VISIBLE", Some("off".into()))
        .unwrap();
    assert_ne!(m.info(&a).unwrap().pid, before);
    assert_eq!(env_of(&m, &a)["VISIBLE"], "off");
    assert!(
        m.set_env_override("gemini", "DEMO_TOKEN", Some("x".into()))
            .is_err(),
        "a secret is not a visible variable"
    );
    assert!(
        m.set_env_override("gemini", "OTHER_TOKEN", Some("x".into()))
            .is_err(),
        "neither is a truthy secret flag"
    );
    assert!(
        m.set_env_override("gemini", "UNDECLARED", Some("x".into()))
            .is_err()
    );

    // A new value restarts the plugin's running workers so they get it.
    let before = m.info(&a).unwrap().pid;
    m.set_plugin_secret(
        "gemini",
        "DEMO_TOKEN",
        &SecretValue::new(format!("{TOKEN}-2")),
    )
    .unwrap();
    assert_ne!(m.info(&a).unwrap().pid, before);
    assert_eq!(env_of(&m, &a)["DEMO_TOKEN"], format!("{TOKEN}-2"));

    // Nowhere else: logs, manifests, the config store, events, Debug output.
    m.disable(&a).unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(format!("{e:?}"));
    }
    for text in seen
        .iter()
        .chain([&format!("{m:?}"), &format!("{:?}", m.worker(&b))])
    {
        assert!(!text.contains(TOKEN), "leaked: {text}");
    }
    let leaks: Vec<String> = files_containing(&p.dir.join("data"), TOKEN)
        .into_iter()
        .filter(|f| !f.ends_with("secrets/secrets.json"))
        .collect();
    assert!(leaks.is_empty(), "the secret is in {leaks:?}");
    assert_eq!(
        files_containing(&p.dir.join("data/secrets"), TOKEN).len(),
        1,
        "it is in the secret store"
    );
}

/// Every log record of the process, as text, from the moment it is installed.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Installs a subscriber that keeps every record at every level, from every
    /// thread (supervisors, loaders and the proxy's threads log too). Global:
    /// nextest runs each test in a process of its own.
    fn install() -> Self {
        let captured = Self::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_secret_never_reaches_a_log_record() {
    let logs = Captured::install();
    let p = Project::new("secrets-in-logs");
    p.manifest_with(
        "gemini",
        "demo",
        "CounterPlugin",
        Some(json!([{"name": "DEMO_TOKEN", "secret": true, "required": true}])),
    );
    let m = p.manager();
    m.set_plugin_secret("gemini", "DEMO_TOKEN", &SecretValue::new(TOKEN))
        .unwrap();
    // Every path that logs: a load (the worker's environment holds the secret),
    // calls (one returns the secret, one fails), a crash and its restart.
    let id = m.load(&LoadSpec::new("gemini")).unwrap();
    assert_eq!(env_of(&m, &id)["DEMO_TOKEN"], TOKEN, "the worker has it");
    let err = m
        .execute(&id, vec![], vec![("action".into(), Value::from("fail"))])
        .unwrap_err();
    assert!(
        err.to_string().contains("not what this plugin takes"),
        "{err}"
    );
    let mut events = m.subscribe();
    crash(&m, &id);
    wait_for(&mut events, |e| {
        matches!(
            e,
            ManagerEvent::State {
                from: InstanceState::Starting,
                to: InstanceState::Ready,
                ..
            }
        )
    });
    assert_eq!(env_of(&m, &id)["DEMO_TOKEN"], TOKEN, "the new worker too");
    m.unload(&id).unwrap();

    let text = logs.text();
    assert!(
        text.contains(&format!(
            "plugin gemini (instance {id}) exited with status 3"
        )),
        "the crash was logged, so the capture works: {text}"
    );
    assert!(!text.contains(TOKEN), "the secret is in the logs: {text}");
}
