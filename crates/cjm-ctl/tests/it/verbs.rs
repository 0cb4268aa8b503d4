//! `doctor`, `estimate-size`, `setup-host` and `setup-runtime` end to end: the real
//! binary in a scratch folder, with the pinned uv, the built cjm-worker wheel and a
//! local wheelhouse (no network).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{python, text, uv, version, wheelhouse, worker_wheel};

/// A scratch folder (removed at the end) with a data folder `cjm` inside.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cjm-ctl-verbs-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).expect("create the scratch folder");
        Self(dir)
    }

    fn data(&self) -> PathBuf {
        self.0.join("cjm")
    }

    /// Builds the test wheelhouse in `wheelhouse`.
    fn wheelhouse(&self) {
        wheelhouse(&self.0.join("wheelhouse"));
    }

    /// Writes plugins.yaml: demo-plugin-meta from the wheelhouse, offline, with
    /// `interface_libs`.
    fn plugins(&self, interface_libs: &[&str]) -> PathBuf {
        let mut text = String::from("plugins:\n");
        let _ = write!(
            text,
            "  - name: demo-plugin-meta\n    env_name: m\n    package: demo-plugin-meta\n    python_version: \"{}\"\n    interface_libs: [{}]\n    find_links: [wheelhouse]\n    no_index: true\n",
            version(),
            interface_libs.join(", ")
        );
        let path = self.0.join("plugins.yaml");
        fs_err::write(&path, text).expect("write plugins.yaml");
        path
    }

    /// `cjm-ctl --data-dir <scratch>/cjm ARGS` in the scratch folder, stdin closed.
    fn ctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cjm-ctl")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cjm-ctl"));
        cmd.current_dir(&self.0)
            .env("CJM_UV", uv())
            .env("CJM_WORKER_WHEEL", worker_wheel())
            .env_remove("CJM_DATA_DIR")
            .env_remove("CJM_CONDA_PREFIX")
            .env_remove("CJM_CONDA_TYPE")
            .stdin(Stdio::null())
            .arg("--data-dir")
            .arg(self.data())
            .args(args);
        cmd
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// The doctor check called `name`.
fn check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name:?} in {doc}"))
}

fn install(s: &Scratch, plugins: &Path) {
    let out = s.ctl(&["install-all", "--plugins", &plugins.to_string_lossy()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "install-all failed: {}",
        text(&out.stderr)
    );
}

#[test]
fn doctor_on_an_empty_data_dir_is_ok() {
    let s = Scratch::new("doctor-empty");
    fs_err::create_dir_all(s.data()).unwrap();
    let out = s.ctl(&["doctor", "--json"]);
    let doc = json_out(&out);
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert_eq!(doc["ok"], true);
    assert_eq!(check(&doc, "uv")["status"], "ok", "{doc}");
    assert!(
        check(&doc, "uv")["detail"]
            .as_str()
            .unwrap()
            .contains("uv "),
        "{doc}"
    );
    // The verdict follows /dev/shm's free space as df reports it: warn under 512 MiB.
    let df = std::process::Command::new("df")
        .args(["-B1", "--output=avail", "/dev/shm"])
        .output()
        .expect("run df");
    let avail: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints /dev/shm's free bytes");
    let shm = check(&doc, "shm");
    let expected = if avail < 512 << 20 { "warn" } else { "ok" };
    assert_eq!(shm["status"], expected, "{shm} (df: {avail} bytes free)");
    assert_eq!(check(&doc, "data dir")["status"], "ok", "{doc}");
    assert_eq!(check(&doc, "cjm-worker wheel")["status"], "ok", "{doc}");
    assert!(
        check(&doc, "manifests")["detail"]
            .as_str()
            .unwrap()
            .contains("no plugins installed"),
        "{doc}"
    );

    // The human form: one line per check, and the tally.
    let out = s.ctl(&["doctor"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("shm") && stdout.contains("0 failed"),
        "{stdout}"
    );
}

#[test]
fn doctor_warns_about_a_data_dir_not_created_yet_and_fails_a_missing_uv() {
    let s = Scratch::new("doctor-missing");
    let out = s
        .command(&["doctor", "--json", "--no-drift"])
        .env("CJM_UV", s.0.join("no-such-uv"))
        .output()
        .unwrap();
    let doc = json_out(&out);
    assert_eq!(out.status.code(), Some(1), "{doc}");
    assert_eq!(doc["ok"], false);
    let data = check(&doc, "data dir");
    assert_eq!(data["status"], "warn", "{doc}");
    assert!(
        data["hint"].as_str().unwrap().contains("install-all"),
        "{doc}"
    );
    let uv = check(&doc, "uv");
    assert_eq!(uv["status"], "fail", "{doc}");
    assert!(
        uv["hint"].as_str().unwrap().contains("setup-runtime"),
        "{doc}"
    );
}

/// Drift is a warning (the plugin still runs, as in the reference, which only logs
/// it): doctor exits 0 and names the fix; `--strict` makes it exit 1.
#[test]
fn doctor_reports_drift_with_the_regenerate_command() {
    let s = Scratch::new("doctor-drift");
    s.wheelhouse();
    let plugins = s.plugins(&["cjm-demo-plugin-system"]);
    install(&s, &plugins);

    let out = s.ctl(&["doctor", "--json"]);
    let doc = json_out(&out);
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert_eq!(check(&doc, "manifests")["status"], "ok", "{doc}");
    assert_eq!(check(&doc, "plugins.yaml")["status"], "ok", "{doc}");
    let plugin = check(&doc, "plugin demo-plugin-meta");
    assert_eq!(plugin["status"], "ok", "{doc}");
    assert!(
        plugin["detail"].as_str().unwrap().contains("matches"),
        "{doc}"
    );

    // The plugin adds these properties to its schema when the file exists.
    fs_err::create_dir_all(s.data().join("data")).unwrap();
    fs_err::write(
        s.data().join("data/schema-extra.json"),
        r#"{"loud": {"type": "boolean"}}"#,
    )
    .unwrap();
    let out = s.ctl(&["doctor", "--json"]);
    let doc = json_out(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "drift warns, it does not fail: {doc}"
    );
    let plugin = check(&doc, "plugin demo-plugin-meta");
    assert_eq!(plugin["status"], "warn", "{doc}");
    let detail = plugin["detail"].as_str().unwrap();
    assert!(
        detail.contains("has drifted") && detail.matches("sha256:").count() == 2,
        "{detail}"
    );
    assert!(
        plugin["hint"]
            .as_str()
            .unwrap()
            .contains("cjm-ctl regenerate-manifest demo-plugin-meta"),
        "{doc}"
    );

    let out = s.ctl(&["doctor", "--strict"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("cjm-ctl regenerate-manifest demo-plugin-meta"));

    // Without drift checks no worker starts, and the plugin is only looked at.
    let out = s.ctl(&["doctor", "--json", "--no-drift"]);
    let doc = json_out(&out);
    assert_eq!(
        check(&doc, "plugin demo-plugin-meta")["status"],
        "ok",
        "{doc}"
    );
}

#[test]
fn estimate_size_sums_local_wheels_then_measures_the_installed_environment() {
    let s = Scratch::new("estimate");
    s.wheelhouse();
    let plugins = s.plugins(&["cjm-demo-plugin-system"]);
    let p = plugins.to_string_lossy().into_owned();

    let out = s.ctl(&["estimate-size", "--plugins", &p, "--json"]);
    let doc = json_out(&out);
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let entry = &doc["plugins"][0];
    assert_eq!(entry["status"], "estimated", "{doc}");
    let packages = entry["packages"].as_array().unwrap();
    let libdemo = packages
        .iter()
        .find(|p| p["name"] == "libdemo")
        .unwrap_or_else(|| panic!("libdemo not resolved: {doc}"));
    assert_eq!(libdemo["version"], "1.0");
    assert!(libdemo["bytes"].as_u64().unwrap() > 0, "{doc}");
    assert!(
        packages.iter().any(|p| p["name"] == "cjm-worker"),
        "the worker wheel counts: {doc}"
    );
    assert_eq!(entry["unknown"], serde_json::json!([]), "all local: {doc}");
    assert!(doc["totals"]["wheel_bytes"].as_u64().unwrap() > 0);
    assert_eq!(doc["totals"]["installed_bytes"], 0);

    let out = s.ctl(&["estimate-size", "--plugins", &p, "-v"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("libdemo 1.0") && stdout.contains("compressed"),
        "{stdout}"
    );

    install(&s, &plugins);
    let out = s.ctl(&[
        "estimate-size",
        "--plugins",
        &p,
        "--json",
        "-p",
        "demo-plugin-meta",
    ]);
    let doc = json_out(&out);
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let entry = &doc["plugins"][0];
    assert_eq!(entry["status"], "installed", "{doc}");
    assert!(entry["installed_bytes"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(doc["totals"]["installed_bytes"], entry["installed_bytes"]);

    let out = s.ctl(&["estimate-size", "--plugins", &p, "-p", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn setup_host_creates_the_layout_and_lists_the_interface_libraries() {
    let s = Scratch::new("host");
    let plugins = s.plugins(&["cjm-demo-plugin-system", "cjm-plugin-system"]);
    let out = s.ctl(&["setup-host", "--plugins", &plugins.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for dir in ["manifests", "logs", "data", "envs"] {
        assert!(s.data().join(dir).is_dir(), "{dir} not created");
    }
    let stdout = text(&out.stdout);
    assert!(stdout.contains("  - cjm-demo-plugin-system"), "{stdout}");
    assert!(
        !stdout.contains("- cjm-plugin-system"),
        "the reference leaves it out: {stdout}"
    );
    assert!(
        stdout.contains("✓ uv") && stdout.contains("✓ cjm-worker wheel"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--python"),
        "it says how to set up a Python host: {stdout}"
    );
}

#[test]
fn setup_host_installs_into_a_python_only_with_confirmation() {
    let s = Scratch::new("host-python");
    s.wheelhouse();
    let plugins = s.plugins(&["cjm-demo-plugin-system"]);
    let p = plugins.to_string_lossy().into_owned();
    let venv = s.0.join("app-venv");
    let status = Command::new(uv())
        .args(["venv", "--quiet", "--python"])
        .arg(python())
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let app_python = venv.join("bin/python").to_string_lossy().into_owned();

    // No terminal to ask on, no -y: refused, nothing installed.
    let out = s.ctl(&["setup-host", "--plugins", &p, "--python", &app_python]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pass -y"),
        "{}",
        text(&out.stderr)
    );

    let out = s.ctl(&["setup-host", "--plugins", &p, "--python", &app_python, "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let import = Command::new(&app_python)
        .args(["-c", "import cjm_demo_plugin_system"])
        .status()
        .unwrap();
    assert!(import.success(), "the library is in the app's environment");
}

#[test]
fn setup_runtime_with_uv_present_says_where_it_is() {
    let s = Scratch::new("runtime");
    let out = s.ctl(&["setup-runtime"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Platform: "), "{stdout}");
    assert!(
        stdout.contains(&format!("uv already available at {}", uv().display())),
        "{stdout}"
    );
    assert!(stdout.contains("next: cjm-ctl install-all"), "{stdout}");
    assert!(
        !s.data().join("runtime/bin/uv").exists(),
        "nothing installed"
    );
}

/// The download fails fast and deterministically: curl is pointed at a proxy on a
/// closed local port, so the test never reaches (or waits for) the network.
#[test]
fn setup_runtime_for_micromamba_offline_fails_with_one_clear_message() {
    let s = Scratch::new("runtime-mamba");
    let prefix = s.0.join("mamba");
    let out = s
        .command(&[
            "--conda-type",
            "micromamba",
            "--conda-prefix",
            &prefix.to_string_lossy(),
            "setup-runtime",
        ])
        .env("https_proxy", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("all_proxy", "http://127.0.0.1:9")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
    assert!(
        stderr.starts_with("error: setting up micromamba failed"),
        "{stderr}"
    );
    assert!(stderr.contains("if this machine is offline"), "{stderr}");
    let dest = prefix.join("bin/micromamba");
    assert!(
        stderr.contains(&dest.display().to_string()),
        "names where it goes: {stderr}"
    );
    assert!(!dest.exists());
    assert!(text(&out.stdout).contains(&format!("Destination: {}", dest.display())));
}

/// `resources` shows the fake GPU, a plugin's declared footprint and, with
/// `--load`, what its worker holds; `doctor` names the GPU source.
#[test]
fn resources_shows_the_gpus_the_footprints_and_what_a_loaded_worker_holds() {
    let s = Scratch::new("resources");
    s.wheelhouse();
    let plugins = s.plugins(&["cjm-demo-plugin-system"]);
    install(&s, &plugins);
    // An operator declares the plugin's RAM in its manifest, as the reference's
    // schedulers read it.
    let manifest = s.data().join("manifests/demo-plugin-meta.json");
    let mut m: Value = serde_json::from_str(&fs_err::read_to_string(&manifest).unwrap()).unwrap();
    m["code"]["resources"]["min_system_ram_mb"] = Value::from(64);
    fs_err::write(&manifest, m.to_string()).unwrap();
    let gpu = s.0.join("gpu");
    fs_err::create_dir_all(&gpu).unwrap();
    fs_err::write(
        gpu.join("devices.json"),
        r#"{"devices": [{"name": "Fake GPU", "total_mb": 8192}], "release_ms": 0}"#,
    )
    .unwrap();

    let out = s
        .command(&["resources", "--json", "--load", "demo-plugin-meta"])
        .env("CJM_FAKE_GPU", &gpu)
        .output()
        .unwrap();
    let doc = json_out(&out);
    assert_eq!(out.status.code(), Some(0), "{doc}\n{}", text(&out.stderr));
    assert_eq!(doc["policy"], "fit");
    assert!(
        doc["gpu_source"]
            .as_str()
            .unwrap()
            .starts_with("a scripted fake from "),
        "{doc}"
    );
    assert_eq!(doc["devices"][0]["total_bytes"], 8192u64 << 20, "{doc}");
    assert_eq!(doc["plugins"][0]["name"], "demo-plugin-meta");
    assert_eq!(
        doc["plugins"][0]["expected"]["ram_bytes"],
        64u64 << 20,
        "{doc}"
    );
    assert_eq!(
        doc["plugins"][0]["expected"]["basis"], "64 MB RAM (declared)",
        "{doc}"
    );
    let inst = &doc["instances"][0];
    assert_eq!(inst["id"], "demo-plugin-meta", "{doc}");
    assert_eq!(inst["state"], "ready", "{doc}");
    assert!(inst["processes"].as_u64().unwrap() >= 1, "{doc}");
    assert!(
        inst["held"]["ram_bytes"].as_u64().unwrap() > 1 << 20,
        "a running interpreter holds more than 1 MB: {doc}"
    );
    assert_eq!(doc["waiting"], Value::Array(vec![]), "{doc}");
    // The worker was forked from its environment's forkserver, which is listed
    // with what it holds.
    let servers = doc["forkservers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{doc}");
    let python = std::path::Path::new(servers[0]["python"].as_str().unwrap());
    assert!(
        python.is_file() && python.starts_with(s.0.as_path()),
        "the plugin environment's interpreter: {doc}"
    );
    assert!(servers[0]["ram_bytes"].as_u64().unwrap() > 1 << 20, "{doc}");

    // A plugin that is not a system monitor is refused as one, with what to do.
    let out = s
        .command(&["resources", "--system-monitor", "demo-plugin-meta"])
        .env("CJM_FAKE_GPU", &gpu)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("of plugin demo-plugin-meta cannot be the system monitor")
            && stderr.contains("hint: register an instance of a system-monitor plugin"),
        "{stderr}"
    );

    let text_out = s.ctl(&["resources"]);
    let table = text(&text_out.stdout);
    assert!(table.contains("policy     fit"), "{table}");
    assert!(
        table.contains("demo-plugin-meta  64 MB RAM (declared)"),
        "{table}"
    );

    let out = s
        .command(&["doctor", "--json", "--no-drift"])
        .env("CJM_FAKE_GPU", &gpu)
        .output()
        .unwrap();
    let doc = json_out(&out);
    let gpus = check(&doc, "GPUs");
    assert_eq!(gpus["status"], "ok", "{doc}");
    assert!(
        gpus["detail"]
            .as_str()
            .unwrap()
            .ends_with(": GPU 0 Fake GPU (8.0 GB free of 8.0 GB)"),
        "{doc}"
    );
    assert_eq!(check(&doc, "memory")["status"], "ok", "{doc}");
}
