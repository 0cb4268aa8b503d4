//! What cjm's test suites share, so each suite's `support.rs` holds only what is its
//! own: where the tools `cargo xtask test` provides live (the test interpreter, the
//! pinned uv, the cjm-worker wheel, the offline wheelhouse), scratch folders that clean
//! up after themselves, and one bounded wait for state that has no event to wait on.
//!
//! A dev-dependency only; nothing here is published.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `var` if set, else `fallback` under the repository's `target/`.
fn provided(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| repo_root().join("target").join(fallback), PathBuf::from)
}

/// The test interpreter, with cjm-worker and the reference installed: `CJM_PYTHON`,
/// as `cargo xtask test` sets it, else the venv `cargo xtask setup` builds.
pub fn python() -> PathBuf {
    let p = provided("CJM_PYTHON", "cjm/venv/bin/python");
    assert!(
        p.exists(),
        "no test Python at {}: run `cargo xtask test` (or `cargo xtask setup && cargo xtask \
         wheel --debug`) first",
        p.display()
    );
    p
}

/// The pinned uv: `CJM_UV`, else the one `cargo xtask setup` installs.
pub fn uv() -> PathBuf {
    provided("CJM_UV", "cjm/tools/bin/uv")
}

/// The wheels `cargo xtask setup` downloads for offline install tests (pip, uv,
/// `flit_core`, the reference package and its dependencies): `CJM_WHEELHOUSE`.
pub fn setup_wheelhouse() -> PathBuf {
    provided("CJM_WHEELHOUSE", "cjm/wheelhouse")
}

/// The cjm-worker wheel to install into environments: `CJM_WORKER_WHEEL`, as
/// `cargo xtask test` sets it, else the newest one `cargo xtask wheel` built.
pub fn worker_wheel() -> PathBuf {
    if let Some(w) = std::env::var_os("CJM_WORKER_WHEEL") {
        return PathBuf::from(w);
    }
    let dir = repo_root().join("target/wheels");
    fs_err::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .max_by_key(|p| fs_err::metadata(p).and_then(|m| m.modified()).ok())
        .expect("no cjm-worker wheel: run `cargo xtask wheel --debug` (or `cargo xtask test`)")
}

/// A scratch folder under the system's temporary folder, unique to the test (process
/// id and a counter), empty when made and removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh folder named after `name`.
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cjm-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).expect("create a scratch folder");
        Self(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the folder.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        _ = fs_err::remove_dir_all(&self.0);
    }
}

/// Waits until `pred` holds, at most `limit`; returns how long it took, or `None` if it
/// never held. For state with no event to wait on (`/proc`, counters, files): it checks
/// at once, then polls with a pause that grows from 50 µs to 5 ms, so on a busy machine
/// the wait gives its core to the process it is waiting on instead of spinning.
pub fn eventually(limit: Duration, mut pred: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        if pred() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_reports_how_long_a_condition_took_and_gives_up_at_its_limit() {
        let mut polls = 0;
        let took = eventually(Duration::from_secs(5), || {
            polls += 1;
            polls == 3
        });
        assert!(took.is_some());
        assert_eq!(polls, 3);
        assert_eq!(eventually(Duration::from_millis(20), || false), None);
    }

    #[test]
    fn a_scratch_folder_is_unique_and_removed_on_drop() {
        let a = Scratch::new("testkit");
        let b = Scratch::new("testkit");
        assert_ne!(a.path(), b.path());
        fs_err::write(a.join("f"), "x").unwrap();
        let kept = a.path().to_owned();
        drop(a);
        assert!(!kept.exists());
        assert!(b.path().is_dir());
    }
}
