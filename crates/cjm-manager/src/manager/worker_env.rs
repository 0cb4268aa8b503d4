//! A worker's environment from the plugin's `WORKER_ENV` contract: secrets from the
//! secret store, visible variables from operator overrides, the load's extra
//! variables, or their defaults; and the operator's ways to change them.

use super::Manager;
use crate::error::ManagerError;
use crate::instance::{Instance, lock};
use cjm_stores::SecretValue;

impl Manager {
    /// The variables plugin `plugin`'s `WORKER_ENV` contract resolves to now:
    /// secrets from the secret store (one per plugin, shared by its instances),
    /// visible variables from the manifest's `install.env_vars`, else their
    /// defaults. A required one without a value is an error naming it.
    pub(super) fn worker_env(
        &self,
        inst: &Instance,
    ) -> Result<Vec<(String, String)>, ManagerError> {
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
}
