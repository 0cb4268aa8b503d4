//! The monitors against real processes: a worker-like tree that allocates real
//! memory, a fake GPU written by another process, and NVML's absence.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use cjm_sched::gpu::{FakeDevice, FakeGpu, Gpus};
use cjm_sched::process::{ProcessTable, peak_and_reset};

const MB: u64 = 1 << 20;

/// A Python process that runs `script` and talks line by line.
struct Talker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Talker {
    fn start(script: &str) -> Self {
        let mut child = Command::new(cjm_testkit::python())
            .args(["-u", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn expect(&mut self, word: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), word, "the script said something else");
    }

    fn say(&mut self, word: &str) {
        writeln!(self.stdin, "{word}").unwrap();
    }

    fn finish(mut self) {
        drop(self.stdin);
        self.child.wait().unwrap();
    }
}

/// Holds 200 MB, starts a child that holds 100 MB, and frees its own on "free".
const TREE: &str = r#"
import subprocess, sys
held = bytearray(200 << 20)
for i in range(0, len(held), 4096): held[i] = 1
child = subprocess.Popen([sys.executable, "-u", "-c",
    "import sys\nb = bytearray(100 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready')\nsys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print("ready")
assert sys.stdin.readline().strip() == "free"
del held
print("freed")
sys.stdin.read()
child.stdin.close(); child.wait()
"#;

#[test]
fn a_worker_tree_counts_its_children_and_its_peak_resets_after_each_reading() {
    let mut tree = Talker::start(TREE);
    tree.expect("ready");
    let pid = tree.child.id();

    let usage = ProcessTable::scan()
        .unwrap()
        .usage(pid)
        .expect("the tree is there");
    assert_eq!(usage.processes, 2, "the worker and its child");
    assert!(
        usage.rss_bytes >= 300 * MB,
        "both allocations count: {}",
        usage.rss_bytes
    );

    tree.say("free");
    tree.expect("freed");
    let now = ProcessTable::scan().unwrap().usage(pid).unwrap();
    assert!(
        now.rss_bytes < 250 * MB,
        "the parent's 200 MB went: {}",
        now.rss_bytes
    );
    let peak = peak_and_reset(pid).unwrap();
    assert!(
        peak.rss_peak_bytes >= 300 * MB,
        "the peak remembers: {}",
        peak.rss_peak_bytes
    );
    if let Some(pss) = peak.pss_bytes {
        assert!(pss >= 100 * MB, "the child's memory is its own: {pss}");
    }
    let next = peak_and_reset(pid).unwrap();
    assert!(
        next.rss_peak_bytes < 250 * MB,
        "after a reset the peak covers only what came since: {}",
        next.rss_peak_bytes
    );
    tree.finish();
}

#[test]
fn memory_a_process_sets_on_the_fake_gpu_shows_and_comes_back_when_it_exits() {
    let dir = cjm_testkit::Scratch::new("sched-fake-gpu");
    let gpu = FakeGpu::create(
        dir.path(),
        &[FakeDevice::new("Fake GPU", 8192)],
        Duration::ZERO,
    )
    .unwrap();
    let script = format!(
        r#"
import json, os, sys
path = os.path.join({dir:?}, "usage", f"{{os.getpid()}}.json")
with open(path + ".tmp", "w") as f: json.dump({{"0": 2048.0}}, f)
os.rename(path + ".tmp", path)
print("ready")
sys.stdin.read()
"#,
        dir = dir.path().display().to_string()
    );
    let mut holder = Talker::start(&script);
    holder.expect("ready");
    let pid = holder.child.id();
    let sample = gpu.sample().unwrap();
    assert_eq!(sample.devices[0].free_bytes, 6144 * MB);
    assert_eq!(sample.held_by(&[pid]), vec![(0, 2048 * MB)]);
    holder.finish();
    let after = gpu.sample().unwrap();
    assert_eq!(
        after.devices[0].free_bytes,
        8192 * MB,
        "an exited process holds nothing"
    );
}

#[test]
fn without_a_driver_there_are_no_gpus_and_no_error() {
    if std::env::var_os(cjm_sched::gpu::FAKE_GPU_VAR).is_some()
        || std::path::Path::new("/dev/nvidiactl").exists()
    {
        eprintln!(
            "skipped: this machine has a GPU (or a fake one is set); the NVML unit test covers it"
        );
        return;
    }
    let gpus = Gpus::detect();
    let Gpus::None { reason } = &gpus else {
        panic!("no driver here, yet {}", gpus.describe())
    };
    assert!(reason.contains("NVIDIA"), "{reason}");
    assert_eq!(gpus.sample().unwrap().devices.len(), 0);
    assert!(gpus.describe().starts_with("none: "));
}

/// A fake GPU whose files are damaged: a `devices.json` that is not JSON is an
/// error naming the file (the manager warns once and schedules as if there were
/// no GPU); usage files that are not what a plugin writes, or name devices that
/// do not exist, or negative amounts, count as nothing.
#[test]
fn damaged_fake_gpu_files_are_an_error_naming_the_file_or_count_as_nothing() {
    let dir = cjm_testkit::Scratch::new("sched-fake-gpu-damaged");
    let gpu = FakeGpu::create(
        dir.path(),
        &[FakeDevice::new("Fake GPU", 8192)],
        Duration::ZERO,
    )
    .unwrap();
    let me = std::process::id();
    let usage = dir.path().join("usage");
    fs_err::write(usage.join(format!("{me}.json")), "not json").unwrap();
    fs_err::write(usage.join("not-a-pid.json"), r#"{"0": 1024}"#).unwrap();
    let sample = gpu.sample().unwrap();
    assert_eq!(sample.devices[0].free_bytes, 8192 * MB);
    assert!(sample.processes.is_empty(), "{sample:?}");
    fs_err::write(
        usage.join(format!("{me}.json")),
        r#"{"0": -4096, "7": 1024, "x": 1}"#,
    )
    .unwrap();
    let sample = gpu.sample().unwrap();
    assert_eq!(sample.devices[0].free_bytes, 8192 * MB, "{sample:?}");

    fs_err::write(
        dir.path().join("devices.json"),
        "{\"devices\": [{\"name\": 3",
    )
    .unwrap();
    let err = gpu.sample().unwrap_err().to_string();
    assert!(err.contains("devices.json"), "{err}");
}
