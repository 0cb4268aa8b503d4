//! The two rules for files whose names or contents come from someone else: a
//! name that becomes part of a path is one plain path component, and a
//! configuration file is read only up to a size.
//!
//! Plugin names, environment keys and conda environment names come from
//! plugins.yaml, from manifests and from the command line; each is joined to a
//! folder cjm owns (`manifests/<name>.json`, `envs/<key>`, `logs/<name>.log`).
//! A name like `../../x` would leave that folder, so such names are refused
//! wherever they are read. Manifests, plugins.yaml and cjm.yaml are small; a path
//! that points at `/dev/zero` or a multi-gigabyte file is refused after
//! [`MAX_CONFIG_FILE_BYTES`] instead of being read until memory runs out.

use std::io::Read;
use std::path::Path;

/// The most cjm reads of a manifest, a plugins.yaml, a cjm.yaml or `secrets.json`:
/// 8 MiB, hundreds of times what a real one holds.
pub const MAX_CONFIG_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The longest name cjm accepts as a path component (most file systems allow 255
/// bytes, and cjm adds a suffix such as `.json`).
const MAX_NAME_BYTES: usize = 200;

/// Why `name` cannot be used as one component of a path inside a folder cjm
/// owns, or `None` when it can.
///
/// Refused: the empty name, `.` and `..`, names with a `/`, a `\`, a NUL or
/// another control character, and names longer than 200 bytes. Everything else
/// (dots, spaces, non-ASCII letters) is allowed, as the reference allows it.
///
/// ```
/// use cjm_core::path_component_problem;
///
/// assert_eq!(path_component_problem("cjm-transcription-plugin-whisper"), None);
/// assert_eq!(path_component_problem("../../x"), Some("contains `/`"));
/// assert_eq!(path_component_problem(".."), Some("is `..`"));
/// ```
pub fn path_component_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name == "." {
        return Some("is `.`");
    }
    if name == ".." {
        return Some("is `..`");
    }
    if name.contains('/') {
        return Some("contains `/`");
    }
    if name.contains('\\') {
        return Some("contains `\\`");
    }
    if name.contains('\0') {
        return Some("contains a NUL byte");
    }
    if name.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    if name.len() > MAX_NAME_BYTES {
        return Some("is longer than 200 bytes");
    }
    None
}

/// Reads `path`, refusing a file of more than `limit` bytes
/// (`ErrorKind::FileTooLarge`) without reading more than `limit + 1` of them, so
/// a device such as `/dev/zero` is refused too. The error names the path.
pub fn read_capped_bytes(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = fs_err::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "{} is larger than {}, the most cjm reads of a configuration file",
                path.display(),
                human_bytes(limit)
            ),
        ));
    }
    Ok(bytes)
}

/// [`read_capped_bytes`], as UTF-8 text.
pub fn read_capped(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_capped_bytes(path, limit)?).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn human_bytes(n: u64) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::{path_component_problem, read_capped};

    #[track_caller]
    fn check(name: &str, problem: Option<&str>) {
        assert_eq!(path_component_problem(name), problem, "{name:?}");
    }

    #[test]
    fn names_that_leave_their_folder_are_refused_and_ordinary_ones_kept() {
        check("whisper", None);
        check("cjm-text-plugin-nltk", None);
        check("v1.2 (beta)", None);
        check(".hidden", None);
        check("名前", None);
        check("", Some("is empty"));
        check(".", Some("is `.`"));
        check("..", Some("is `..`"));
        check("../../somewhere", Some("contains `/`"));
        check("/etc", Some("contains `/`"));
        check("a\\b", Some("contains `\\`"));
        check("a\0b", Some("contains a NUL byte"));
        check("a\nb", Some("contains a control character"));
        check(&"x".repeat(201), Some("is longer than 200 bytes"));
        check(&"x".repeat(200), None);
    }

    #[test]
    fn an_endless_file_is_refused_after_the_limit() {
        let err = read_capped(std::path::Path::new("/dev/zero"), 1024).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(
            err.to_string()
                .contains("/dev/zero is larger than 1024 bytes")
        );
    }

    #[test]
    fn a_file_within_the_limit_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("cjm-core-capped-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let path = dir.join("small.yaml");
        fs_err::write(&path, "plugins: []\n").unwrap();
        assert_eq!(read_capped(&path, 12).unwrap(), "plugins: []\n");
        assert_eq!(
            read_capped(&path, 11).unwrap_err().kind(),
            std::io::ErrorKind::FileTooLarge
        );
        fs_err::remove_dir_all(&dir).unwrap();
    }
}
