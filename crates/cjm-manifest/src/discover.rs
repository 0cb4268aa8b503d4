//! Finding installed plugins: the manifests in the search paths.

use std::path::{Path, PathBuf};

use crate::error::ManifestError;
use crate::manifest::Manifest;

/// A manifest found in a search path.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its content.
    pub manifest: Manifest,
}

impl Discovered {
    /// Whether the plugin runs on `platform` (e.g. `linux-x64`): a manifest that
    /// declares no platforms runs anywhere, as the reference assumes.
    pub fn runs_on(&self, platform: &str) -> bool {
        self.manifest
            .code
            .resources
            .as_ref()
            .is_none_or(|r| r.platforms.is_empty() || r.platforms.iter().any(|p| p == platform))
    }
}

/// What a discovery found: the usable manifests and the files it could not read.
#[derive(Debug, Default)]
pub struct Discovery {
    /// One manifest per plugin name, from the first search path that has it.
    pub found: Vec<Discovered>,
    /// Files that are not readable manifests; discovery goes on without them.
    pub errors: Vec<ManifestError>,
}

impl Discovery {
    /// The manifest of plugin `name`.
    pub fn get(&self, name: &str) -> Option<&Discovered> {
        self.found.iter().find(|d| d.manifest.code.name == name)
    }

    /// The plugins that run on `platform`.
    pub fn compatible_with<'a>(
        &'a self,
        platform: &'a str,
    ) -> impl Iterator<Item = &'a Discovered> {
        self.found.iter().filter(move |d| d.runs_on(platform))
    }
}

/// The reference's search paths: the project's own `.cjm/manifests` first, then the
/// data dir's `manifests`.
pub fn default_search_paths(cwd: &Path, manifests_dir: &Path) -> Vec<PathBuf> {
    vec![cwd.join(".cjm").join("manifests"), manifests_dir.to_owned()]
}

/// Reads every `*.json` manifest in `search_paths`, in order. A plugin found in an
/// earlier path shadows the same name in a later one (a project's local install over
/// the global one); a manifest without a name is skipped; a file that cannot be read
/// is reported in [`Discovery::errors`] and does not stop the others. Within a folder
/// files are read in name order, so the outcome never depends on the file system.
pub fn discover(search_paths: &[PathBuf]) -> Discovery {
    let mut out = Discovery::default();
    for dir in search_paths {
        let Ok(entries) = fs_err::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        for path in files {
            match Manifest::load(&path) {
                Ok(manifest) => {
                    let name = &manifest.code.name;
                    if name.is_empty() || out.get(name).is_some() {
                        continue;
                    }
                    out.found.push(Discovered { path, manifest });
                }
                Err(e) => out.errors.push(e),
            }
        }
    }
    out
}
