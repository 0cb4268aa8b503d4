//! What a plugins.yaml entry's environment contains: the [`EnvRequest`] its
//! backend, Python, requirements, local sources, constraints and index options make.

use std::path::PathBuf;

use cjm_core::Constraints;
use cjm_manifest::{Backend, PluginSpec};

use super::Installer;
use crate::error::InstallError;
use crate::key::{EnvRequest, LocalSource};
use crate::source::{source_hash, source_name};

impl Installer {
    /// What `spec`'s environment contains.
    pub fn request(&self, spec: &PluginSpec) -> Result<EnvRequest, InstallError> {
        let backend = spec.backend();
        let python = match backend {
            Backend::Python => spec.python_path.clone().unwrap_or_default(),
            _ => spec
                .python_version
                .clone()
                .unwrap_or_else(|| self.default_python.clone()),
        };
        let (package, local_sources) = self.package(spec)?;
        let mut requirements = spec.interface_libs.clone();
        requirements.push(package);
        requirements.extend(spec.requirements.iter().cloned());
        let find_links = spec
            .find_links
            .iter()
            .map(|l| {
                if l.contains("://") {
                    PathBuf::from(l)
                } else {
                    self.base_dir.join(l)
                }
            })
            .collect();
        let mut constraints = Vec::new();
        for c in [
            self.defaults.constraints.as_ref(),
            spec.constraints.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            constraints.extend(self.constraint_lines(spec, c)?);
        }
        Ok(EnvRequest {
            backend,
            python,
            requirements,
            wheels: vec![self.worker_wheel.clone()],
            find_links,
            index_url: spec.index_url.clone(),
            extra_index_urls: spec.extra_index_urls.clone(),
            no_index: spec.no_index,
            constraints,
            ignore_requires_python: self.ignores_requires_python(spec),
            local_sources,
        })
    }

    /// Whether `spec` is installed with Requires-Python ignored: its own setting,
    /// else cjm.yaml's.
    fn ignores_requires_python(&self, spec: &PluginSpec) -> bool {
        spec.ignore_requires_python
            .unwrap_or(self.defaults.ignore_requires_python)
    }

    /// The package requirement as the tools get it, and the local source it names,
    /// if any. A local path (`./dir`, `../x.whl`, `/abs/dir`, `-e ./dir`) is
    /// resolved against the plugins.yaml's folder, as `find_links` is; a folder or
    /// file that is not editable is hashed, so editing it reinstalls the plugin.
    fn package(&self, spec: &PluginSpec) -> Result<(String, Vec<LocalSource>), InstallError> {
        let package = spec.package.trim();
        let (editable, path) = match package.strip_prefix("-e ") {
            Some(path) => (true, path.trim()),
            None => (false, package),
        };
        if !is_local_path(path) {
            return Ok((spec.package.clone(), Vec::new()));
        }
        let resolved = self.base_dir.join(path);
        let shown = resolved.to_string_lossy().into_owned();
        if editable {
            // An editable install runs the folder's code as it is: nothing to hash.
            return Ok((format!("-e {shown}"), Vec::new()));
        }
        let hash = source_hash(&resolved).map_err(|source| InstallError::Io {
            plugin: spec.name.clone(),
            what: format!(
                "reading the local package {} (package: {package}, relative to {})",
                resolved.display(),
                self.base_dir.display()
            ),
            source,
        })?;
        let source = LocalSource {
            name: source_name(&resolved),
            path: resolved,
            hash,
        };
        Ok((shown, vec![source]))
    }

    /// The lines of one `constraints` setting: the pins, or a file's lines without
    /// blanks and comments (a relative file is relative to the plugins.yaml's folder).
    fn constraint_lines(
        &self,
        spec: &PluginSpec,
        constraints: &Constraints,
    ) -> Result<Vec<String>, InstallError> {
        match constraints {
            Constraints::Pins(pins) => Ok(pins.iter().map(|p| p.trim().to_owned()).collect()),
            Constraints::File(file) => {
                let path = self.base_dir.join(file);
                let text = fs_err::read_to_string(&path).map_err(|source| InstallError::Io {
                    plugin: spec.name.clone(),
                    what: format!("reading the constraints file {}", path.display()),
                    source,
                })?;
                Ok(text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect())
            }
        }
    }
}

/// Whether a package spec is a path on this machine rather than a requirement or a
/// URL: it starts with `.` or `/`, or has a path separator (the reference's
/// test for a path too).
pub(super) fn is_local_path(package: &str) -> bool {
    !package.contains("://")
        && !package.starts_with("git+")
        && !package.contains(" @ ")
        && (package.starts_with(['.', '/']) || package.contains(['/', '\\']))
}
