//! `cjm-ctl jobs`: a host (`jobs work`) in one process, an operator's verbs in
//! others, on one queue file; real workers (the manager's `Counter` fixture).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

use crate::support::{python, text};

struct Data(PathBuf);

impl Data {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cjm-ctl-jobs-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("manifests")).expect("data folder");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cjm-manager/tests/fixtures");
        let mut m = cjm_manifest::Manifest::default();
        m.install.python_path = python().display().to_string();
        m.install
            .env_vars
            .insert("PYTHONPATH".into(), json!(fixtures.display().to_string()));
        m.code.name = "counter".into();
        m.code.version = "1.0.0".into();
        m.code.description = "a test plugin".into();
        m.code.module = "manager_plugins".into();
        m.code.class_name = "Counter".into();
        m.code.interface = "cjm_demo_plugin_system.Demo".into();
        m.code.config_schema = json!({"type": "object", "properties": {
            "step": {"type": "integer", "default": 1},
        }})
        .as_object()
        .cloned();
        m.refresh_config_schema_hash();
        m.write(dir.join("manifests/counter.json"))
            .expect("manifest");
        Self(dir)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cjm-ctl"));
        c.current_dir(&self.0)
            .env_remove("CJM_DATA_DIR")
            .arg("--data-dir")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cjm-ctl")
    }

    /// Runs `args`, expecting exit 0; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("stdout is JSON")
    }

    /// Starts `jobs work`; returns once it says it works the queue.
    fn host(&self, args: &[&str]) -> (Child, BufReader<std::process::ChildStderr>) {
        let mut all = vec!["jobs", "work"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the host");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        while !line.starts_with("working ") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).expect("the host's stderr") > 0,
                "the host ended before it worked the queue"
            );
        }
        (child, stderr)
    }

    /// A marker file in the plugin's data folder.
    fn marker(&self, name: &str) -> PathBuf {
        self.0.join("data").join(name)
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(child: &Child) {
    let pid =
        rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
}

#[test]
fn jobs_submitted_from_a_shell_run_on_the_host_and_are_shown_cancelled_and_retried() {
    let d = Data::new("verbs");
    // Without a host the queue takes the job, and says it waits.
    let out = d.ctl(&["jobs", "submit", "counter", "--args", "[1]", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no host works this queue"));
    let first: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let first = first["id"].as_str().expect("an id").to_owned();
    let listed = d.json(&["jobs", "list", "--json"]);
    assert_eq!(listed[0]["status"], "pending", "{listed}");
    let unknown = d.ctl(&["jobs", "submit", "not-installed"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));

    let (host, mut said) = d.host(&[]);
    // `watch` follows the job to its end; 0: it completed.
    d.ok(&["jobs", "watch", &first]);
    let shown = d.json(&["jobs", "show", &first, "--json"]);
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["result"]["args"], json!([1]));

    // Submitted while the host runs: it starts at once; cancelled while it runs.
    let waiting = d
        .ok(&["jobs", "submit", "counter", "wait"])
        .trim()
        .to_owned();
    // The host says so when it starts it.
    let started = format!("job {} on counter: pending -> running", &waiting[..8]);
    let mut line = String::new();
    while !line.contains(&started) {
        line.clear();
        assert!(
            said.read_line(&mut line).expect("the host's stderr") > 0,
            "the host ended"
        );
    }
    assert!(d.ok(&["jobs", "cancel", &waiting]).contains("cancelling"));
    let watched = d.ctl(&["jobs", "watch", &waiting]);
    assert_eq!(
        watched.status.code(),
        Some(1),
        "cancelled: {}",
        text(&watched.stderr)
    );
    assert!(text(&watched.stderr).contains("cancelled"));
    let shown = d.json(&["jobs", "show", &waiting, "--json"]);
    assert_eq!(shown["cancel_phase"], "completed", "{shown}");

    // Retried as a new job, which runs now that it is let go.
    fs_err::write(d.marker("release"), b"").expect("release");
    let again = d.json(&["jobs", "retry", &waiting, "--json"]);
    let again = again["id"].as_str().expect("an id").to_owned();
    assert_ne!(again, waiting);
    d.ok(&["jobs", "watch", &again]);
    let refused = d.ctl(&["jobs", "retry", &again]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a completed job is not retried"
    );
    let logs = d.json(&["jobs", "logs", &again, "--json"]);
    assert!(logs["lines"].is_array(), "{logs}");
    let missing = d.ctl(&["jobs", "show", "no-such-job"]);
    assert_eq!(missing.status.code(), Some(2));

    // Ctrl-C: the host lets its running jobs finish and leaves with 0.
    interrupt(&host);
    let mut host = host;
    assert!(host.wait().expect("the host's exit").success());
    let table = d.ok(&["jobs", "list"]);
    assert!(
        table.contains("completed") && table.contains("cancelled"),
        "{table}"
    );
}
