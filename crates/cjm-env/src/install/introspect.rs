//! Introspection: the plugin's metadata code, run with the environment's own
//! interpreter in a clean environment, under a timeout, writing its result to a
//! scratch file (the plugin owns stdout).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use cjm_manifest::PluginSpec;
use serde_json::{Map, Value, json};

use super::Installer;
use super::request::is_local_path;
use crate::error::{InstallError, output_tail};
use crate::source::source_name;

/// The introspection script, run with the environment's interpreter.
const INTROSPECT: &str = include_str!("introspect.py");
/// Lines of what a failing introspection printed that its error keeps, when the
/// script could not report the plugin's own error (a timeout, a crash).
const PRINTED_TAIL: usize = 15;
/// Lines of a plugin's traceback that the error keeps: enough for the whole of a
/// typical import chain, whose cause is often at the top.
const TRACEBACK_TAIL: usize = 60;

impl Installer {
    /// Runs the introspection script with `python`.
    pub(super) fn introspect(
        &self,
        python: &Path,
        spec: &PluginSpec,
    ) -> Result<Introspected, InstallError> {
        let (module, distribution) = module_and_distribution(&spec.package);
        let request = json!({
            "module": module,
            "distribution": distribution,
            "plugin": spec.name,
            "guessed_from": module_guess(&spec.package),
            "allow_missing_interface": spec.allow_missing_interface,
        });
        let out = scratch_file();
        let mut cmd = Command::new(python);
        cmd.arg("-I")
            .arg("-c")
            .arg(INTROSPECT)
            .arg(request.to_string())
            .arg(&out)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(std::env::temp_dir());
        for name in cjm_core::INHERITED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some(dir) = &self.plugin_data_dir {
            cmd.env("CJM_DATA_DIR", dir);
        }
        if let Some(dir) = &self.models_dir {
            cmd.env("CJM_MODELS_DIR", dir);
        }
        cmd.envs(&spec.env_vars);
        let failed = |message: String, detail: Vec<String>| InstallError::Introspection {
            plugin: spec.name.clone(),
            message,
            detail,
        };
        let ran = run_with_timeout(cmd, self.timeout)
            .map_err(|e| failed(format!("cannot run {}: {e}", python.display()), Vec::new()))?;
        let text = fs_err::read_to_string(&out).unwrap_or_default();
        let _ = fs_err::remove_file(&out);
        let printed = output_tail(&ran.stdout, &ran.stderr, PRINTED_TAIL);
        let Some(status) = ran.status else {
            return Err(failed(
                format!(
                    "the plugin's code did not finish within {} s and was killed",
                    self.timeout.as_secs()
                ),
                printed,
            ));
        };
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match doc.get("ok").and_then(Value::as_bool) {
            Some(true) => {
                let meta = doc
                    .get("meta")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let warnings = doc
                    .get("warnings")
                    .and_then(Value::as_array)
                    .map(|w| {
                        w.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                let source = doc
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or("meta")
                    .to_owned();
                Ok(Introspected {
                    meta,
                    source,
                    warnings,
                })
            }
            Some(false) => {
                let message = doc
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned();
                let detail = doc.get("detail").and_then(Value::as_str).unwrap_or("");
                let mut lines: Vec<String> = detail.lines().map(str::to_owned).collect();
                if lines.is_empty() {
                    lines = printed;
                }
                let keep = lines.len().saturating_sub(TRACEBACK_TAIL);
                Err(failed(message, lines.split_off(keep)))
            }
            None => Err(failed(
                format!("the interpreter exited ({status}) without a result"),
                printed,
            )),
        }
    }
}

/// What introspection reported.
pub(super) struct Introspected {
    pub(super) meta: Map<String, Value>,
    pub(super) source: String,
    pub(super) warnings: Vec<String>,
}

/// The import name and distribution name a package spec suggests: the reference's
/// rules for git URLs and paths (the last path segment, `-` → `_`), and for a pip
/// requirement its name without extras, versions or markers.
pub(crate) fn module_and_distribution(package: &str) -> (String, Option<String>) {
    let package = package.trim();
    if let Some(url) = package.strip_prefix("git+") {
        let repo = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
        let repo = repo.split('@').next().unwrap_or(repo);
        let name = repo.trim_end_matches(".git");
        return (name.replace('-', "_"), None);
    }
    if let Some(path) = package.strip_prefix("-e ") {
        let name = Path::new(path.trim())
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        return (name.replace('-', "_"), None);
    }
    if package.contains('/') || package.contains('\\') {
        let name = Path::new(package)
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        // A wheel or sdist file: its distribution name comes before the first `-`.
        let stem = name
            .strip_suffix(".whl")
            .or_else(|| name.strip_suffix(".tar.gz"))
            .map(|s| s.split('-').next().unwrap_or(s).to_owned());
        return match stem {
            Some(dist) => (dist.replace('-', "_"), Some(dist)),
            None => (name.replace('-', "_"), None),
        };
    }
    let end = package
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(package.len());
    let name = &package[..end];
    (
        name.replace(['-', '.'], "_").to_lowercase(),
        Some(name.to_owned()),
    )
}

/// Where [`module_and_distribution`]'s import name comes from, for messages.
fn module_guess(package: &str) -> String {
    let package = package.trim();
    if package.starts_with("git+") {
        format!("the repository name in `{package}` (`-` → `_`, as the reference does)")
    } else if package.starts_with("-e ") || is_local_path(package) {
        if source_name(Path::new(package)).is_some() && !Path::new(package).is_dir() {
            format!("the file name of `{package}`")
        } else {
            format!("the folder name of `{package}` (`-` → `_`, as the reference does)")
        }
    } else {
        format!(
            "the requirement `{package}` (its name, lowercased, `-` and `.` → `_`, as the reference does)"
        )
    }
}

/// A fresh path in the temporary folder for one introspection's result.
fn scratch_file() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "cjm-introspect-{}-{n}-{nanos}.json",
        std::process::id()
    ))
}

/// What a command printed, and how it ended (`None`: killed at the deadline).
struct Ran {
    status: Option<std::process::ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd`, killing it if it outlives `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> std::io::Result<Ran> {
    let child = cmd.spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    if let Ok(out) = rx.recv_timeout(timeout) {
        let out = out?;
        return Ok(Ran {
            status: Some(out.status),
            stdout: out.stdout,
            stderr: out.stderr,
        });
    }
    // Not reaped yet (the waiting thread has not returned), so the pid is still
    // this child's.
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let out = rx
        .recv()
        .map_err(|_| std::io::Error::other("the waiting thread is gone"))??;
    Ok(Ran {
        status: None,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::module_and_distribution;

    #[test]
    fn module_names_follow_the_reference_and_drop_version_specifiers() {
        let cases = [
            (
                "demo-plugin-one",
                "demo_plugin_one",
                Some("demo-plugin-one"),
            ),
            (
                "demo-plugin-one==0.1.0",
                "demo_plugin_one",
                Some("demo-plugin-one"),
            ),
            (
                "Demo.Plugin[gpu]>=1; python_version>'3'",
                "demo_plugin",
                Some("Demo.Plugin"),
            ),
            (
                "git+https://github.com/cj-mills/cjm-whisper-plugin.git",
                "cjm_whisper_plugin",
                None,
            ),
            (
                "git+https://github.com/o/my-plugin.git@v1.2",
                "my_plugin",
                None,
            ),
            ("-e ./plugins/my-dev-plugin", "my_dev_plugin", None),
            ("./plugins/local-plugin", "local_plugin", None),
            (
                "./wh/demo_plugin_two-0.1.0-py3-none-any.whl",
                "demo_plugin_two",
                Some("demo_plugin_two"),
            ),
        ];
        for (package, module, dist) in cases {
            let (m, d) = module_and_distribution(package);
            assert_eq!((m.as_str(), d.as_deref()), (module, dist), "{package}");
        }
    }
}
