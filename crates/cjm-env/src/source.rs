//! Local plugin sources: what a `package: ./dir` holds, as a hash, so that editing a
//! plugin's code makes `install-all` reinstall it.

use std::path::Path;

use serde_json::{Map, Value};

/// Names never part of a source: caches, version control, build output and
/// virtual environments, which change without the plugin's code changing.
const SKIPPED: &[&str] = &[
    "__pycache__",
    ".git",
    ".hg",
    ".svn",
    "build",
    "dist",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "node_modules",
];

/// `sha256:…` of a local source: a file's bytes, or every file under a folder with
/// its relative path, in name order. Left out: `__pycache__`, `.git`, `build`,
/// `dist`, virtual environments, `*.egg-info`, `*.pyc` and `.*_cache` folders (as
/// uv, which keys a local package by its content, leaves build output out too).
pub fn source_hash(path: &Path) -> std::io::Result<String> {
    if !fs_err::metadata(path)?.is_dir() {
        return Ok(cjm_core::hash_bytes(&fs_err::read(path)?));
    }
    let mut files = Map::new();
    walk(path, path, &mut files)?;
    Ok(cjm_core::hash_dict_canonical(&Value::Object(files)))
}

fn walk(root: &Path, dir: &Path, files: &mut Map<String, Value>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs_err::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(fs_err::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        let skipped = SKIPPED.contains(&name.as_ref())
            || name.ends_with(".egg-info")
            || name.ends_with(".pyc")
            || (name.starts_with('.') && name.ends_with("_cache"));
        if skipped {
            continue;
        }
        // Follows symbolic links, as a build backend copying the tree would.
        let meta = fs_err::metadata(&path)?;
        if meta.is_dir() {
            walk(root, &path, files)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let bytes = fs_err::read(&path)?;
            files.insert(
                rel.to_string_lossy().into_owned(),
                Value::String(cjm_core::hash_bytes(&bytes)),
            );
        }
    }
    Ok(())
}

/// The distribution name a local source installs as: `[project] name` in a folder's
/// `pyproject.toml`, or the part of a wheel's or sdist's file name before the
/// version; `None` when it cannot be told without building it.
pub fn source_name(path: &Path) -> Option<String> {
    if path.is_dir() {
        let text = fs_err::read_to_string(path.join("pyproject.toml")).ok()?;
        return project_name(&text);
    }
    let file = path.file_name()?.to_string_lossy().into_owned();
    let stem = file
        .strip_suffix(".whl")
        .or_else(|| file.strip_suffix(".tar.gz"))
        .or_else(|| file.strip_suffix(".zip"))?;
    stem.split('-').next().map(str::to_owned)
}

/// `name = "…"` in the `[project]` table of a pyproject.toml; a small reader that
/// needs no TOML parser for the one key it looks at.
fn project_name(text: &str) -> Option<String> {
    let mut in_project = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_project = line == "[project]";
            continue;
        }
        if !in_project {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "name" {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            return (!value.is_empty()).then(|| value.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::project_name;

    #[test]
    fn the_project_name_is_read_from_the_project_table_only() {
        let text = "[build-system]\nname = \"nope\"\n[project]\nversion = \"1\"\nname = 'my-plugin'\n[tool.x]\nname = \"other\"\n";
        assert_eq!(project_name(text).as_deref(), Some("my-plugin"));
        assert_eq!(project_name("[tool.x]\nname = \"x\"\n"), None);
    }
}
