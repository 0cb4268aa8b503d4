//! The suite's own helpers: a scratch project with manifests for the fixture
//! plugins, managers on it, and bounded waits on events and files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cjm_core::{CjmConfig, PluginTaxonomy};
use cjm_manager::{Clock, Manager, ManagerEvent, ManagerOptions, ManualClock, RestartPolicy};
use cjm_manifest::Manifest;
use serde_json::{Map, Value, json};

pub(crate) use cjm_testkit::python;

/// A scratch data dir with manifests for the fixture plugins, removed on drop.
pub(crate) struct Project {
    pub(crate) dir: PathBuf,
    pub(crate) clock: Arc<ManualClock>,
}

impl Project {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cjm-manager-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("data/manifests")).unwrap();
        fs_err::create_dir_all(dir.join("data/data")).unwrap();
        let p = Self {
            dir,
            clock: Arc::new(ManualClock::default()),
        };
        p.manifest("counter", "demo", "CounterPlugin");
        p
    }

    /// Writes a manifest for the `Counter` fixture under plugin name `name`.
    pub(crate) fn manifest(&self, name: &str, domain: &str, role: &str) {
        self.manifest_with(name, domain, role, None);
    }

    /// The same, with a `WORKER_ENV` contract.
    pub(crate) fn manifest_with(
        &self,
        name: &str,
        domain: &str,
        role: &str,
        worker_env: Option<Value>,
    ) {
        self.manifest_of(name, domain, role, worker_env, "Counter");
    }

    /// A manifest for fixture class `class` under plugin name `name`.
    pub(crate) fn manifest_of(
        &self,
        name: &str,
        domain: &str,
        role: &str,
        worker_env: Option<Value>,
        class: &str,
    ) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut m = Manifest::default();
        m.install.python_path = python().display().to_string();
        m.install
            .env_vars
            .insert("PYTHONPATH".into(), json!(fixtures.display().to_string()));
        m.code.name = name.into();
        m.code.version = "1.0.0".into();
        m.code.description = "a test plugin".into();
        m.code.module = "manager_plugins".into();
        m.code.class_name = class.into();
        m.code.interface = format!("cjm_{domain}_plugin_system.{role}");
        m.code.taxonomy = Some(PluginTaxonomy {
            domain: domain.into(),
            role: role.into(),
            interface_fqcn: m.code.interface.clone(),
        });
        let schema = if class == "GpuModel" {
            json!({"type": "object", "properties": {
                "vram_mb": {"type": "integer", "default": 0},
                "ram_mb": {"type": "integer", "default": 0},
            }})
        } else if class == "ModelPlugin" {
            json!({"type": "object", "properties": {
                "model": {"type": "string", "default": "base"},
                "temperature": {"type": "number", "default": 0.5},
            }})
        } else {
            json!({
                "type": "object",
                "properties": {
                    "step": {"type": "integer", "default": 1, "minimum": 1},
                    "label": {"type": "string", "default": "x"},
                    "rendezvous": {"type": "integer", "default": 0},
                },
            })
        };
        m.code.config_schema = schema.as_object().cloned();
        m.code.worker_env = worker_env.and_then(|v| v.as_array().cloned());
        m.refresh_config_schema_hash();
        m.write(self.dir.join(format!("data/manifests/{name}.json")))
            .unwrap();
    }

    /// A manifest for the `GpuModel` fixture under plugin name `name`, whose
    /// `resources` block declares these amounts (as the reference's
    /// schedulers read them).
    pub(crate) fn gpu_manifest(&self, name: &str, resources: Value) {
        self.manifest_of(name, "demo", "GpuPlugin", None, "GpuModel");
        self.declare(name, resources);
    }

    /// Sets the `resources` block of plugin `name`'s manifest.
    pub(crate) fn declare(&self, name: &str, resources: Value) {
        let path = self.dir.join(format!("data/manifests/{name}.json"));
        let mut m = Manifest::load(&path).unwrap();
        let Value::Object(block) = resources else {
            panic!("resources must be an object")
        };
        m.code.resources = Some(cjm_core::ResourceRequirements {
            requires_gpu: block
                .get("requires_gpu")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            extra: block
                .into_iter()
                .filter(|(k, _)| k != "requires_gpu")
                .collect(),
            ..Default::default()
        });
        m.write(path).unwrap();
    }

    pub(crate) fn config(&self) -> CjmConfig {
        let options = cjm_core::LoadOptions {
            data_dir: Some(self.dir.join("data")),
            ..Default::default()
        };
        cjm_core::load_config(&options, &|_| None, &self.dir).unwrap()
    }

    /// A manager on the manual clock, with a fast restart policy.
    pub(crate) fn manager(&self) -> Manager {
        Manager::new(self.config(), self.options())
    }

    /// The options [`manager`](Self::manager) uses: this project's manifests, the
    /// manual clock, no reaper thread.
    pub(crate) fn options(&self) -> ManagerOptions {
        let clock: Arc<dyn Clock> = self.clock.clone();
        ManagerOptions {
            search_paths: Some(vec![self.dir.join("data/manifests")]),
            restart: RestartPolicy {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                max_crashes: 3,
                window: Duration::from_mins(1),
            },
            clock,
            reap_interval: None,
            persist: true,
            ..ManagerOptions::default()
        }
    }

    /// A marker file in the plugins' data folder.
    pub(crate) fn marker(&self, name: &str) -> PathBuf {
        self.dir.join("data/data").join(name)
    }

    pub(crate) fn hooks(&self) -> Vec<String> {
        fs_err::read_to_string(self.marker("hooks.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.dir);
    }
}

pub(crate) fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Waits (at most 20 s) for an event `pick` accepts; the events before it are
/// returned too, in order.
pub(crate) fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<ManagerEvent>,
    mut pick: impl FnMut(&ManagerEvent) -> bool,
) -> Vec<ManagerEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut seen = Vec::new();
    rt.block_on(async {
        loop {
            let e = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no matching event within 20 s; saw {seen:#?}"))
                .expect("the event stream ended");
            let done = pick(&e);
            seen.push(e);
            if done {
                return;
            }
        }
    });
    seen
}

/// Waits (at most 20 s) until `cond` holds: for counters and files that have no
/// event to wait on.
pub(crate) fn eventually(what: &str, cond: impl Fn() -> bool) {
    assert!(
        cjm_testkit::eventually(Duration::from_secs(20), cond).is_some(),
        "timed out waiting for {what}"
    );
}

/// Makes instance `id`'s worker exit with status 3 in a call, which fails saying so.
pub(crate) fn crash(m: &Manager, id: &str) {
    let err = m
        .execute(
            id,
            vec![],
            vec![("action".into(), cjm_proto::Value::from("crash"))],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("exited with status 3"),
        "the caller learns how: {err}"
    );
}

/// Whether process `pid` has exited (gone, or a zombie not reaped yet).
pub(crate) fn exited(pid: u32) -> bool {
    fs_err::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// The instance an event is about.
pub(crate) fn instance_of(e: &ManagerEvent) -> &str {
    e.instance_id()
}
