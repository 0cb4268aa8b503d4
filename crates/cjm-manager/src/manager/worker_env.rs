//! A worker's environment from the plugin's `WORKER_ENV` contract: secrets from the
//! secret store, visible variables from operator overrides, the load's extra
//! variables, or their defaults; and the operator's ways to change them.

use super::Manager;
use crate::error::ManagerError;
use crate::instance::{Instance, lock};
use cjm_stores::SecretValue;

impl Manager {
    /// The variables `inst`'s `WORKER_ENV` contract resolves to now: secrets
    /// from the secret store (one per plugin, shared by its instances); visible
    /// variables from the operator's override, else left to the worker spec's own
    /// (the manifest's `install.env_vars` and the load's `env`), else their
    /// defaults. A required one without a value is an error naming it.
    pub(super) fn worker_env(
        &self,
        inst: &Instance,
    ) -> Result<Vec<(String, String)>, ManagerError> {
        let mut env = Vec::new();
        for var in inst.manifest.code.worker_env_vars() {
            if var.secret {
                match self.inner.stores.secret(&inst.plugin, &var.name)? {
                    Some(value) => env.push((var.name, value.expose().to_owned())),
                    None if var.required => {
                        return Err(ManagerError::MissingSecret {
                            plugin: inst.plugin.clone(),
                            key: var.name,
                            description: var.description,
                        });
                    }
                    None => {}
                }
                continue;
            }
            let overridden = lock(&self.inner.env_overrides)
                .get(&inst.plugin)
                .and_then(|o| o.get(&var.name))
                .cloned();
            if let Some(value) = overridden {
                env.push((var.name, value));
                continue;
            }
            if inst.spec.env.iter().any(|(k, _)| *k == var.name) {
                continue;
            }
            match var.default {
                Some(value) => env.push((var.name, value)),
                None if var.required => {
                    return Err(ManagerError::MissingVariable {
                        plugin: inst.plugin.clone(),
                        key: var.name,
                        description: var.description,
                    });
                }
                None => {}
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
        let declared = manifest
            .code
            .worker_env_vars()
            .iter()
            .any(|v| v.name == key && !v.secret);
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
