//! What is installed: the manifests found in the search paths, and the queries over
//! them (by name, role, domain, platform).

use cjm_manifest::{Discovered, Discovery, Manifest};

use super::Manager;
use crate::error::ManagerError;

impl Manager {
    /// Reads the search paths again.
    pub fn rediscover(&self) {
        let discovery = cjm_manifest::discover(&self.inner.search_paths);
        *self
            .inner
            .discovery
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = discovery;
    }

    pub(super) fn discovery(&self) -> std::sync::RwLockReadGuard<'_, Discovery> {
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

    pub(super) fn filtered(&self, keep: impl Fn(&Manifest) -> bool) -> Vec<Discovered> {
        self.discovery()
            .found
            .iter()
            .filter(|d| keep(&d.manifest))
            .cloned()
            .collect()
    }

    pub(super) fn installed(&self, plugin: &str) -> Result<Manifest, ManagerError> {
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
}
