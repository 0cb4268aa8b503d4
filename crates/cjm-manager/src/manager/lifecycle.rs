//! An instance's life: loading (ids, configuration, the worker started unless
//! lazy), starting and stopping its worker, unloading, reloading, resetting a
//! quarantined one, and enabling or disabling it with the deferred hooks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cjm_proto::Value;
use cjm_proxy::{CallOptions, Worker, WorkerError};
use serde_json::Map;

use super::supervise::{reaper, supervise};
use super::{LoadSpec, Manager};
use crate::error::ManagerError;
use crate::instance::{Gate, Hook, Instance, Placement, Status, lock};
use crate::state::{InstanceState, ManagerEvent};

impl Manager {
    /// Loads an instance: its configuration checked, its worker started unless
    /// `lazy`. Loading an id that is loaded already returns it unchanged.
    pub fn load(&self, spec: &LoadSpec) -> Result<String, ManagerError> {
        let manifest = self.installed(&spec.plugin)?;
        let block = manifest.code.resources.as_ref().map(|r| &r.extra);
        if let Some((key, value)) = cjm_sched::footprint::bad_amount(block) {
            return Err(ManagerError::BadResources {
                plugin: spec.plugin.clone(),
                key,
                value,
            });
        }
        let id = self.instance_id(spec)?;
        if let Some(existing) = self.get(&id) {
            return Ok(existing.id.clone());
        }
        let (config, enabled) = self.effective_config(spec, &id, &manifest)?;
        if spec.idle_ttl.is_some() {
            self.start_reaper(&spec.plugin, &id)?;
        }
        let mut worker_spec = crate::launch::worker_spec(&manifest, &self.inner.cfg);
        worker_spec.start_method = self.inner.start_method;
        worker_spec.env.extend(spec.env.iter().cloned());
        worker_spec.memory_limit_bytes = spec
            .memory_limit_bytes
            .or_else(|| declared_limit(&manifest));
        if id != spec.plugin {
            worker_spec.instance_id = Some(id.clone());
        }
        let mut placement = Placement::of(&manifest);
        let config_hash = Instance::hash_of(&config);
        placement.record = self.record_of(&id, &config_hash);
        let inst = Arc::new(Instance {
            id: id.clone(),
            plugin: spec.plugin.clone(),
            manifest,
            spec: worker_spec,
            config: Mutex::new(config),
            worker: Mutex::new(None),
            lifecycle: Mutex::new(()),
            status: Mutex::new(Status {
                state: InstanceState::Stopped,
                crashes: crate::state::CrashHistory::default(),
                last_crash: None,
                quarantine: None,
                pending_hook: None,
                last_used: self.inner.clock.now(),
            }),
            enabled: AtomicBool::new(enabled),
            in_flight: AtomicUsize::new(0),
            gate: spec.max_concurrent.map(Gate::new),
            idle_ttl: spec.idle_ttl,
            generation: std::sync::atomic::AtomicU64::new(0),
            placement: Mutex::new(placement),
            starting_pid: std::sync::atomic::AtomicU32::new(0),
            config_hash: Mutex::new(config_hash),
            kept: AtomicBool::new(false),
        });
        {
            let mut all = self
                .inner
                .instances
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(existing) = all.get(&id) {
                return Ok(existing.id.clone());
            }
            all.insert(id.clone(), Arc::clone(&inst));
        }
        if let Err(source) = self.start_monitor().and_then(|()| self.start_recorder()) {
            self.remove(&id);
            return Err(ManagerError::Thread {
                plugin: spec.plugin.clone(),
                instance_id: id,
                role: "resource monitor or recorder",
                source,
            });
        }
        if !spec.lazy
            && let Err(e) = self.place(&inst)
        {
            self.remove(&id);
            return Err(e);
        }
        self.maybe_monitor(&inst);
        Ok(id)
    }

    /// Loads several instances at once (their workers start in parallel, so the
    /// wall time is about the slowest one's); the outcomes in `specs`' order.
    pub fn load_many(&self, specs: &[LoadSpec]) -> Vec<Result<String, ManagerError>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = specs
                .iter()
                .map(|spec| {
                    let loader = std::thread::Builder::new()
                        .name(format!("cjm-load-{}", spec.plugin))
                        .spawn_scoped(s, || self.load(spec));
                    (spec, loader)
                })
                .collect();
            handles
                .into_iter()
                .map(|(spec, loader)| match loader {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(ManagerError::Worker(WorkerError::Died {
                            plugin: spec.plugin.clone(),
                            death: cjm_proxy::Death::default(),
                        }))
                    }),
                    Err(source) => Err(ManagerError::Thread {
                        plugin: spec.plugin.clone(),
                        instance_id: spec.instance_id.clone().unwrap_or_default(),
                        role: "loader",
                        source,
                    }),
                })
                .collect()
        })
    }

    /// The reference's `load_all`: discovers again, then loads the default
    /// instance of every installed plugin that runs on this platform, all at once.
    /// `configs` gives some of them a configuration; the others get their
    /// persisted one, else the schema's defaults. One outcome per plugin, by name:
    /// a plugin that fails to load does not stop the others.
    pub fn load_all(
        &self,
        configs: &BTreeMap<String, Map<String, serde_json::Value>>,
    ) -> BTreeMap<String, Result<String, ManagerError>> {
        self.rediscover();
        let specs: Vec<LoadSpec> = self
            .compatible()
            .into_iter()
            .map(|d| {
                let mut spec = LoadSpec::new(d.manifest.code.name);
                spec.config = configs.get(&spec.plugin).cloned();
                spec
            })
            .collect();
        let outcomes = self.load_many(&specs);
        specs.into_iter().map(|s| s.plugin).zip(outcomes).collect()
    }

    /// The reference's id rules: explicit ids checked, generated ones
    /// `{name}-{6 hex}`, the default instance named like its plugin.
    pub(super) fn instance_id(&self, spec: &LoadSpec) -> Result<String, ManagerError> {
        if let Some(id) = &spec.instance_id {
            let valid = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            return if valid {
                Ok(id.clone())
            } else {
                Err(ManagerError::InvalidInstanceId { id: id.clone() })
            };
        }
        if !spec.new_instance {
            return Ok(spec.plugin.clone());
        }
        for _ in 0..16 {
            let id = format!("{}-{:06x}", spec.plugin, random_u32() & 0x00ff_ffff);
            if self.get(&id).is_none() {
                return Ok(id);
            }
        }
        Err(ManagerError::InvalidInstanceId {
            id: format!("{}-??????", spec.plugin),
        })
    }

    /// Starts `inst`'s worker if it is not running: spawn, `initialize(config)`,
    /// the drift check, supervision.
    pub(super) fn start_instance(&self, inst: &Arc<Instance>) -> Result<Worker, ManagerError> {
        let _lifecycle = lock(&inst.lifecycle);
        if let Some(w) = inst.worker() {
            return Ok(w);
        }
        if let Some(reason) = lock(&inst.status).quarantine.clone() {
            return Err(inst.crash_looping(reason));
        }
        let mut spec = inst.spec.clone();
        // One clock: the worker's error stamps, log stamps and start, stop and cancel
        // deadlines read the time where the manager reads its own.
        spec.clock = Arc::clone(&self.inner.clock);
        let resolved = self.worker_env(inst)?;
        spec.env
            .retain(|(k, _)| !resolved.iter().any(|(r, _)| r == k));
        spec.env.extend(resolved);
        self.pin(inst, &mut spec.env);
        self.set_state(inst, InstanceState::Starting);
        let began = std::time::Instant::now();
        let started = Worker::spawn(spec).and_then(|w| {
            inst.starting_pid.store(w.pid(), Ordering::Release);
            let config = lock(&inst.config).clone();
            // As the reference does: `initialize` only when there is a
            // configuration to give (a plugin without a schema, or whose schema
            // has no defaults and got no values, is never initialized).
            if config.is_empty() {
                return Ok(w);
            }
            match w.call_blocking(
                "initialize",
                vec![Value::from(serde_json::Value::Object(config))],
                vec![],
                CallOptions::default(),
            ) {
                Ok(_) => Ok(w),
                Err(e) => {
                    w.stop_blocking();
                    Err(e)
                }
            }
        });
        let worker = match started {
            Ok(w) => w,
            Err(e) => {
                inst.starting_pid.store(0, Ordering::Release);
                self.set_state(inst, InstanceState::Stopped);
                return Err(e.into());
            }
        };
        lock(&inst.placement).start_ms = began.elapsed().as_secs_f64() * 1e3;
        *lock(&inst.worker) = Some(worker.clone());
        inst.starting_pid.store(0, Ordering::Release);
        lock(&inst.status).last_used = self.inner.clock.now();
        self.check_drift(inst, &worker);
        let enabled = inst.enabled.load(Ordering::Acquire);
        self.set_state(
            inst,
            if enabled {
                InstanceState::Ready
            } else {
                InstanceState::Disabled
            },
        );
        let (weak_inner, weak_inst) = (Arc::downgrade(&self.inner), Arc::downgrade(inst));
        let shutdown = self.inner.threads.shutdown();
        let generation = inst.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let spawned =
            self.inner
                .threads
                .spawn_supervisor(format!("cjm-supervise-{}", inst.id), move || {
                    supervise(&weak_inner, &shutdown, &weak_inst, generation);
                });
        if let Err(source) = spawned {
            // An unsupervised worker would never be restarted: refuse it.
            lock(&inst.worker).take();
            self.set_state(inst, InstanceState::Stopping);
            worker.stop_blocking();
            self.set_state(inst, InstanceState::Stopped);
            return Err(ManagerError::Thread {
                plugin: inst.plugin.clone(),
                instance_id: inst.id.clone(),
                role: "supervisor",
                source,
            });
        }
        Ok(worker)
    }

    /// Pins the worker about to start to its GPU (`CUDA_VISIBLE_DEVICES`), and
    /// points it at the fake GPU when that is what the manager reads.
    fn pin(&self, inst: &Instance, env: &mut Vec<(String, String)>) {
        let mut set = |key: &str, value: String| {
            env.retain(|(k, _)| k != key);
            env.push((key.to_owned(), value));
        };
        // The system monitor's GPU sums its devices: there is none to pin to.
        if let Some(device) = lock(&inst.placement).device
            && self.inner.monitor.latest().gpu_monitor.is_none()
        {
            set("CUDA_VISIBLE_DEVICES", device.to_string());
        }
        if let Some(cjm_sched::Gpus::Fake(fake)) = self.inner.monitor.known_gpus() {
            set(
                cjm_sched::gpu::FAKE_GPU_VAR,
                fake.dir().display().to_string(),
            );
        }
    }

    /// Sets `inst`'s configuration, and with it the key of its empirical record.
    pub(super) fn configured(&self, inst: &Instance, config: Map<String, serde_json::Value>) {
        let hash = Instance::hash_of(&config);
        *lock(&inst.config) = config;
        let record = self.record_of(&inst.id, &hash);
        *lock(&inst.config_hash) = hash;
        lock(&inst.placement).record = record;
    }

    /// The empirical record of `instance` under `hash`, if kept and any.
    fn record_of(&self, instance: &str, hash: &str) -> Option<cjm_stores::EmpiricalRecord> {
        if !self.inner.cfg.substrate.empirical_tracking {
            return None;
        }
        self.inner
            .stores
            .empirical(instance, hash)
            .inspect_err(|e| {
                tracing::warn!("cannot read the empirical record of instance {instance}: {e}");
            })
            .ok()
            .flatten()
    }

    /// Starts the idle reaper, if this manager has one, for instance `id` of
    /// `plugin`, the first that has an idle timeout.
    fn start_reaper(&self, plugin: &str, id: &str) -> Result<(), ManagerError> {
        let Some(every) = self.inner.reap_interval else {
            return Ok(());
        };
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.inner.threads.shutdown();
        self.inner
            .threads
            .start_reaper(move || reaper(&weak, &shutdown, every))
            .map_err(|source| ManagerError::Thread {
                plugin: plugin.to_owned(),
                instance_id: id.to_owned(),
                role: "idle reaper",
                source,
            })
    }

    pub(super) fn check_drift(&self, inst: &Instance, worker: &Worker) {
        if !self.inner.cfg.substrate.drift_detection {
            return;
        }
        match crate::launch::check_drift(worker, &inst.manifest) {
            Ok(Some(d)) => {
                let message = d.to_string();
                tracing::warn!("{message}");
                self.inner.hub.emit(&ManagerEvent::Drift {
                    instance_id: inst.id.clone(),
                    message,
                });
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("drift check of {} skipped: {e}", inst.id),
        }
    }

    /// Starts instance `id`'s worker now (a lazy instance, or one stopped idle).
    pub fn start(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        self.place(&inst).map(drop)
    }

    /// Stops instance `id`'s worker, keeping the instance loaded; the next call
    /// starts it again.
    pub fn stop(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        self.stop_instance(&inst);
        Ok(())
    }

    pub(super) fn stop_instance(&self, inst: &Instance) {
        let _lifecycle = lock(&inst.lifecycle);
        let Some(worker) = lock(&inst.worker).take() else {
            return;
        };
        self.set_state(inst, InstanceState::Stopping);
        worker.stop_blocking();
        let after = if inst.enabled.load(Ordering::Acquire) {
            InstanceState::Stopped
        } else {
            InstanceState::Disabled
        };
        self.set_state(inst, after);
    }

    /// Unloads every instance, their workers stopped in parallel.
    pub fn unload_all(&self) {
        let ids = self.instance_ids();
        std::thread::scope(|s| {
            for id in &ids {
                // An instance unloaded meanwhile by another caller is gone already.
                let unloader = std::thread::Builder::new()
                    .name(format!("cjm-unload-{id}"))
                    .spawn_scoped(s, move || drop(self.unload(id)));
                if let Err(e) = unloader {
                    tracing::warn!(
                        "cannot start a thread to unload instance {id} ({e}); unloading it here"
                    );
                    drop(self.unload(id));
                }
            }
        });
    }

    /// Unloads instance `id`: its worker stopped (`cleanup()` first), the instance
    /// forgotten.
    pub fn unload(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        self.stop_instance(&inst);
        self.set_state(&inst, InstanceState::Stopped);
        self.remove(id);
        Ok(())
    }

    /// Restarts instance `id`'s worker, with `config` if given.
    pub fn reload(
        &self,
        id: &str,
        config: Option<Map<String, serde_json::Value>>,
    ) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        self.stop_instance(&inst);
        if let Some(c) = config {
            self.configured(&inst, c);
        }
        self.place(&inst).map(drop)
    }

    /// Clears a crash-looping instance's record and starts it again.
    pub fn reset(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        {
            let mut status = lock(&inst.status);
            status.crashes.clear();
            status.quarantine = None;
        }
        self.set_state(&inst, InstanceState::Stopped);
        self.place(&inst).map(drop)
    }

    /// Disables instance `id`: calls are refused with a typed error, the worker
    /// stays; the plugin's `on_disable()` runs once no call of this instance is
    /// in flight.
    pub fn disable(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        if !inst.enabled.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.set_state(&inst, InstanceState::Disabled);
        inst.defer_hook(Hook::OnDisable);
        self.persist(&inst)
    }

    /// Enables instance `id` again; the plugin's `on_enable()` runs once no call
    /// of this instance is in flight.
    pub fn enable(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        if inst.enabled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let state = if inst.worker().is_some() {
            InstanceState::Ready
        } else {
            InstanceState::Stopped
        };
        self.set_state(&inst, state);
        inst.defer_hook(Hook::OnEnable);
        self.persist(&inst)
    }
}

/// A random 32-bit number for instance ids (not for secrets).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(SEQ.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}

/// The manifest's `resources.max_system_ram_mb` (a cjm extension), in bytes
/// (checked to be a positive number when the plugin was loaded).
fn declared_limit(manifest: &cjm_manifest::Manifest) -> Option<u64> {
    let mb = manifest
        .code
        .resources
        .as_ref()?
        .extra
        .get("max_system_ram_mb")?
        .as_f64()?;
    Some(cjm_sched::amount::from_mb(mb)).filter(|b| *b > 0)
}
