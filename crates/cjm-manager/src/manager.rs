//! The manager: installed plugins, their loaded instances, and everything done to
//! them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use cjm_core::{CjmConfig, PluginError, PluginRef};
use cjm_manifest::{Discovered, Discovery, Manifest};
use cjm_proto::Value;
use cjm_proxy::{CallOptions, Event, StartMethod, Worker, WorkerError, WorkerStats};
use serde_json::Map;

use crate::error::ManagerError;
use crate::instance::{Gate, Hook, Instance, Status, lock};
use crate::persist::Stores;
use crate::state::{CrashRecord, InstanceState, ManagerEvent, RestartPolicy, Verdict};
use cjm_core::{SharedClock, SystemClock};
use cjm_schema::{ConfigSchema, Strictness};
use cjm_stores::{ConfigRecord, SecretValue};

/// How a manager is set up.
#[derive(Clone)]
pub struct ManagerOptions {
    /// Where manifests are looked for, in order (default: the project's
    /// `.cjm/manifests`, then the data dir's `manifests`, as the reference does).
    pub search_paths: Option<Vec<PathBuf>>,
    /// How crashed workers are restarted.
    pub restart: RestartPolicy,
    /// The time source for backoff, crash windows, idle timeouts and the config
    /// store's `updated_at` stamps.
    pub clock: SharedClock,
    /// How often idle instances are looked for; `None`: only when
    /// [`Manager::reap_idle`] is called.
    pub reap_interval: Option<Duration>,
    /// Read and write the config store and read the secret store (the
    /// reference's files in the data dir). Off: nothing is persisted, no secrets.
    pub persist: bool,
    /// How worker processes are started. The default forks them from a warm
    /// interpreter per environment (a forkserver), which makes a start about a
    /// millisecond of CPU instead of 15–20; `StartMethod::Spawn` executes a fresh
    /// interpreter for each.
    pub start_method: StartMethod,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            search_paths: None,
            restart: RestartPolicy::default(),
            clock: SystemClock::shared(),
            reap_interval: Some(Duration::from_secs(1)),
            persist: true,
            start_method: StartMethod::Forkserver,
        }
    }
}

/// What to load: a plugin, and how.
#[derive(Debug, Clone, Default)]
pub struct LoadSpec {
    /// The plugin's name.
    pub plugin: String,
    /// Its configuration; `None`: the persisted one, else the schema's defaults.
    pub config: Option<Map<String, serde_json::Value>>,
    /// An explicit instance id (`[A-Za-z0-9_-]{1,64}`); `None`: the plugin's name,
    /// or a generated `{name}-{6 hex}` with `new_instance`.
    pub instance_id: Option<String>,
    /// Load another instance under a generated id.
    pub new_instance: bool,
    /// Accept unknown configuration keys (dropped, with a warning).
    pub lenient: bool,
    /// Start the worker on first use instead of now.
    pub lazy: bool,
    /// At most this many calls at once on this instance.
    pub max_concurrent: Option<usize>,
    /// Stop the worker after this long without a call; it restarts on demand.
    pub idle_ttl: Option<Duration>,
    /// More variables for this instance's worker, on top of the manifest's
    /// `install.env_vars` (never secrets: those come from the secret store). A
    /// variable the plugin declares in `WORKER_ENV` is resolved as declared and
    /// wins; override one with [`Manager::set_env_override`].
    pub env: Vec<(String, String)>,
}

impl LoadSpec {
    /// The default instance of `plugin`, started now, default configuration.
    pub fn new(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            ..Self::default()
        }
    }

    /// With this configuration.
    #[must_use]
    pub fn config(mut self, config: Map<String, serde_json::Value>) -> Self {
        self.config = Some(config);
        self
    }

    /// Under this instance id.
    #[must_use]
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// As a new instance with a generated id.
    #[must_use]
    pub fn new_instance(mut self) -> Self {
        self.new_instance = true;
        self
    }

    /// Starting the worker on first use.
    #[must_use]
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// With at most `n` calls at once.
    #[must_use]
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Stopping the worker after `ttl` without a call.
    #[must_use]
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = Some(ttl);
        self
    }
}

impl From<&str> for LoadSpec {
    /// The default instance of plugin `name`.
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for LoadSpec {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl<S: Into<String>> From<(S, Map<String, serde_json::Value>)> for LoadSpec {
    /// The default instance of a plugin, with a configuration.
    fn from((name, config): (S, Map<String, serde_json::Value>)) -> Self {
        Self::new(name).config(config)
    }
}

/// A snapshot of one instance.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// Its id.
    pub id: String,
    /// Its plugin.
    pub plugin: String,
    /// Its state.
    pub state: InstanceState,
    /// Whether it accepts work.
    pub enabled: bool,
    /// Its worker's pid, when one runs.
    pub pid: Option<u32>,
    /// Calls running now.
    pub in_flight: usize,
    /// Its configuration.
    pub config: Map<String, serde_json::Value>,
    /// The last crash, if any.
    pub last_crash: Option<CrashRecord>,
    /// Why it is crash-looping, if it is.
    pub quarantine: Option<String>,
}

/// Subscribers to manager events.
#[derive(Default)]
struct Hub {
    subs: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<ManagerEvent>>>,
    /// Subscribers that also want each call's ready⇄busy transitions.
    call_subs: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<ManagerEvent>>>,
    /// How many there are, read on the call path without a lock.
    call_sub_count: AtomicUsize,
}

impl Hub {
    fn emit(&self, e: &ManagerEvent) {
        lock(&self.subs).retain(|s| s.send(e.clone()).is_ok());
        if self.call_sub_count.load(Ordering::Acquire) > 0 {
            self.emit_calls(e);
        }
    }

    fn emit_calls(&self, e: &ManagerEvent) {
        let mut subs = lock(&self.call_subs);
        subs.retain(|s| s.send(e.clone()).is_ok());
        self.call_sub_count.store(subs.len(), Ordering::Release);
    }

    /// A call made an instance busy (`busy`) or ready again; only for the
    /// subscribers that asked, so calls cost nothing when nobody did.
    fn call_transition(&self, inst: &Instance, busy: bool) {
        if self.call_sub_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let (from, to) = if busy {
            (InstanceState::Ready, InstanceState::Busy)
        } else {
            (InstanceState::Busy, InstanceState::Ready)
        };
        self.emit_calls(&ManagerEvent::State {
            instance_id: inst.id.clone(),
            plugin: inst.plugin.clone(),
            from,
            to,
        });
    }
}

struct Inner {
    cfg: CjmConfig,
    search_paths: Vec<PathBuf>,
    discovery: RwLock<Discovery>,
    instances: RwLock<BTreeMap<String, Arc<Instance>>>,
    hub: Hub,
    clock: SharedClock,
    policy: RestartPolicy,
    start_method: StartMethod,
    closed: AtomicBool,
    stores: Stores,
    schemas: Mutex<BTreeMap<String, Arc<ConfigSchema>>>,
    /// Operator overrides of visible `WORKER_ENV` variables, by plugin.
    env_overrides: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let instances = std::mem::take(
            &mut *self
                .instances
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        std::thread::scope(|s| {
            for inst in instances.values() {
                if let Some(w) = lock(&inst.worker).take() {
                    s.spawn(move || w.stop_blocking());
                }
            }
        });
    }
}

/// Installed plugins and their running instances, behind one handle.
///
/// Cheap to clone; every clone is the same manager. Dropping the last one stops
/// every worker.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("search_paths", &self.inner.search_paths)
            .field("instances", &self.instance_ids())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager for the configuration `cfg`, with the installed plugins discovered.
    pub fn new(cfg: CjmConfig, options: ManagerOptions) -> Self {
        let search_paths = options.search_paths.unwrap_or_else(|| {
            let cwd = std::env::current_dir().unwrap_or_default();
            cjm_manifest::default_search_paths(&cwd, &cfg.manifests_dir())
        });
        let cfg_data_dir = cfg.data_dir.clone();
        let discovery = cjm_manifest::discover(&search_paths);
        for e in &discovery.errors {
            tracing::warn!("skipping a manifest: {e}");
        }
        let inner = Arc::new(Inner {
            cfg,
            search_paths,
            discovery: RwLock::new(discovery),
            instances: RwLock::new(BTreeMap::new()),
            hub: Hub::default(),
            clock: options.clock.clone(),
            policy: options.restart,
            start_method: options.start_method,
            closed: AtomicBool::new(false),
            stores: Stores::new(&cfg_data_dir, options.persist, &options.clock),
            schemas: Mutex::new(BTreeMap::new()),
            env_overrides: Mutex::new(BTreeMap::new()),
        });
        if let Some(every) = options.reap_interval {
            let weak = Arc::downgrade(&inner);
            std::thread::spawn(move || reaper(&weak, every));
        }
        Self { inner }
    }

    /// The configuration it runs with.
    pub fn cjm_config(&self) -> &CjmConfig {
        &self.inner.cfg
    }

    /// Reads the search paths again.
    pub fn rediscover(&self) {
        let discovery = cjm_manifest::discover(&self.inner.search_paths);
        *self
            .inner
            .discovery
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = discovery;
    }

    fn discovery(&self) -> std::sync::RwLockReadGuard<'_, Discovery> {
        self.inner
            .discovery
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every installed plugin, one per name.
    pub fn discovered(&self) -> Vec<Discovered> {
        self.discovery().found.clone()
    }

    /// The installed plugin `name`'s manifest.
    pub fn manifest(&self, name: &str) -> Option<Manifest> {
        self.discovery().get(name).map(|d| d.manifest.clone())
    }

    /// Installed plugins implementing the interface `role` (its class name, e.g.
    /// `TranscriptionPlugin`).
    pub fn get_by_role(&self, role: &str) -> Vec<Discovered> {
        self.filtered(|m| m.code.taxonomy.as_ref().is_some_and(|t| t.role == role))
    }

    /// Installed plugins of `domain` (e.g. `transcription`).
    pub fn get_by_domain(&self, domain: &str) -> Vec<Discovered> {
        self.filtered(|m| m.code.taxonomy.as_ref().is_some_and(|t| t.domain == domain))
    }

    /// The one plugin implementing `role`: `None` when there is none, or when
    /// several compete (logged as a warning, since a caller expecting one cannot
    /// tell that from none).
    pub fn get_canonical(&self, role: &str) -> Option<Discovered> {
        let mut found = self.get_by_role(role);
        if found.len() > 1 {
            let names: Vec<&str> = found
                .iter()
                .map(|d| d.manifest.code.name.as_str())
                .collect();
            tracing::warn!(
                "get_canonical({role}): {} plugins implement it ({}); none chosen",
                found.len(),
                names.join(", ")
            );
            return None;
        }
        found.pop()
    }

    /// Installed plugins that run on this machine's platform.
    pub fn compatible(&self) -> Vec<Discovered> {
        let platform = cjm_core::current_platform();
        self.discovery()
            .compatible_with(&platform)
            .cloned()
            .collect()
    }

    fn filtered(&self, keep: impl Fn(&Manifest) -> bool) -> Vec<Discovered> {
        self.discovery()
            .found
            .iter()
            .filter(|d| keep(&d.manifest))
            .cloned()
            .collect()
    }

    /// Subscribes to state changes, crashes, restarts and drift warnings.
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<ManagerEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        lock(&self.inner.hub.subs).push(tx);
        rx
    }

    /// [`subscribe`](Self::subscribe), plus every call's `ready → busy` and
    /// `busy → ready` transitions (one pair per call that finds an instance idle).
    /// Without such a subscriber, calls emit nothing.
    pub fn subscribe_with_calls(&self) -> tokio::sync::mpsc::UnboundedReceiver<ManagerEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let hub = &self.inner.hub;
        let mut subs = lock(&hub.call_subs);
        subs.push(tx);
        hub.call_sub_count.store(subs.len(), Ordering::Release);
        rx
    }

    /// Loads an instance: its configuration checked, its worker started unless
    /// `lazy`. Loading an id that is loaded already returns it unchanged.
    pub fn load(&self, spec: &LoadSpec) -> Result<String, ManagerError> {
        let manifest = self.installed(&spec.plugin)?;
        let id = self.instance_id(spec)?;
        if let Some(existing) = self.get(&id) {
            return Ok(existing.id.clone());
        }
        let (config, enabled) = self.effective_config(spec, &id, &manifest)?;
        let mut worker_spec = crate::launch::worker_spec(&manifest, &self.inner.cfg);
        worker_spec.start_method = self.inner.start_method;
        worker_spec.env.extend(spec.env.iter().cloned());
        if id != spec.plugin {
            worker_spec.instance_id = Some(id.clone());
        }
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
        if !spec.lazy
            && let Err(e) = self.start_instance(&inst)
        {
            self.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// The configuration an instance starts with, validated against the plugin's
    /// schema with its defaults filled in: the one given, else (for a plugin's
    /// default instance) the persisted one, else the defaults. The default
    /// instance also takes its persisted enabled flag.
    fn effective_config(
        &self,
        spec: &LoadSpec,
        id: &str,
        manifest: &Manifest,
    ) -> Result<(Map<String, serde_json::Value>, bool), ManagerError> {
        let schema = self.schema(&spec.plugin, manifest)?;
        let record = if id == spec.plugin {
            self.inner.stores.config(&spec.plugin)?
        } else {
            None
        };
        let enabled = record.as_ref().is_none_or(|r| r.enabled);
        let (input, persisted) = match (&spec.config, record) {
            (Some(given), _) => (given.clone(), false),
            (None, Some(r)) => (r.config, true),
            (None, None) => (Map::new(), false),
        };
        let mode = if spec.lenient {
            Strictness::Lenient
        } else {
            Strictness::Strict
        };
        let validated = schema
            .validate(&input, mode)
            .map_err(|error| ManagerError::Config { error, persisted })?;
        for w in &validated.warnings {
            tracing::warn!("plugin {}: {w}", spec.plugin);
        }
        Ok((validated.config, enabled))
    }

    /// Plugin `plugin`'s compiled config schema (compiled once).
    fn schema(&self, plugin: &str, manifest: &Manifest) -> Result<Arc<ConfigSchema>, ManagerError> {
        if let Some(s) = lock(&self.inner.schemas).get(plugin) {
            return Ok(Arc::clone(s));
        }
        let compiled = Arc::new(ConfigSchema::compile(
            plugin,
            manifest.code.config_schema.as_ref(),
        )?);
        lock(&self.inner.schemas).insert(plugin.to_owned(), Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Checks `config` against plugin `plugin`'s schema, as `load` would, without
    /// loading anything: the validated configuration with defaults filled in.
    pub fn validate_config(
        &self,
        plugin: &str,
        config: &Map<String, serde_json::Value>,
        lenient: bool,
    ) -> Result<Map<String, serde_json::Value>, ManagerError> {
        let manifest = self.installed(plugin)?;
        let mode = if lenient {
            Strictness::Lenient
        } else {
            Strictness::Strict
        };
        self.schema(plugin, &manifest)?
            .validate(config, mode)
            .map(|v| v.config)
            .map_err(|error| ManagerError::Config {
                error,
                persisted: false,
            })
    }

    /// The variables plugin `plugin`'s `WORKER_ENV` contract resolves to now:
    /// secrets from the secret store (one per plugin, shared by its instances),
    /// visible variables from the manifest's `install.env_vars`, else their
    /// defaults. A required one without a value is an error naming it.
    fn worker_env(&self, inst: &Instance) -> Result<Vec<(String, String)>, ManagerError> {
        let mut env = Vec::new();
        for entry in inst.manifest.code.worker_env.iter().flatten() {
            let Some(name) = entry.get("name").and_then(serde_json::Value::as_str) else {
                continue;
            };
            let flag = |k: &str| {
                entry
                    .get(k)
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            };
            let description = entry
                .get("description")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if flag("secret") {
                match self.inner.stores.secret(&inst.plugin, name)? {
                    Some(value) => env.push((name.to_owned(), value.expose().to_owned())),
                    None if flag("required") => {
                        return Err(ManagerError::MissingSecret {
                            plugin: inst.plugin.clone(),
                            key: name.to_owned(),
                            description,
                        });
                    }
                    None => {}
                }
                continue;
            }
            let overridden = lock(&self.inner.env_overrides)
                .get(&inst.plugin)
                .and_then(|o| o.get(name))
                .cloned();
            if let Some(value) = overridden {
                env.push((name.to_owned(), value));
                continue;
            }
            if inst.spec.env.iter().any(|(k, _)| k == name) {
                continue;
            }
            match entry.get("default") {
                Some(serde_json::Value::String(v)) => env.push((name.to_owned(), v.clone())),
                Some(v) if !v.is_null() => env.push((name.to_owned(), v.to_string())),
                _ if flag("required") => {
                    return Err(ManagerError::MissingVariable {
                        plugin: inst.plugin.clone(),
                        key: name.to_owned(),
                        description,
                    });
                }
                _ => {}
            }
        }
        Ok(env)
    }

    /// Stores a secret of plugin `plugin` (the variable `key` its worker reads) and
    /// restarts the plugin's running workers so they get it. The value never
    /// reaches a log, an event, a manifest or the config store.
    pub fn set_plugin_secret(
        &self,
        plugin: &str,
        key: &str,
        value: &SecretValue,
    ) -> Result<(), ManagerError> {
        self.inner.stores.set_secret(plugin, key, value)?;
        for info in self.instances(Some(plugin)) {
            if info.pid.is_some() {
                self.reload(&info.id, None)?;
            }
        }
        Ok(())
    }

    /// Overrides (or with `None`, stops overriding) the visible `WORKER_ENV`
    /// variable `key` of plugin `plugin`, then restarts the plugin's running
    /// workers: a worker's environment is fixed when it starts. Only variables the
    /// plugin declares as visible can be overridden (secrets go through
    /// [`set_plugin_secret`](Self::set_plugin_secret)).
    pub fn set_env_override(
        &self,
        plugin: &str,
        key: &str,
        value: Option<String>,
    ) -> Result<(), ManagerError> {
        let manifest = self.installed(plugin)?;
        let declared = manifest.code.worker_env.iter().flatten().any(|e| {
            e.get("name").and_then(serde_json::Value::as_str) == Some(key)
                && !e
                    .get("secret")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
        });
        if !declared {
            return Err(ManagerError::MissingVariable {
                plugin: plugin.to_owned(),
                key: key.to_owned(),
                description: "not a visible variable of the plugin's WORKER_ENV".into(),
            });
        }
        {
            let mut all = lock(&self.inner.env_overrides);
            let mine = all.entry(plugin.to_owned()).or_default();
            match value {
                Some(v) => mine.insert(key.to_owned(), v),
                None => mine.remove(key),
            };
        }
        for info in self.instances(Some(plugin)) {
            if info.pid.is_some() {
                self.reload(&info.id, None)?;
            }
        }
        Ok(())
    }

    /// The names (never the values) of plugin `plugin`'s stored secrets.
    pub fn secret_keys(&self, plugin: &str) -> Result<Vec<String>, ManagerError> {
        Ok(self.inner.stores.secret_keys(plugin)?)
    }

    /// Replaces instance `id`'s configuration: validated first; then the plugin's
    /// `reconfigure(old, new)` (which fires the release hooks of what changed) in
    /// its running worker; then, for a plugin's default instance, persisted.
    pub fn update_config(
        &self,
        id: &str,
        config: &Map<String, serde_json::Value>,
        lenient: bool,
    ) -> Result<Map<String, serde_json::Value>, ManagerError> {
        let inst = self.instance(id)?;
        let new = self.validate_config(&inst.plugin, config, lenient)?;
        let old = lock(&inst.config).clone();
        if let Some(worker) = inst.worker() {
            let _running = Running::enter(self, &inst);
            worker.call_blocking(
                "reconfigure",
                vec![
                    Value::from(serde_json::Value::Object(old)),
                    Value::from(serde_json::Value::Object(new.clone())),
                ],
                vec![],
                CallOptions::default(),
            )?;
        }
        lock(&inst.config).clone_from(&new);
        self.persist(&inst)?;
        Ok(new)
    }

    /// Writes a default instance's configuration and enabled flag to the store.
    fn persist(&self, inst: &Instance) -> Result<(), ManagerError> {
        if inst.id != inst.plugin {
            return Ok(());
        }
        let record = ConfigRecord {
            config: lock(&inst.config).clone(),
            enabled: inst.enabled.load(Ordering::Acquire),
            updated_at: 0.0,
        };
        Ok(self.inner.stores.set_config(&inst.plugin, &record)?)
    }

    /// Loads several instances at once (their workers start in parallel, so the
    /// wall time is about the slowest one's); the outcomes in `specs`' order.
    pub fn load_many(&self, specs: &[LoadSpec]) -> Vec<Result<String, ManagerError>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = specs
                .iter()
                .map(|spec| s.spawn(|| self.load(spec)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ManagerError::Worker(WorkerError::Died {
                            plugin: String::new(),
                            death: cjm_proxy::Death::default(),
                        }))
                    })
                })
                .collect()
        })
    }

    fn installed(&self, plugin: &str) -> Result<Manifest, ManagerError> {
        if let Some(m) = self.manifest(plugin) {
            return Ok(m);
        }
        let installed: Vec<String> = self
            .discovery()
            .found
            .iter()
            .map(|d| d.manifest.code.name.clone())
            .collect();
        Err(ManagerError::NotInstalled {
            plugin: plugin.to_owned(),
            searched: self
                .inner
                .search_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            installed: if installed.is_empty() {
                "none".into()
            } else {
                installed.join(", ")
            },
        })
    }

    /// The reference's id rules: explicit ids checked, generated ones
    /// `{name}-{6 hex}`, the default instance named like its plugin.
    fn instance_id(&self, spec: &LoadSpec) -> Result<String, ManagerError> {
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

    fn get(&self, id: &str) -> Option<Arc<Instance>> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn instance(&self, id: &str) -> Result<Arc<Instance>, ManagerError> {
        self.get(id).ok_or_else(|| {
            let mut loaded = self.instance_ids();
            loaded.sort();
            ManagerError::NotLoaded {
                instance_id: id.to_owned(),
                loaded: if loaded.is_empty() {
                    "none".to_owned()
                } else {
                    loaded.join(", ")
                },
                installed: self.manifest(id).is_some(),
            }
        })
    }

    fn remove(&self, id: &str) -> Option<Arc<Instance>> {
        self.inner
            .instances
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id)
    }

    /// The ids of every loaded instance.
    pub fn instance_ids(&self) -> Vec<String> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// A snapshot of instance `id`.
    pub fn info(&self, id: &str) -> Option<InstanceInfo> {
        let inst = self.get(id)?;
        let status = lock(&inst.status);
        Some(InstanceInfo {
            id: inst.id.clone(),
            plugin: inst.plugin.clone(),
            state: if status.state == InstanceState::Ready
                && inst.in_flight.load(Ordering::Acquire) > 0
            {
                InstanceState::Busy
            } else {
                status.state
            },
            enabled: inst.enabled.load(Ordering::Acquire),
            pid: inst.worker().map(|w| w.pid()),
            in_flight: inst.in_flight.load(Ordering::Acquire),
            config: lock(&inst.config).clone(),
            last_crash: status.last_crash.clone(),
            quarantine: status.quarantine.clone(),
        })
    }

    /// Every loaded instance, or those of `plugin`.
    pub fn instances(&self, plugin: Option<&str>) -> Vec<InstanceInfo> {
        self.instance_ids()
            .iter()
            .filter_map(|id| self.info(id))
            .filter(|i| plugin.is_none_or(|p| i.plugin == p))
            .collect()
    }

    /// Instance `id`'s worker, when one runs: for what the manager does not wrap
    /// (streams, shared-memory buffers, events). Calls made on it bypass the
    /// manager's gates (enabled flag, concurrency cap, in-flight count).
    pub fn worker(&self, id: &str) -> Option<Worker> {
        self.get(id).and_then(|i| i.worker())
    }

    /// Instance `id`'s state.
    pub fn state(&self, id: &str) -> Option<InstanceState> {
        self.get(id).map(|i| i.state())
    }

    fn set_state(&self, inst: &Instance, to: InstanceState) {
        let from = {
            let mut status = lock(&inst.status);
            std::mem::replace(&mut status.state, to)
        };
        if from != to {
            self.inner.hub.emit(&ManagerEvent::State {
                instance_id: inst.id.clone(),
                plugin: inst.plugin.clone(),
                from,
                to,
            });
        }
    }

    /// Starts `inst`'s worker if it is not running: spawn, `initialize(config)`,
    /// the drift check, supervision.
    fn start_instance(&self, inst: &Arc<Instance>) -> Result<Worker, ManagerError> {
        let _lifecycle = lock(&inst.lifecycle);
        if let Some(w) = inst.worker() {
            return Ok(w);
        }
        if let Some(reason) = lock(&inst.status).quarantine.clone() {
            return Err(self.crash_looping(inst, reason));
        }
        let mut spec = inst.spec.clone();
        let resolved = self.worker_env(inst)?;
        spec.env
            .retain(|(k, _)| !resolved.iter().any(|(r, _)| r == k));
        spec.env.extend(resolved);
        self.set_state(inst, InstanceState::Starting);
        let started = Worker::spawn(spec).and_then(|w| {
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
                self.set_state(inst, InstanceState::Stopped);
                return Err(e.into());
            }
        };
        *lock(&inst.worker) = Some(worker.clone());
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
        let generation = inst.generation.fetch_add(1, Ordering::AcqRel) + 1;
        std::thread::Builder::new()
            .name(format!("cjm-supervise-{}", inst.id))
            .spawn(move || supervise(&weak_inner, &weak_inst, generation))
            .ok();
        Ok(worker)
    }

    fn check_drift(&self, inst: &Instance, worker: &Worker) {
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

    fn crash_looping(&self, inst: &Instance, reason: String) -> ManagerError {
        let _ = self;
        ManagerError::CrashLooping {
            plugin: inst.plugin.clone(),
            instance_id: inst.id.clone(),
            reason,
        }
    }

    /// Starts instance `id`'s worker now (a lazy instance, or one stopped idle).
    pub fn start(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        self.start_instance(&inst).map(drop)
    }

    /// Stops instance `id`'s worker, keeping the instance loaded; the next call
    /// starts it again.
    pub fn stop(&self, id: &str) -> Result<(), ManagerError> {
        let inst = self.instance(id)?;
        self.stop_instance(&inst);
        Ok(())
    }

    fn stop_instance(&self, inst: &Instance) {
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

    /// Unloads every instance, their workers stopped in parallel.
    pub fn unload_all(&self) {
        let ids = self.instance_ids();
        std::thread::scope(|s| {
            for id in &ids {
                s.spawn(move || {
                    // An instance unloaded meanwhile by another caller is gone already.
                    let _ = self.unload(id);
                });
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
            *lock(&inst.config) = c;
        }
        self.start_instance(&inst).map(drop)
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
        self.start_instance(&inst).map(drop)
    }

    /// Checks that `inst` takes work and returns its worker, started on demand.
    fn admit(&self, inst: &Arc<Instance>) -> Result<Worker, ManagerError> {
        if !inst.enabled.load(Ordering::Acquire) {
            return Err(ManagerError::Plugin(PluginError::Disabled {
                plugin: plugin_ref(inst),
            }));
        }
        if let Some(w) = inst.worker() {
            return Ok(w);
        }
        self.start_instance(inst)
    }

    /// `execute(*args, **kwargs)` on instance `id`.
    pub fn execute(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, ManagerError> {
        self.call(id, "execute", args, kwargs, CallOptions::default())
    }

    /// Any method of instance `id`'s plugin.
    pub fn call(
        &self,
        id: &str,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        options: CallOptions,
    ) -> Result<Value, ManagerError> {
        let inst = self.instance(id)?;
        let worker = self.admit(&inst)?;
        let _running = Running::enter(self, &inst);
        Ok(worker.call_blocking(method, args, kwargs, options)?)
    }

    /// `execute(*args, **kwargs)` on instance `id`, awaited.
    pub async fn execute_async(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, ManagerError> {
        let inst = self.instance(id)?;
        let worker = match inst.worker() {
            Some(w) if inst.enabled.load(Ordering::Acquire) => w,
            _ => {
                let (me, inst) = (self.clone(), Arc::clone(&inst));
                tokio::task::spawn_blocking(move || me.admit(&inst))
                    .await
                    .map_err(|_| {
                        ManagerError::Worker(WorkerError::Died {
                            plugin: id.to_owned(),
                            death: cjm_proxy::Death::default(),
                        })
                    })??
            }
        };
        if inst.gate.is_some() {
            // The cap blocks a thread while waiting; keep that off the runtime.
            let (me, id) = (self.clone(), id.to_owned());
            return tokio::task::spawn_blocking(move || me.execute(&id, args, kwargs))
                .await
                .map_err(|_| {
                    ManagerError::Worker(WorkerError::Died {
                        plugin: String::new(),
                        death: cjm_proxy::Death::default(),
                    })
                })?;
        }
        let _running = Running::enter(self, &inst);
        Ok(worker.execute(args, kwargs).await?)
    }

    /// Calls the plugin's `prefetch()` (load models ahead of the first job),
    /// starting the worker if needed.
    pub fn prefetch(&self, id: &str) -> Result<(), ManagerError> {
        self.call(id, "prefetch", vec![], vec![], CallOptions::default())
            .map(drop)
    }

    /// Stops the workers of instances idle longer than their `idle_ttl`; the next
    /// call starts them again. Runs on its own every `reap_interval`.
    pub fn reap_idle(&self) -> Vec<String> {
        let now = self.inner.clock.now();
        let all: Vec<Arc<Instance>> = self
            .inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut stopped = Vec::new();
        for inst in all {
            let Some(ttl) = inst.idle_ttl else { continue };
            let idle = now.saturating_sub(lock(&inst.status).last_used);
            if idle >= ttl && inst.in_flight.load(Ordering::Acquire) == 0 && inst.worker().is_some()
            {
                self.stop_instance(&inst);
                stopped.push(inst.id.clone());
            }
        }
        stopped
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
        self.defer_hook(&inst, Hook::OnDisable);
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
        self.defer_hook(&inst, Hook::OnEnable);
        self.persist(&inst)
    }

    /// Queues `hook`; an opposite hook still waiting cancels out with it.
    fn defer_hook(&self, inst: &Instance, hook: Hook) {
        {
            let mut status = lock(&inst.status);
            status.pending_hook = match status.pending_hook {
                Some(pending) if pending != hook => None,
                _ => Some(hook),
            };
        }
        if inst.in_flight.load(Ordering::Acquire) == 0 {
            self.fire_pending_hook(inst);
        }
    }

    fn fire_pending_hook(&self, inst: &Instance) {
        let _ = self;
        let Some(hook) = lock(&inst.status).pending_hook.take() else {
            return;
        };
        if let Some(w) = inst.worker()
            && let Err(e) = w.call_blocking(hook.method(), vec![], vec![], CallOptions::default())
        {
            tracing::warn!("{}() of {} failed: {e}", hook.method(), inst.id);
        }
    }

    /// The last `lines` lines of plugin `plugin`'s log file.
    pub fn logs(&self, plugin: &str, lines: usize) -> String {
        let path = self.inner.cfg.logs_dir().join(format!("{plugin}.log"));
        let text = fs_err::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Resource figures of instance `id`'s worker.
    pub fn stats(&self, id: &str) -> Result<WorkerStats, ManagerError> {
        let inst = self.instance(id)?;
        let worker = inst.worker().ok_or_else(|| {
            ManagerError::Plugin(PluginError::NotLoaded {
                plugin: plugin_ref(&inst),
            })
        })?;
        Ok(worker.stats()?)
    }

    /// Instance `id`'s configuration.
    pub fn config(&self, id: &str) -> Option<Map<String, serde_json::Value>> {
        self.get(id).map(|i| lock(&i.config).clone())
    }

    /// Instance `id`'s live option domains for dynamic config fields (the plugin's
    /// `get_config_options()`, e.g. a model list from an API); `{}` when the plugin
    /// has none.
    pub fn config_options(&self, id: &str) -> Result<Value, ManagerError> {
        self.call(
            id,
            "get_config_options",
            vec![],
            vec![],
            CallOptions::default(),
        )
    }

    /// Plugin `plugin`'s configuration schema, from its manifest.
    pub fn config_schema(&self, plugin: &str) -> Option<Map<String, serde_json::Value>> {
        self.manifest(plugin).and_then(|m| m.code.config_schema)
    }

    /// A handle bound to plugin `plugin` (its default instance).
    pub fn bind(
        &self,
        plugin: impl Into<String>,
        default_config: Map<String, serde_json::Value>,
    ) -> crate::binding::PluginBinding {
        crate::binding::PluginBinding::new(self.clone(), plugin.into(), default_config)
    }

    fn emit(&self, e: &ManagerEvent) {
        self.inner.hub.emit(e);
    }
}

fn plugin_ref(inst: &Instance) -> PluginRef {
    if inst.id == inst.plugin {
        PluginRef::new(&inst.plugin)
    } else {
        PluginRef::instance(&inst.plugin, &inst.id)
    }
}

/// A call in flight: the concurrency cap held, counted, the idle clock reset, and
/// on the way out a deferred hook fired if this was the last call.
struct Running<'a> {
    manager: &'a Manager,
    inst: &'a Instance,
}

impl<'a> Running<'a> {
    fn enter(manager: &'a Manager, inst: &'a Instance) -> Self {
        if let Some(g) = &inst.gate {
            g.acquire();
        }
        if inst.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            manager.inner.hub.call_transition(inst, true);
        }
        Self { manager, inst }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let inst = self.inst;
        lock(&inst.status).last_used = self.manager.inner.clock.now();
        let left = inst.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if let Some(g) = &inst.gate {
            g.release();
        }
        if left == 0 {
            self.manager.inner.hub.call_transition(inst, false);
        }
        if left == 0 && lock(&inst.status).pending_hook.is_some() {
            self.manager.fire_pending_hook(inst);
        }
    }
}

/// Watches one instance's worker: a death the host did not cause is a crash,
/// answered with a restart after a backoff, or quarantine.
fn supervise(inner: &Weak<Inner>, inst: &Weak<Instance>, generation: u64) {
    let current = |i: &Instance| i.generation.load(Ordering::Acquire) == generation;
    loop {
        let Some(worker) = inst
            .upgrade()
            .filter(|i| current(i))
            .and_then(|i| i.worker())
        else {
            return;
        };
        let mut events = worker.events();
        let pid = worker.pid();
        // Subscribed after the fact: a worker that already died is handled now.
        let death = if let Some(d) = worker.death() {
            Some(d)
        } else {
            drop(worker);
            wait_for_exit(&mut events)
        };
        let Some(death) = death else {
            // The process was replaced (a reload or a cancel's restart): watch the
            // new one, if the instance still has one.
            continue;
        };
        if death.killed_by_host {
            // Stopped on purpose; a replacement, if any, is watched next time round.
            let Some(i) = inst.upgrade() else { return };
            if !current(&i) || i.worker().is_none_or(|w| w.pid() == pid) {
                return;
            }
            continue;
        }
        let (Some(inner), Some(i)) = (inner.upgrade(), inst.upgrade()) else {
            return;
        };
        if !current(&i) {
            return;
        }
        if !crashed(&Manager { inner }, &i, pid, &death) {
            return;
        }
    }
}

/// The next `Exited` event's death; `None` when the stream ends first.
fn wait_for_exit(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Option<cjm_proxy::Death> {
    while let Some(e) = events.blocking_recv() {
        if let Event::Exited { death } = e {
            return Some(death);
        }
    }
    None
}

/// Records a crash and restarts or quarantines. `true`: a new worker runs.
fn crashed(manager: &Manager, inst: &Arc<Instance>, pid: u32, death: &cjm_proxy::Death) -> bool {
    let inner = &manager.inner;
    let now = inner.clock.now();
    let record = CrashRecord {
        plugin: inst.plugin.clone(),
        instance_id: inst.id.clone(),
        pid,
        exit: death.exit,
        cause: cause(death),
        stderr_tail: death.stderr_tail.clone(),
        at: now,
    };
    tracing::warn!("{record}");
    let mut record = record;
    loop {
        let (verdict, recent) = {
            let mut status = lock(&inst.status);
            status.last_crash = Some(record.clone());
            status.crashes.crashed(record.at, &inner.policy)
        };
        manager.emit(&ManagerEvent::Crashed(record.clone()));
        manager.set_state(inst, InstanceState::Crashed);
        match verdict {
            Verdict::Quarantine => {
                let reason = format!(
                    "{recent} crashes within {:.0} s, the last: {}",
                    inner.policy.window.as_secs_f64(),
                    record.cause
                );
                lock(&inst.status).quarantine = Some(reason.clone());
                let _ = lock(&inst.worker).take();
                manager.set_state(inst, InstanceState::CrashLooping);
                manager.emit(&ManagerEvent::CrashLooping {
                    instance_id: inst.id.clone(),
                    reason,
                });
                return false;
            }
            Verdict::Restart(delay) => {
                manager.emit(&ManagerEvent::RestartScheduled {
                    instance_id: inst.id.clone(),
                    delay,
                    recent_crashes: recent,
                });
                inner.clock.sleep(delay);
            }
        }
        if inner.closed.load(Ordering::Acquire) || inst.worker().is_none() {
            return false;
        }
        let _lifecycle = lock(&inst.lifecycle);
        let Some(worker) = inst.worker() else {
            return false;
        };
        manager.set_state(inst, InstanceState::Starting);
        let config = serde_json::Value::Object(lock(&inst.config).clone());
        let restarted = worker.restart_blocking().and_then(|()| {
            worker
                .call_blocking(
                    "initialize",
                    vec![Value::from(config)],
                    vec![],
                    CallOptions::default(),
                )
                .map(drop)
        });
        match restarted {
            Ok(()) => {
                let state = if inst.enabled.load(Ordering::Acquire) {
                    InstanceState::Ready
                } else {
                    InstanceState::Disabled
                };
                manager.set_state(inst, state);
                return true;
            }
            Err(e) => {
                // A restart that fails is one more crash.
                let death = match &e {
                    WorkerError::Died { death, .. } => death.clone(),
                    _ => cjm_proxy::Death::default(),
                };
                record = CrashRecord {
                    plugin: inst.plugin.clone(),
                    instance_id: inst.id.clone(),
                    pid: worker.pid(),
                    exit: death.exit,
                    cause: format!("failed to restart: {e}"),
                    stderr_tail: death.stderr_tail,
                    at: inner.clock.now(),
                };
            }
        }
    }
}

/// A crash's cause in words: the death's own, without its stderr lines.
fn cause(death: &cjm_proxy::Death) -> String {
    cjm_proxy::Death {
        stderr_tail: Vec::new(),
        ..death.clone()
    }
    .to_string()
}

fn reaper(inner: &Weak<Inner>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        Manager { inner }.reap_idle();
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
