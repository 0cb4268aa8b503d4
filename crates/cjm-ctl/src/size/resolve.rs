//! What a plugin would install and how big it is: `uv pip compile` of its request,
//! the resolved lines parsed, and each distribution's size from the local wheelhouse or
//! the index's metadata.

//! `estimate-size`: the disk space plugins' environments take, or would take.
//!
//! An installed plugin's environment is measured on disk. For one not installed, uv
//! resolves its requirement set (`uv pip compile`, offline first), and the sizes of
//! the resolved wheels found in the entry's `find_links` folders are added up.
//! Unlike the reference, nothing asks PyPI for sizes: a package that would come from
//! an index is listed with an unknown size.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cjm_env::EnvRequest;

use super::Package;

/// A resolved requirement: a name and version, or a local file.
pub(super) enum Resolved {
    Pinned { name: String, version: String },
    File(PathBuf),
    Other(String),
}

/// `uv pip compile` of `req`'s requirements (its wheels too), with its index
/// options; with `offline`, uv uses only its cache and find_links.
pub(super) fn compile(uv: &Path, req: &EnvRequest, offline: bool) -> Result<Vec<Resolved>, String> {
    let mut cmd = Command::new(uv);
    cmd.args([
        "pip",
        "compile",
        "-",
        "--quiet",
        "--no-header",
        "--no-annotate",
    ]);
    if offline {
        cmd.arg("--offline");
    }
    if let Some(v) = python_version(&req.python) {
        cmd.args(["--python-version", v]);
    }
    cmd.args(req.index_args());
    // As the store runs it: no activated environment, no project configuration.
    cmd.env_remove("VIRTUAL_ENV")
        .env("UV_NO_CONFIG", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut input = req.requirements.join("\n");
    for w in &req.wheels {
        input.push('\n');
        input.push_str(&w.to_string_lossy());
    }
    input.push('\n');
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", uv.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for uv: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(4)..].join(" / ");
        return Err(format!(
            "uv could not resolve the requirements: {}",
            tail.trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .collect())
}

/// A `--python-version` for uv from the request's Python (`3.11`; not a path, not a
/// bare `3`).
pub(super) fn python_version(python: &str) -> Option<&str> {
    let mut parts = python.split('.');
    let ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(python)
}

pub(super) fn parse_line(line: &str) -> Option<Resolved> {
    let line = line.split(';').next().unwrap_or("").trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
        return None;
    }
    if let Some((name, version)) = line.split_once("==") {
        return Some(Resolved::Pinned {
            name: name.trim().to_owned(),
            version: version.trim().to_owned(),
        });
    }
    let location = line.split_once(" @ ").map_or(line, |(_, url)| url.trim());
    let file = location.strip_prefix("file://").unwrap_or(location);
    let file = PathBuf::from(percent_decode(file));
    if file.is_absolute() && file.is_file() {
        return Some(Resolved::File(file));
    }
    Some(Resolved::Other(line.to_owned()))
}

/// `%20` and friends in a `file://` URL.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The distributions in `find_links` folders: (normalized name, normalized version) →
/// the largest matching file (platform wheels of one version differ little).
pub(super) fn local_files(find_links: &[PathBuf]) -> BTreeMap<(String, String), (PathBuf, u64)> {
    let mut files = BTreeMap::new();
    for dir in find_links.iter().filter(|d| d.is_dir()) {
        let Ok(entries) = fs_err::read_dir(dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(key) = distribution_of(name) else {
                continue;
            };
            let size = e.metadata().map_or(0, |m| m.len());
            let entry = files.entry(key).or_insert((path.clone(), size));
            if size > entry.1 {
                *entry = (path, size);
            }
        }
    }
    files
}

/// (name, version) of a wheel or source archive file name, normalized.
pub(super) fn distribution_of(file: &str) -> Option<(String, String)> {
    let (name, version) = split_file_name(file)?;
    Some((normalize_name(name), normalize_version(version)))
}

/// (name, version) of a wheel or source archive file name, as written.
pub(super) fn split_file_name(file: &str) -> Option<(&str, &str)> {
    if let Some(stem) = file.strip_suffix(".whl") {
        let mut parts = stem.splitn(3, '-');
        Some((parts.next()?, parts.next()?))
    } else {
        // Source archives: the version is after the last dash.
        file.strip_suffix(".tar.gz")
            .or_else(|| file.strip_suffix(".zip"))?
            .rsplit_once('-')
    }
}

/// PEP 503: lowercase, runs of `-`, `_` and `.` as one `-`.
pub(super) fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Lowercase, without trailing `.0` release parts (`1.0.0` and `1.0` are one version).
pub(super) fn normalize_version(version: &str) -> String {
    let v = version.to_ascii_lowercase();
    let release_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (release, rest) = v.split_at(release_end);
    let mut parts: Vec<&str> = release.trim_end_matches('.').split('.').collect();
    while parts.len() > 1 && parts.last().is_some_and(|p| p.bytes().all(|b| b == b'0')) {
        parts.pop();
    }
    format!("{}{rest}", parts.join("."))
}

pub(super) fn sizes(resolved: Vec<Resolved>, find_links: &[PathBuf]) -> Vec<Package> {
    let local = local_files(find_links);
    resolved
        .into_iter()
        .map(|r| match r {
            Resolved::Pinned { name, version } => {
                let found = local.get(&(normalize_name(&name), normalize_version(&version)));
                Package {
                    name,
                    version: Some(version),
                    file: found.map(|(p, _)| p.clone()),
                    bytes: found.map(|(_, s)| *s),
                }
            }
            Resolved::File(path) => {
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (name, version) = split_file_name(&file_name).map_or_else(
                    || (file_name.clone(), None),
                    |(n, v)| (normalize_name(n), Some(v.to_owned())),
                );
                Package {
                    name,
                    version,
                    bytes: fs_err::metadata(&path).ok().map(|m| m.len()),
                    file: Some(path),
                }
            }
            Resolved::Other(line) => Package {
                name: line,
                version: None,
                file: None,
                bytes: None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_normalize() {
        assert_eq!(
            normalize_name("Cjm_Demo.Plugin--System"),
            "cjm-demo-plugin-system"
        );
        assert_eq!(normalize_version("1.0.0"), "1");
        assert_eq!(normalize_version("1.0"), "1");
        assert_eq!(normalize_version("2.10.0rc1"), "2.10rc1");
        assert_eq!(normalize_version("2.10"), "2.10");
        assert_eq!(
            distribution_of("cjm_worker-0.1.0-cp39-abi3-linux_x86_64.whl"),
            Some(("cjm-worker".to_owned(), "0.1".to_owned()))
        );
        assert_eq!(
            distribution_of("libdemo-1.0.tar.gz"),
            Some(("libdemo".to_owned(), "1".to_owned()))
        );
        assert_eq!(python_version("3.11"), Some("3.11"));
        assert_eq!(python_version("3"), None);
        assert_eq!(python_version("/usr/bin/python3"), None);
    }
}
