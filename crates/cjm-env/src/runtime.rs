//! The tools cjm runs environments with: finding uv, and `setup-runtime`, which puts
//! a pinned uv or a micromamba into cjm's runtime folder.
//!
//! Downloads go through `curl` and archives through `tar`, both present on the
//! machines cjm targets, so no HTTP or compression code is linked into cjm.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cjm_core::{CjmConfig, current_platform};

use crate::error::{EnvError, TOOL_TAIL, output_tail};

/// The uv `setup_uv` installs: the one cjm is built and tested with
/// (`xtask/requirements/tools.txt`).
pub const UV_VERSION: &str = "0.13.9";

/// micromamba's download address per platform key, as the reference has them. Each
/// serves a `.tar.bz2` holding `bin/micromamba` (`Library/bin/micromamba.exe` on
/// Windows).
const MICROMAMBA_URLS: &[(&str, &str)] = &[
    (
        "linux-x64",
        "https://micro.mamba.pm/api/micromamba/linux-64/latest",
    ),
    (
        "linux-arm64",
        "https://micro.mamba.pm/api/micromamba/linux-aarch64/latest",
    ),
    (
        "darwin-x64",
        "https://micro.mamba.pm/api/micromamba/osx-64/latest",
    ),
    (
        "darwin-arm64",
        "https://micro.mamba.pm/api/micromamba/osx-arm64/latest",
    ),
    (
        "win-x64",
        "https://micro.mamba.pm/api/micromamba/win-64/latest",
    ),
];

/// Where cjm keeps its own tools: `runtime.prefix` when set (the reference's
/// project-local runtime, where micromamba lives too, whatever the mode), else
/// `<data_dir>/runtime`. Tools go in its `bin`.
pub fn runtime_dir(cfg: &CjmConfig) -> PathBuf {
    cfg.runtime
        .prefix
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("runtime"))
}

/// The uv to use: `$CJM_UV` if set and not empty, else `<runtime_dir>/bin/uv` if it
/// is there (what `setup_uv` installs), else `uv` on `$PATH`, else none. `env` reads
/// the environment.
pub fn find_uv(cfg: &CjmConfig, env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(uv) = env("CJM_UV").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(uv));
    }
    let own = runtime_dir(cfg).join("bin").join("uv");
    if is_executable(&own) {
        return Some(own);
    }
    search_path("uv", env("PATH").as_deref())
}

/// Installs uv [`UV_VERSION`] from the package index into `<runtime_dir>/bin/uv` and returns its
/// path; if it is there already and not `force`, returns it and does nothing.
///
/// `python`'s pip fetches the wheel into a staging folder beside the destination
/// (`pip install --target`), so that interpreter's own packages are never touched,
/// and the binary is renamed into place, so an interrupted install leaves no
/// half-written `uv`. pip's index settings (`PIP_INDEX_URL`, `pip.conf`) apply.
pub fn setup_uv(cfg: &CjmConfig, python: &Path, force: bool) -> Result<PathBuf, EnvError> {
    let dir = runtime_dir(cfg);
    let dest = dir.join("bin").join("uv");
    if !force && dest.is_file() {
        return Ok(dest);
    }
    let staging = dir.join(format!(".uv-install-{}", std::process::id()));
    remove_dir_if_exists(&staging)?;
    let result = install_uv(python, &staging, &dest);
    let cleanup = remove_dir_if_exists(&staging);
    result.and(cleanup).map(|()| dest)
}

fn install_uv(python: &Path, staging: &Path, dest: &Path) -> Result<(), EnvError> {
    let requirement = format!("uv=={UV_VERSION}");
    let mut pip = Command::new(python);
    pip.args(["-m", "pip", "install", "--quiet", "--no-input"])
        .args(["--disable-pip-version-check", "--no-deps"])
        // uv's source distribution needs a Rust toolchain and a long build.
        .args(["--only-binary", ":all:", "--target"])
        .arg(staging)
        .arg(&requirement)
        // `--target` never touches the interpreter, so a venv-only policy does not apply.
        .env("PIP_REQUIRE_VIRTUALENV", "0")
        .stdin(Stdio::null());
    let captured = capture(pip)?;
    if !captured.success {
        return Err(EnvError::Tool {
            step: "installing uv with pip",
            key: requirement,
            command: captured.command,
            status: captured.status,
            output_tail: captured.tail,
        });
    }
    let built = staging.join("bin").join("uv");
    if !built.is_file() {
        return Err(io(
            &format!("finding uv at {} after pip installed it", built.display()),
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    // pip keeps the mode the wheel records, which a hand-made wheel may lack.
    make_executable(&built)?;
    create_parent(dest)?;
    fs_err::rename(&built, dest).map_err(|e| io("moving uv into place", e))
}

/// The micromamba download address for a platform key (`linux-x64`, `darwin-arm64`,
/// ...); none for a platform micromamba is not built for.
pub fn micromamba_url(platform: &str) -> Option<String> {
    MICROMAMBA_URLS
        .iter()
        .find(|(key, _)| *key == platform)
        .map(|(_, url)| (*url).to_owned())
}

/// Downloads micromamba for this platform to the configured binary path
/// ([`CjmConfig::conda_binary_path`]) and returns that path; if it is there already
/// and not `force`, returns it and does nothing. With a `runtime.prefix` it creates
/// `<prefix>/bin` and `<prefix>/envs` first, as the reference does.
///
/// The archive is fetched with `curl` and unpacked with `tar` (which needs
/// `bzip2`) in a staging folder beside the binary, then the binary is renamed into
/// place. Without a network the error names the address, curl's reason, and how to
/// put the binary there by hand.
pub fn setup_micromamba(cfg: &CjmConfig, force: bool) -> Result<PathBuf, EnvError> {
    let platform = current_platform();
    let url = micromamba_url(&platform).ok_or_else(|| {
        setup_problem(
            &format!("micromamba has no download for platform {platform}"),
            &format!("install micromamba yourself and set runtime.binaries.{platform} in cjm.yaml"),
        )
    })?;
    setup_micromamba_from(cfg, &url, force)
}

/// [`setup_micromamba`] from `url` instead of the platform's address (for tests).
#[doc(hidden)]
pub fn setup_micromamba_from(cfg: &CjmConfig, url: &str, force: bool) -> Result<PathBuf, EnvError> {
    let platform = current_platform();
    let dest = cfg.conda_binary_path().ok_or_else(|| {
        setup_problem(
            "there is nowhere to put micromamba",
            &format!("set runtime.prefix or runtime.binaries.{platform} in cjm.yaml"),
        )
    })?;
    if !force && dest.is_file() {
        return Ok(dest);
    }
    if let Some(prefix) = &cfg.runtime.prefix {
        for dir in [prefix.join("bin"), prefix.join("envs")] {
            fs_err::create_dir_all(&dir).map_err(|e| io("creating the runtime folders", e))?;
        }
    }
    create_parent(&dest)?;
    let staging = dest.with_file_name(format!(".micromamba-download-{}", std::process::id()));
    remove_dir_if_exists(&staging)?;
    let result = fetch_micromamba(url, &staging, &dest).map_err(|failure| match failure {
        Fetch::Failed(reason) => {
            let instead = format!(
                "download {url} on a connected machine, extract bin/micromamba from the \
                 archive and place it at {}, or set runtime.binaries.{platform} in cjm.yaml",
                dest.display()
            );
            download_failed(url, &dest, reason, Some(instead))
        }
        Fetch::Error(e) => e,
    });
    let cleanup = remove_dir_if_exists(&staging);
    result.and(cleanup).map(|()| dest)
}

/// Why a download did not give a file.
enum Fetch {
    /// curl could not be run or failed; the reason as one line.
    Failed(String),
    /// Anything else (local files).
    Error(EnvError),
}

impl From<EnvError> for Fetch {
    fn from(e: EnvError) -> Self {
        Self::Error(e)
    }
}

fn fetch_micromamba(url: &str, staging: &Path, dest: &Path) -> Result<(), Fetch> {
    fs_err::create_dir_all(staging).map_err(|e| io("creating a staging folder", e))?;
    let archive = staging.join("micromamba.tar.bz2");
    fetch(url, &archive)?;
    let mut tar = Command::new("tar");
    tar.arg("-xjf")
        .arg(&archive)
        .arg("-C")
        .arg(staging)
        .stdin(Stdio::null());
    let captured = capture(tar)?;
    if !captured.success {
        let reason = captured.tail.last().cloned().unwrap_or(captured.status);
        return Err(Fetch::Failed(format!(
            "the download is not a micromamba archive ({reason})"
        )));
    }
    let name = OsStr::new(if cfg!(windows) {
        "micromamba.exe"
    } else {
        "micromamba"
    });
    let Some(binary) = find_file(staging, name)? else {
        return Err(Fetch::Failed(format!(
            "the archive holds no {}",
            name.to_string_lossy()
        )));
    };
    make_executable(&binary)?;
    fs_err::rename(&binary, dest).map_err(|e| io("moving micromamba into place", e))?;
    Ok(())
}

/// Downloads `url` to `dest` with `curl`, following redirects and failing on an HTTP
/// error. The file appears complete or not at all.
pub fn download(url: &str, dest: &Path) -> Result<(), EnvError> {
    fetch(url, dest).map_err(|failure| match failure {
        Fetch::Failed(reason) => download_failed(url, dest, reason, None),
        Fetch::Error(e) => e,
    })
}

fn fetch(url: &str, dest: &Path) -> Result<(), Fetch> {
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut curl = Command::new("curl");
    curl.args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--connect-timeout", "30", "--retry", "2", "--output"])
        .arg(&part)
        .arg(url)
        .stdin(Stdio::null());
    let captured = match capture(curl) {
        Ok(captured) => captured,
        Err(EnvError::ToolMissing { source, .. }) => {
            return Err(Fetch::Failed(format!(
                "cannot run curl ({source}), which cjm downloads with: install curl"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if !captured.success {
        let _ = fs_err::remove_file(&part);
        let reason = captured.tail.last().cloned().unwrap_or(captured.status);
        return Err(Fetch::Failed(reason));
    }
    fs_err::rename(&part, dest).map_err(|e| io("moving the download into place", e))?;
    Ok(())
}

/// The first file called `name` under `dir`, depth first.
fn find_file(dir: &Path, name: &OsStr) -> Result<Option<PathBuf>, EnvError> {
    let entries = fs_err::read_dir(dir).map_err(|e| io("reading the unpacked archive", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("reading the unpacked archive", e))?;
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name)? {
                return Ok(Some(found));
            }
        } else if path.file_name() == Some(name) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), EnvError> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = fs_err::metadata(path)
        .map_err(|e| io("reading a tool's permissions", e))?
        .permissions();
    perms.set_mode(perms.mode() | 0o755);
    fs_err::set_permissions(path, perms).map_err(|e| io("making a tool executable", e))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<(), EnvError> {
    Ok(())
}

/// `name` on `path` (a `PATH` value), as [`find_uv`] searches it.
pub fn find_on_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    search_path(name, path)
}

/// `name` in the first folder of `path` (a `PATH` value) holding an executable file
/// of that name. Empty entries, which a shell reads as the working directory, are
/// skipped: a tool is never picked up from wherever cjm happens to run.
pub(crate) fn search_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file this user may run.
pub(crate) fn is_executable(path: &Path) -> bool {
    let Ok(meta) = fs_err::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// A finished tool run.
pub(crate) struct Captured {
    /// Whether it exited with status 0.
    pub(crate) success: bool,
    /// The command, as a shell would show it.
    pub(crate) command: String,
    /// How it ended.
    pub(crate) status: String,
    /// Its standard output.
    pub(crate) stdout: String,
    /// The last [`TOOL_TAIL`] lines of its output, stdout then stderr.
    pub(crate) tail: Vec<String>,
}

/// Runs `cmd` to the end with its output captured. Only a tool that cannot be
/// started is an error here; a failing one is a [`Captured`] with `success` false.
pub(crate) fn capture(mut cmd: Command) -> Result<Captured, EnvError> {
    let command = shown(&cmd);
    let out = cmd.output().map_err(|source| EnvError::ToolMissing {
        tool: PathBuf::from(cmd.get_program()),
        source,
    })?;
    Ok(Captured {
        success: out.status.success(),
        command,
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        tail: output_tail(&out.stdout, &out.stderr, TOOL_TAIL),
    })
}

/// `cmd` as a shell would show it, quoting what needs it.
fn shown(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
        {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn create_parent(path: &Path) -> Result<(), EnvError> {
    match path.parent() {
        Some(parent) => {
            fs_err::create_dir_all(parent).map_err(|e| io("creating the runtime folder", e))
        }
        None => Ok(()),
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), EnvError> {
    match fs_err::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing a staging folder", e)),
    }
}

/// A download that gave no file: why, and what to do instead without a network.
fn download_failed(url: &str, dest: &Path, reason: String, instead: Option<String>) -> EnvError {
    EnvError::Download {
        url: url.to_owned(),
        dest: dest.to_owned(),
        reason,
        instead,
    }
}

/// A runtime the configuration does not let us set up, and the fix.
fn setup_problem(problem: &str, fix: &str) -> EnvError {
    EnvError::RuntimeSetup {
        problem: problem.to_owned(),
        fix: fix.to_owned(),
    }
}

fn io(what: &str, source: std::io::Error) -> EnvError {
    EnvError::Io {
        what: what.to_owned(),
        source,
    }
}
