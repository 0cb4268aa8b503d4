//! A scratch project with manifests for the manager's fixture plugins, and a
//! manager and queue on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cjm_core::{CjmConfig, PluginTaxonomy};
use cjm_manager::{LoadSpec, Manager, ManagerOptions};
use cjm_manifest::Manifest;
use cjm_proto::Value;
use cjm_queue::{JobQueue, QueueOptions};
use serde_json::json;

/// A scratch data dir, removed on drop.
pub(crate) struct Project {
    pub(crate) dir: cjm_testkit::Scratch,
}

impl Project {
    pub(crate) fn new(name: &str) -> Self {
        let dir = cjm_testkit::Scratch::new(&format!("queue-{name}"));
        fs_err::create_dir_all(dir.join("data/manifests")).unwrap();
        fs_err::create_dir_all(dir.join("data/data")).unwrap();
        let p = Self { dir };
        for name in ["counter", "other", "third", "fourth"] {
            p.manifest(name);
        }
        p
    }

    /// A manifest for the manager's `Counter` fixture under plugin name `name`.
    fn manifest(&self, name: &str) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cjm-manager/tests/fixtures");
        let mut m = Manifest::default();
        m.install.python_path = cjm_testkit::python().display().to_string();
        m.install
            .env_vars
            .insert("PYTHONPATH".into(), json!(fixtures.display().to_string()));
        m.code.name = name.into();
        m.code.version = "1.0.0".into();
        m.code.description = "a test plugin".into();
        m.code.module = "manager_plugins".into();
        m.code.class_name = "Counter".into();
        m.code.interface = "cjm_demo_plugin_system.CounterPlugin".into();
        m.code.taxonomy = Some(PluginTaxonomy {
            domain: "demo".into(),
            role: "CounterPlugin".into(),
            interface_fqcn: m.code.interface.clone(),
        });
        m.code.config_schema = json!({"type": "object", "properties": {
            "step": {"type": "integer", "default": 1},
            "label": {"type": "string", "default": "x"},
            "rendezvous": {"type": "integer", "default": 0},
        }})
        .as_object()
        .cloned();
        m.refresh_config_schema_hash();
        m.write(self.dir.join(format!("data/manifests/{name}.json")))
            .unwrap();
    }

    fn config(&self) -> CjmConfig {
        let options = cjm_core::LoadOptions {
            data_dir: Some(self.dir.join("data")),
            ..Default::default()
        };
        cjm_core::load_config(&options, &|_| None, self.dir.path()).unwrap()
    }

    /// A manager with instances of `plugins` loaded.
    pub(crate) fn manager(&self, plugins: &[&str]) -> Manager {
        let m = Manager::new(
            self.config(),
            ManagerOptions {
                search_paths: Some(vec![self.dir.join("data/manifests")]),
                reap_interval: None,
                ..ManagerOptions::default()
            },
        );
        for p in plugins {
            m.load(&LoadSpec::new(*p)).unwrap();
        }
        m
    }

    /// [`manager`](Self::manager) with options of the test's; the instances
    /// are loaded lazily (their workers start on their first call).
    pub(crate) fn manager_with(
        &self,
        plugins: &[&str],
        f: impl FnOnce(&mut ManagerOptions),
    ) -> Manager {
        let mut options = ManagerOptions {
            search_paths: Some(vec![self.dir.join("data/manifests")]),
            reap_interval: None,
            ..ManagerOptions::default()
        };
        f(&mut options);
        let m = Manager::new(self.config(), options);
        for p in plugins {
            m.load(&LoadSpec::new(*p).lazy()).unwrap();
        }
        m
    }

    pub(crate) fn queue_path(&self) -> PathBuf {
        self.dir.join("data/queue.db")
    }

    pub(crate) fn options(&self) -> QueueOptions {
        QueueOptions::new(self.queue_path())
    }

    /// A started queue on a manager with `plugins` loaded.
    pub(crate) async fn queue(&self, plugins: &[&str]) -> JobQueue {
        let q = JobQueue::open(self.manager(plugins), self.options())
            .await
            .unwrap();
        q.start();
        q
    }

    /// A marker file in the plugins' data folder.
    pub(crate) fn marker(&self, name: &str) -> PathBuf {
        self.dir.join("data/data").join(name)
    }

    /// How many calls the fixture has logged as started (`action="block"`).
    pub(crate) fn blocked_calls(&self) -> usize {
        fs_err::read_to_string(self.marker("hooks.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "call-start")
            .count()
    }
}

/// `action=…` for the fixture.
pub(crate) fn action(a: &str) -> Vec<(String, Value)> {
    vec![("action".into(), Value::from(a))]
}

/// Waits (at most 20 s) until `cond` holds.
pub(crate) async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// At most this long for anything a test awaits.
pub(crate) const LIMIT: Option<Duration> = Some(Duration::from_secs(20));
