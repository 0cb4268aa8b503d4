//! `tidy`: checks of the source tree's shape that no compiler makes. Every file in
//! `crates/*/src` starts with a `//!` saying what it holds, and none grows past
//! [`MAX_LINES`] unless its `//!` gives the reason (a line starting
//! [`LONG_REASON`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::failure;
use crate::paths::Paths;

/// About where a module stops being one concept.
const MAX_LINES: usize = 600;
/// How a long file's `//!` says why it is long.
const LONG_REASON: &str = "//! Long because";

/// What is wrong with one file, if anything.
fn problem(text: &str) -> Option<String> {
    let first = text.lines().next().unwrap_or_default();
    if !first.starts_with("//!") {
        return Some("does not start with a `//!` saying what it holds".to_owned());
    }
    let lines = text.lines().count();
    let explained = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .any(|l| l.starts_with(LONG_REASON));
    (lines > MAX_LINES && !explained).then(|| {
        format!(
            "has {lines} lines (over {MAX_LINES}): split it along its concepts, or say why \
             it is one in its `//!` with a line starting `{LONG_REASON}`"
        )
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

pub(crate) fn tidy(paths: &Paths) -> Result<()> {
    let mut files = Vec::new();
    for krate in fs_err::read_dir(paths.root.join("crates"))? {
        let src = krate?.path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files)?;
        }
    }
    files.sort();
    let mut problems = Vec::new();
    for f in &files {
        let text = fs_err::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        if let Some(p) = problem(&text) {
            problems.push(format!("  {}: {p}", paths.show(f)));
        }
    }
    if problems.is_empty() {
        eprintln!(
            "tidy: {} source files, each with a `//!` and a size that fits",
            files.len()
        );
        return Ok(());
    }
    eprintln!("{}", problems.join("\n"));
    Err(failure(
        format!("test: tidy found {} file(s) out of shape", problems.len()),
        "fix the files listed above",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_needs_a_module_doc_and_a_reason_to_be_long() {
        assert_eq!(problem("//! A module.\nfn f() {}\n"), None);
        assert!(problem("fn f() {}\n").is_some_and(|p| p.contains("`//!`")));
        let long = format!("//! A module.\n{}", "fn f() {}\n".repeat(MAX_LINES));
        assert!(problem(&long).is_some_and(|p| p.contains("over 600")));
        let explained = format!(
            "//! A module.\n//! Long because one table must stay whole.\n{}",
            "fn f() {}\n".repeat(MAX_LINES)
        );
        assert_eq!(problem(&explained), None);
    }
}
