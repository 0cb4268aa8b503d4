//! Instance configuration: the effective one at load (given, persisted or the
//! defaults), the compiled schema cache, validation, live updates through the
//! plugin's `reconfigure`, and persisting a default instance's record.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cjm_manifest::Manifest;
use cjm_proto::Value;
use cjm_proxy::CallOptions;
use cjm_schema::{ConfigSchema, Strictness};
use cjm_stores::ConfigRecord;
use serde_json::Map;

use super::calls::{Running, Slot};
use super::{LoadSpec, Manager};
use crate::error::ManagerError;
use crate::instance::{Instance, lock};

impl Manager {
    /// The configuration an instance starts with, validated against the plugin's
    /// schema with its defaults filled in: the one given, else (for a plugin's
    /// default instance) the persisted one, else the defaults. The default
    /// instance also takes its persisted enabled flag.
    pub(super) fn effective_config(
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
    pub(super) fn schema(
        &self,
        plugin: &str,
        manifest: &Manifest,
    ) -> Result<Arc<ConfigSchema>, ManagerError> {
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
            let _slot = Slot::take(&inst);
            let _running = Running::enter(self, &inst, None, false);
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
        self.configured(&inst, new.clone());
        self.persist(&inst)?;
        Ok(new)
    }

    /// Writes a default instance's configuration and enabled flag to the store.
    pub(super) fn persist(&self, inst: &Instance) -> Result<(), ManagerError> {
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
}
