use std::path::PathBuf;

use cjm_manifest::{Manifest, default_search_paths, discover};

use crate::fixture;

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cjm-discover-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

/// Writes the reference's full manifest as plugin `name`, version `version`, with
/// `platforms`, into `dir`.
fn put(dir: &std::path::Path, name: &str, version: &str, platforms: &[&str]) {
    let mut m = Manifest::load(fixture("v2/full.json")).unwrap();
    name.clone_into(&mut m.code.name);
    version.clone_into(&mut m.code.version);
    if let Some(r) = m.code.resources.as_mut() {
        r.platforms = platforms.iter().map(|p| (*p).to_owned()).collect();
    }
    fs_err::create_dir_all(dir).unwrap();
    m.write(dir.join(format!("{name}.json"))).unwrap();
}

#[test]
fn a_project_install_shadows_the_global_one_of_the_same_name() {
    let s = Scratch::new("shadow");
    let paths = default_search_paths(&s.0.join("project"), &s.0.join("data/manifests"));
    put(&paths[0], "whisper", "2.0.0", &[]);
    put(&paths[1], "whisper", "1.0.0", &[]);
    put(&paths[1], "ocr", "1.0.0", &[]);
    let found = discover(&paths);
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    let names: Vec<(&str, &str)> = found
        .found
        .iter()
        .map(|d| {
            (
                d.manifest.code.name.as_str(),
                d.manifest.code.version.as_str(),
            )
        })
        .collect();
    assert_eq!(names, [("whisper", "2.0.0"), ("ocr", "1.0.0")]);
}

#[test]
fn a_broken_manifest_is_reported_and_the_others_are_still_found() {
    let s = Scratch::new("broken");
    let dir = s.0.join("manifests");
    put(&dir, "good", "1.0.0", &[]);
    fs_err::write(dir.join("broken.json"), "{ not json").unwrap();
    fs_err::write(dir.join("notes.txt"), "not a manifest").unwrap();
    let found = discover(std::slice::from_ref(&dir));
    assert_eq!(found.found.len(), 1);
    assert_eq!(found.errors.len(), 1);
    assert!(
        found.errors[0].to_string().contains("broken.json"),
        "{}",
        found.errors[0]
    );
    assert!(found.get("good").is_some());
}

#[test]
fn platform_filtering_keeps_plugins_without_a_declared_platform() {
    let s = Scratch::new("platform");
    let dir = s.0.join("manifests");
    put(&dir, "anywhere", "1.0.0", &[]);
    put(&dir, "linux-only", "1.0.0", &["linux-x64"]);
    put(&dir, "mac-only", "1.0.0", &["darwin-arm64"]);
    let found = discover(std::slice::from_ref(&dir));
    let mut on_linux: Vec<&str> = found
        .compatible_with("linux-x64")
        .map(|d| d.manifest.code.name.as_str())
        .collect();
    on_linux.sort_unstable();
    assert_eq!(on_linux, ["anywhere", "linux-only"]);
}

#[test]
fn missing_search_paths_are_skipped() {
    let found = discover(&[PathBuf::from("/nonexistent/cjm/manifests")]);
    assert!(found.found.is_empty() && found.errors.is_empty());
}
