//! Finding uv and `setup-runtime`, offline: downloads come from a one-shot server on
//! localhost or a port that refuses connections, and pip installs from a local
//! folder (or fails to, with no index).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;

use cjm_core::CondaType;
use cjm_env::{
    EnvError, UV_VERSION, download, find_uv, micromamba_url, runtime_dir, setup_micromamba_from,
    setup_uv,
};

use crate::conda::{config, write_script};
use crate::support::{Scratch, python};

/// Refuses connections: nothing listens on the discard port here.
const UNREACHABLE: &str = "http://127.0.0.1:9/micromamba.tar.bz2";

/// An error and its causes on one line, as `cjm-ctl` prints it.
pub(crate) fn error_text(err: &EnvError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Serves one request on localhost with `status` and `body`; the base URL (with a
/// trailing slash) and the serving thread, which ends after that one answer.
pub(crate) fn serve_once(status: &str, body: Vec<u8>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let status = status.to_owned();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // Read the request up to its blank line; curl sends no body.
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            request.push(byte[0]);
        }
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    });
    (base, server)
}

/// An environment lookup over `vars`.
fn env_of(vars: &[(&str, OsString)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |key| map.get(key).cloned()
}

/// What a folder holds, by name; nothing if it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_runtime_dir_is_the_prefix_when_set_else_under_the_data_dir() {
    let mut cfg = config(Path::new("/data"), CondaType::Conda);
    assert_eq!(runtime_dir(&cfg), Path::new("/data/runtime"));
    cfg.runtime.prefix = Some(PathBuf::from("/project/.cjm-runtime"));
    assert_eq!(runtime_dir(&cfg), Path::new("/project/.cjm-runtime"));
}

#[test]
fn find_uv_prefers_the_variable_then_the_runtime_dir_then_path() {
    let scratch = Scratch::new("find-uv");
    let cfg = config(&scratch.0, CondaType::Conda);
    let own = scratch.0.join("runtime/bin/uv");
    let on_path = scratch.0.join("path-b/uv");
    let path = std::env::join_paths([scratch.0.join("path-a"), scratch.0.join("path-b")]).unwrap();
    // Not executable, so not a tool: the search goes on to path-b.
    fs_err::create_dir_all(scratch.0.join("path-a")).unwrap();
    fs_err::write(scratch.0.join("path-a/uv"), "").unwrap();
    write_script(&on_path, "exit 0\n");
    let variable = OsString::from("/opt/pinned/uv");

    let everything = env_of(&[("CJM_UV", variable.clone()), ("PATH", path.clone())]);
    assert_eq!(find_uv(&cfg, &everything), Some(PathBuf::from(&variable)));
    let no_variable = env_of(&[("CJM_UV", OsString::new()), ("PATH", path.clone())]);
    assert_eq!(find_uv(&cfg, &no_variable), Some(on_path.clone()));
    write_script(&own, "exit 0\n");
    assert_eq!(find_uv(&cfg, &no_variable), Some(own.clone()));
    assert_eq!(find_uv(&cfg, &everything), Some(PathBuf::from(&variable)));
    fs_err::remove_file(&own).unwrap();
    assert_eq!(find_uv(&cfg, &env_of(&[])), None);
}

#[track_caller]
fn check_url(platform: &str, expected: Option<&str>) {
    assert_eq!(micromamba_url(platform).as_deref(), expected, "{platform}");
}

#[test]
fn micromamba_urls_follow_the_reference() {
    let api = "https://micro.mamba.pm/api/micromamba";
    check_url("linux-x64", Some(&format!("{api}/linux-64/latest")));
    check_url("linux-arm64", Some(&format!("{api}/linux-aarch64/latest")));
    check_url("darwin-x64", Some(&format!("{api}/osx-64/latest")));
    check_url("darwin-arm64", Some(&format!("{api}/osx-arm64/latest")));
    check_url("win-x64", Some(&format!("{api}/win-64/latest")));
    check_url("linux-riscv64", None);
}

/// A local-mode micromamba configuration with its prefix in `dir`.
fn micromamba_config(dir: &Path) -> (cjm_core::CjmConfig, PathBuf) {
    let mut cfg = config(dir, CondaType::Micromamba);
    cfg.runtime.prefix = Some(dir.join("runtime"));
    (cfg, dir.join("runtime/bin/micromamba"))
}

#[test]
fn setup_micromamba_offline_says_what_failed_and_what_to_do() {
    let scratch = Scratch::new("mm-offline");
    let (cfg, dest) = micromamba_config(&scratch.0);
    let err = setup_micromamba_from(&cfg, UNREACHABLE, false).unwrap_err();
    let text = error_text(&err);
    assert!(
        text.contains(&format!("downloading {UNREACHABLE} to {}", dest.display())),
        "{text}"
    );
    // curl's own reason: exit code 7, could not connect.
    assert!(text.contains("curl: (7)"), "{text}");
    assert!(text.contains("download"), "{text}");
    assert!(
        text.contains(&format!("place it at {}", dest.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "runtime.binaries.{}",
            cjm_core::current_platform()
        )),
        "{text}"
    );
    // The folders the reference creates are there; nothing else is left behind.
    assert_eq!(names_in(&scratch.0.join("runtime")), ["bin", "envs"]);
    assert_eq!(
        names_in(&scratch.0.join("runtime/bin")),
        Vec::<String>::new()
    );
}

#[test]
fn setup_micromamba_leaves_an_existing_binary_alone_unless_forced() {
    let scratch = Scratch::new("mm-present");
    let (cfg, dest) = micromamba_config(&scratch.0);
    write_script(&dest, "echo mine\n");
    assert_eq!(
        setup_micromamba_from(&cfg, UNREACHABLE, false).unwrap(),
        dest
    );
    assert!(setup_micromamba_from(&cfg, UNREACHABLE, true).is_err());
    assert_eq!(
        fs_err::read_to_string(&dest).unwrap(),
        "#!/bin/sh\necho mine\n",
        "a failed forced download keeps the old binary"
    );
}

#[test]
fn setup_micromamba_without_a_prefix_or_binary_says_what_to_set() {
    let scratch = Scratch::new("mm-nowhere");
    let cfg = config(&scratch.0, CondaType::Micromamba);
    let text = error_text(&setup_micromamba_from(&cfg, UNREACHABLE, false).unwrap_err());
    assert!(text.contains("runtime.prefix"), "{text}");
    assert!(text.contains("runtime.binaries."), "{text}");
}

#[test]
fn setup_micromamba_unpacks_the_binary_from_the_archive() {
    let scratch = Scratch::new("mm-unpack");
    let (cfg, dest) = micromamba_config(&scratch.0);
    let tree = scratch.0.join("archive");
    write_script(&tree.join("bin/micromamba"), "echo 2.0.0\n");
    fs_err::create_dir_all(tree.join("info")).unwrap();
    fs_err::write(tree.join("info/index.json"), "{}").unwrap();
    let archive = scratch.0.join("micromamba.tar.bz2");
    let status = Command::new("tar")
        .arg("-cjf")
        .arg(&archive)
        .arg("-C")
        .arg(&tree)
        .args(["bin", "info"])
        .status()
        .unwrap();
    assert!(status.success());
    let (base, server) = serve_once("200 OK", fs_err::read(&archive).unwrap());

    let got = setup_micromamba_from(&cfg, &format!("{base}latest"), false).unwrap();
    server.join().unwrap();
    assert_eq!(got, dest);
    let out = Command::new(&dest).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2.0.0\n");
    assert_eq!(names_in(&scratch.0.join("runtime/bin")), ["micromamba"]);
}

#[test]
fn setup_micromamba_refuses_a_download_that_is_no_archive() {
    let scratch = Scratch::new("mm-garbage");
    let (cfg, dest) = micromamba_config(&scratch.0);
    let (base, _server) = serve_once("200 OK", b"<html>captive portal</html>".to_vec());
    let text = error_text(&setup_micromamba_from(&cfg, &base, false).unwrap_err());
    assert!(text.contains("not a micromamba archive"), "{text}");
    assert!(!dest.exists());
    assert_eq!(
        names_in(&scratch.0.join("runtime/bin")),
        Vec::<String>::new()
    );
}

#[test]
fn download_writes_the_file_or_names_the_http_error() {
    let scratch = Scratch::new("download");
    let dest = scratch.0.join("env.yml");
    let (base, server) = serve_once("200 OK", b"name: demo\n".to_vec());
    download(&format!("{base}env.yml"), &dest).unwrap();
    server.join().unwrap();
    assert_eq!(fs_err::read_to_string(&dest).unwrap(), "name: demo\n");

    let missing = scratch.0.join("missing.yml");
    let (base, _server) = serve_once("404 Not Found", b"no".to_vec());
    let url = format!("{base}missing.yml");
    let text = error_text(&download(&url, &missing).unwrap_err());
    assert!(text.contains(&url) && text.contains("404"), "{text}");
    assert_eq!(names_in(&scratch.0), ["env.yml"], "no partial file is left");
}

#[test]
fn setup_uv_leaves_an_existing_uv_alone() {
    let scratch = Scratch::new("uv-present");
    let cfg = config(&scratch.0, CondaType::Conda);
    let dest = scratch.0.join("runtime/bin/uv");
    write_script(&dest, "echo mine\n");
    // A python that does not exist proves nothing was run.
    let got = setup_uv(&cfg, Path::new("/nonexistent/python"), false).unwrap();
    assert_eq!(got, dest);
}

#[test]
fn setup_uv_without_the_python_cannot_run_pip() {
    let scratch = Scratch::new("uv-nopython");
    let cfg = config(&scratch.0, CondaType::Conda);
    let err = setup_uv(&cfg, Path::new("/nonexistent/python"), true).unwrap_err();
    let EnvError::ToolMissing { tool, .. } = &err else {
        panic!("expected a missing tool, got {err:?}");
    };
    assert_eq!(tool, Path::new("/nonexistent/python"));
    assert_eq!(names_in(&scratch.0.join("runtime")), Vec::<String>::new());
}

/// The test interpreter, with pip told to use `find_links` and no index.
fn offline_python(dir: &Path, find_links: &Path) -> PathBuf {
    let wrapper = dir.join("offline-python");
    fs_err::create_dir_all(find_links).unwrap();
    write_script(
        &wrapper,
        &format!(
            "export PIP_NO_INDEX=1 PIP_FIND_LINKS='{}' PIP_CONFIG_FILE=/dev/null\n\
             exec '{}' \"$@\"\n",
            find_links.display(),
            python().display()
        ),
    );
    wrapper
}

#[test]
fn setup_uv_offline_fails_with_pips_last_lines_and_leaves_nothing() {
    let scratch = Scratch::new("uv-offline");
    let cfg = config(&scratch.0, CondaType::Conda);
    let python = offline_python(&scratch.0, &scratch.0.join("empty"));
    let err = setup_uv(&cfg, &python, false).unwrap_err();
    let EnvError::Tool {
        step,
        key,
        output_tail,
        ..
    } = &err
    else {
        panic!("expected a tool error, got {err:?}");
    };
    assert_eq!(*step, "installing uv with pip");
    assert_eq!(key, &format!("uv=={UV_VERSION}"));
    let last = output_tail.last().unwrap();
    assert!(
        last.contains(&format!("uv=={UV_VERSION}")),
        "{output_tail:?}"
    );
    assert_eq!(names_in(&scratch.0.join("runtime")), Vec::<String>::new());
}

/// Writes a wheel named uv [`UV_VERSION`] whose `uv` script prints its version.
const FAKE_UV_WHEEL: &str = r##"
import base64, hashlib, sys, zipfile
out, version = sys.argv[1], sys.argv[2]
dist = f"uv-{version}"
files = {
    f"{dist}.data/scripts/uv": f"#!/bin/sh\necho uv {version} fake\n",
    f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: uv\nVersion: {version}\n",
    f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: cjm-test\nRoot-Is-Purelib: false\nTag: py3-none-any\n",
}
def record(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data.encode()).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data.encode())}"
lines = [record(p, d) for p, d in files.items()] + [f"{dist}.dist-info/RECORD,,"]
files[f"{dist}.dist-info/RECORD"] = "\n".join(lines) + "\n"
with zipfile.ZipFile(f"{out}/{dist}-py3-none-any.whl", "w") as z:
    for p, d in files.items():
        z.writestr(p, d)
"##;

#[test]
fn setup_uv_installs_the_uv_script_from_the_wheel_into_the_runtime_dir() {
    let scratch = Scratch::new("uv-install");
    let mut cfg = config(&scratch.0, CondaType::Conda);
    cfg.runtime.prefix = Some(scratch.0.join("prefix"));
    let wheels = scratch.0.join("wheels");
    let python = offline_python(&scratch.0, &wheels);
    let status = Command::new(crate::support::python())
        .args(["-c", FAKE_UV_WHEEL])
        .arg(&wheels)
        .arg(UV_VERSION)
        .status()
        .unwrap();
    assert!(status.success());

    let uv = setup_uv(&cfg, &python, false).unwrap();
    assert_eq!(uv, scratch.0.join("prefix/bin/uv"));
    let out = Command::new(&uv).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("uv {UV_VERSION} fake\n")
    );
    // Only the binary stays: the staging folder with the dist-info is gone.
    assert_eq!(names_in(&scratch.0.join("prefix")), ["bin"]);
    assert_eq!(names_in(&scratch.0.join("prefix/bin")), ["uv"]);
    // Forced, it is installed again over the old one.
    assert_eq!(setup_uv(&cfg, &python, true).unwrap(), uv);
}
