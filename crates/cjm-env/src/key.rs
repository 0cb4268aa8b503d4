//! What an environment contains ([`EnvRequest`]) and the name that identifies it
//! ([`EnvKey`], a hash of everything that changes the install).

use std::path::PathBuf;

use cjm_manifest::Backend;
use serde::{Deserialize, Serialize, Serializer};

/// Everything that decides what an environment contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvRequest {
    /// The tool.
    #[serde(serialize_with = "backend_name")]
    pub backend: Backend,
    /// The base interpreter (a path, or a version uv can find, like `3.11`).
    pub python: String,
    /// Requirement strings (`libdemo==1.0`, `my-plugin>=2`).
    pub requirements: Vec<String>,
    /// Local wheel files installed too (the host's own `cjm-worker`).
    pub wheels: Vec<PathBuf>,
    /// Folders of wheels to resolve from (`--find-links`).
    pub find_links: Vec<PathBuf>,
    /// The package index, if not the default.
    pub index_url: Option<String>,
    /// More package indexes.
    pub extra_index_urls: Vec<String>,
    /// Resolve from `find_links` only, never from an index.
    pub no_index: bool,
    /// Constraint lines (`requirements.txt` syntax, e.g. `libdemo<2`): they limit the
    /// versions picked without asking for anything; written to the environment's
    /// `constraints.txt` and passed with `-c`.
    pub constraints: Vec<String>,
    /// Install packages whose `Requires-Python` excludes the interpreter (pip's
    /// `--ignore-requires-python`; uv has no such flag, see the store).
    pub ignore_requires_python: bool,
    /// Local sources among the requirements (a folder or a wheel file), each with a
    /// hash of its content, so an edit makes a new environment and the tool reads
    /// the source again instead of its cache.
    pub local_sources: Vec<LocalSource>,
}

/// A backend as plugins.yaml names it (`uv`, `conda`, `python`).
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes the field by reference"
)]
fn backend_name<S: Serializer>(backend: &Backend, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(backend.as_str())
}

/// A requirement installed from a path on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSource {
    /// The folder or file.
    pub path: PathBuf,
    /// Its distribution name, when known (`[project] name` of its pyproject.toml,
    /// or a wheel's file name): uv is told to reinstall it by that name.
    pub name: Option<String>,
    /// `sha256:…` of its files (see [`crate::source_hash`]).
    pub hash: String,
}

impl EnvRequest {
    /// The index options as uv's and pip's command lines take them: `--no-index`,
    /// `--index-url`, `--extra-index-url`, `--find-links`.
    pub fn index_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if self.no_index {
            args.push("--no-index".into());
        }
        if let Some(url) = &self.index_url {
            args.extend(["--index-url".into(), url.into()]);
        }
        for url in &self.extra_index_urls {
            args.extend(["--extra-index-url".into(), url.into()]);
        }
        for dir in &self.find_links {
            args.extend(["--find-links".into(), dir.into()]);
        }
        args
    }

    /// A uv request for `python` with `requirements`.
    pub fn uv(
        python: impl Into<String>,
        requirements: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            backend: Backend::Uv,
            python: python.into(),
            requirements: requirements.into_iter().map(Into::into).collect(),
            wheels: Vec::new(),
            find_links: Vec::new(),
            index_url: None,
            extra_index_urls: Vec::new(),
            no_index: false,
            constraints: Vec::new(),
            ignore_requires_python: false,
            local_sources: Vec::new(),
        }
    }
}

/// The name of an environment: a hash of its request, the platform and the worker
/// runtime version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvKey(pub String);

impl std::fmt::Display for EnvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl EnvKey {
    /// The key of `req`. Requirements are compared as a set (order and duplicates do
    /// not matter); a wheel counts by its file name, which carries its version.
    /// Constraints (a set too), `ignore_requires_python` and local sources' hashes
    /// count only when given, so requests without them keep the keys they had.
    pub fn of(req: &EnvRequest, worker_version: &str) -> Self {
        let mut requirements: Vec<String> = req
            .requirements
            .iter()
            .map(|r| r.trim().to_owned())
            .collect();
        requirements.sort();
        requirements.dedup();
        let mut wheels: Vec<String> = req
            .wheels
            .iter()
            .map(|w| {
                w.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            })
            .collect();
        wheels.sort();
        let mut doc = serde_json::json!({
            "backend": req.backend.as_str(),
            "python": req.python,
            "requirements": requirements,
            "wheels": wheels,
            "find_links": req.find_links,
            "index_url": req.index_url,
            "extra_index_urls": req.extra_index_urls,
            "no_index": req.no_index,
            "platform": format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            "worker": worker_version,
        });
        if !req.constraints.is_empty() {
            let mut constraints: Vec<&str> = req.constraints.iter().map(|c| c.trim()).collect();
            constraints.sort_unstable();
            constraints.dedup();
            doc["constraints"] = serde_json::json!(constraints);
        }
        if req.ignore_requires_python {
            doc["ignore_requires_python"] = serde_json::json!(true);
        }
        if !req.local_sources.is_empty() {
            doc["local_sources"] = serde_json::json!(req.local_sources);
        }
        let hash = cjm_core::hash_dict_canonical(&doc);
        let hex = hash.strip_prefix("sha256:").unwrap_or(&hash);
        Self(hex[..16.min(hex.len())].to_owned())
    }
}
