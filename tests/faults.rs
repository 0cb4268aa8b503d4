//! The end-to-end fault suite: the host is a separate process (`e2e-host`),
//! killed (`SIGKILL`) while jobs wait, while they run, mid-sequence, mid-commit and
//! while it recovers, then started again; every submitted job is accounted
//! for, none runs twice unless it was submitted as idempotent, and nothing is
//! left behind (no worker process, no shared memory, no lock). Workers that
//! exit, segfault, hang past their timeout or run out of memory mid-job fail
//! their job with what happened, and the next job runs.

#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on fails with the error it got"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use cjm::proto::Value;
use cjm::queue::store::Listing;
use cjm::queue::{JobStatus, QueueClient, SequenceStep, Submit};
use serde_json::json;

/// A data folder with the manager's `Counter` fixture installed as `counter`
/// and `other`, removed on drop.
struct Suite {
    dir: cjm_testkit::Scratch,
}

impl Suite {
    fn new(name: &str) -> Self {
        let dir = cjm_testkit::Scratch::new(&format!("e2e-{name}"));
        fs_err::create_dir_all(dir.join("manifests")).unwrap();
        fs_err::create_dir_all(dir.join("data")).unwrap();
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/cjm-manager/tests/fixtures");
        for name in ["counter", "other"] {
            let mut m = cjm::manifest::Manifest::default();
            m.install.python_path = cjm_testkit::python().display().to_string();
            m.install
                .env_vars
                .insert("PYTHONPATH".into(), json!(fixtures.display().to_string()));
            m.code.name = name.into();
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
            m.write(dir.join(format!("manifests/{name}.json"))).unwrap();
        }
        Self { dir }
    }

    fn queue(&self) -> PathBuf {
        self.dir.join("queue.db")
    }

    /// A marker file in the plugins' data folder.
    fn marker(&self, name: &str) -> PathBuf {
        self.dir.join("data").join(name)
    }

    /// How many times each recorded job ran (`action="record"`), by its argument.
    fn ran(&self) -> HashMap<i64, usize> {
        let mut ran = HashMap::new();
        for line in fs_err::read_to_string(self.marker("ran.log"))
            .unwrap_or_default()
            .lines()
        {
            *ran.entry(line.parse().unwrap()).or_default() += 1;
        }
        ran
    }

    /// Starts a host; returns once it works the queue, with how many jobs
    /// were pending then (no job has started yet).
    fn host(&self) -> (Host, usize) {
        let mut host = self.spawn();
        let line = host.until(|l| l.starts_with("working "));
        let pending = line["working ".len()..].parse().unwrap();
        (host, pending)
    }

    /// Starts a host without waiting for it.
    fn spawn(&self) -> Host {
        let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-host"))
            .arg(self.dir.path())
            .env_remove("CJM_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Host { child, lines }
    }

    /// Starts a host while this test holds the database's write lock, waits
    /// until the host holds its host lock (it is opening the queue: it can
    /// read, but cannot commit its recovery), SIGKILLs it there, and lets
    /// the write lock go.
    fn kill_while_recovering(&self, rt: &tokio::runtime::Runtime) {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(self.queue());
        let mut db = rt
            .block_on(sqlx::SqliteConnection::connect_with(&options))
            .unwrap();
        rt.block_on(sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut db))
            .unwrap();
        let mut host = self.spawn();
        let pid = host.child.id().to_string();
        let holds_host_lock = || {
            fs_err::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .any(|l| {
                    let fields: Vec<_> = l.split_whitespace().collect();
                    fields.get(1) == Some(&"FLOCK") && fields.get(4) == Some(&pid.as_str())
                })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !holds_host_lock() {
            assert!(
                Instant::now() < deadline,
                "the host never took its lock: {:?}",
                host.child.try_wait()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let said = host.kill_and_read();
        assert!(
            !said.iter().any(|l| l.starts_with("working ")),
            "the host got past its recovery while the database was locked: {said:?}"
        );
        rt.block_on(sqlx::raw_sql("ROLLBACK").execute(&mut db))
            .unwrap();
        rt.block_on(db.close()).unwrap();
    }

    /// The processes whose environment names this suite's data folder: its
    /// workers. Waits (at most 20 s) for them to be gone.
    fn no_workers_left(&self) {
        let marker = format!("CJM_DATA_DIR={}", self.dir.join("data").display());
        let mine = || {
            fs_err::read_dir("/proc")
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter(|e| {
                    fs_err::read(e.path().join("environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                })
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while mine() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} worker(s) outlived their host",
                mine()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A host process and its stdout.
struct Host {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Host {
    /// Reads the host's lines until `pick` accepts one; returns it.
    fn until(&mut self, mut pick: impl FnMut(&str) -> bool) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.lines.read_line(&mut line).unwrap();
            assert!(n > 0, "the host ended: {:?}", self.child.try_wait());
            if pick(line.trim()) {
                return line.trim().to_owned();
            }
        }
    }

    /// SIGKILLs the host, reaps it, and returns the lines it said that
    /// were not read yet.
    fn kill_and_read(mut self) -> Vec<String> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let _ = self.child.wait();
        self.lines.lines().map_while(Result::ok).collect()
    }

    /// SIGKILLs the host and reaps it.
    fn kill(mut self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn record(n: i64) -> Submit {
    Submit::new(
        "counter",
        vec![Value::Int(n)],
        vec![("action".into(), Value::from("record"))],
    )
}

#[test]
fn a_host_killed_again_and_again_mid_queue_and_mid_commit_loses_no_job() {
    const JOBS: i64 = 240;
    let s = Suite::new("kills");
    let rt = runtime();
    let client = rt.block_on(QueueClient::open(&s.queue())).unwrap();
    let mut idempotent = HashMap::new();
    for n in 0..JOBS {
        let job = if n % 2 == 0 {
            record(n).idempotent()
        } else {
            record(n)
        };
        let id = rt.block_on(client.submit(job)).unwrap();
        idempotent.insert(id, n % 2 == 0);
    }
    // Killed after a varying number of jobs ended: while jobs run, between
    // them, and while their ends are being committed.
    let mut kills = 0;
    for ended_before_kill in [0, 7, 23, 3, 41, 1, 17, 60, 5, 29, 11, 2] {
        let (mut host, pending) = s.host();
        let target = ended_before_kill.min(pending);
        let mut ended = 0;
        if target > 0 {
            host.until(|l| {
                ended += usize::from(l.ends_with(" completed") || l.ends_with(" failed"));
                ended >= target
            });
        }
        host.kill();
        kills += 1;
        s.no_workers_left();
    }
    // Killed while it recovers: a host killed while a job runs leaves that
    // job for the next one to settle, and the next one is killed inside its
    // recovery.
    for _ in 0..3 {
        let (mut host, pending) = s.host();
        if pending > 0 {
            host.until(|l| l.ends_with(" running"));
        }
        host.kill();
        s.no_workers_left();
        s.kill_while_recovering(&rt);
        kills += 2;
    }
    // The last host runs what is left.
    let (mut host, mut pending) = s.host();
    while pending > 0 {
        host.until(|l| l.ends_with(" completed") || l.ends_with(" failed"));
        pending -= 1;
    }
    host.kill();
    s.no_workers_left();
    let jobs: Vec<_> = rt.block_on(client.list(Listing::History(None))).unwrap();
    assert_eq!(
        jobs.len(),
        usize::try_from(JOBS).unwrap(),
        "{kills} kills lost a job"
    );
    let ran = s.ran();
    for job in &jobs {
        let n = job.args[0].as_i64().unwrap();
        let runs = ran.get(&n).copied().unwrap_or(0);
        match (idempotent[&job.id], job.status) {
            (true, status) => {
                assert_eq!(status, JobStatus::Completed, "idempotent job {n}: {job:?}");
                assert!(runs >= 1, "idempotent job {n} completed without running");
            }
            (false, JobStatus::Completed) => assert_eq!(runs, 1, "job {n} ran {runs} times"),
            (false, JobStatus::Failed) => {
                assert!(runs <= 1, "job {n} ran {runs} times");
                let error = job.error.as_ref().unwrap();
                assert!(
                    error.message.contains("host running this job died"),
                    "{error:?}"
                );
            }
            (false, other) => panic!("job {n} ended {other}"),
        }
    }
    // The lock went with each host: the next one opens the file.
    s.host().0.kill();
}

#[test]
fn a_host_killed_while_jobs_run_requeues_the_idempotent_and_fails_the_others() {
    let s = Suite::new("running");
    let rt = runtime();
    let client = rt.block_on(QueueClient::open(&s.queue())).unwrap();
    let wait = || vec![("action".into(), Value::from("wait"))];
    let once = rt
        .block_on(client.submit(Submit::new("counter", vec![], wait())))
        .unwrap();
    let again = rt
        .block_on(client.submit(Submit::new("other", vec![], wait()).idempotent()))
        .unwrap();
    let (mut host, _) = s.host();
    let mut running = 0;
    host.until(|l| {
        running += usize::from(l.ends_with(" running"));
        running == 2
    });
    host.kill();
    s.no_workers_left();
    // Queued jobs survive as they were; the interrupted are settled on open.
    let queued = rt
        .block_on(client.submit(Submit::new("counter", vec![Value::Int(9)], vec![])))
        .unwrap();
    fs_err::write(s.marker("release"), b"").unwrap();
    let (mut host, _) = s.host();
    // The two run side by side (different instances): in either order.
    let mut left = vec![again.clone(), queued.clone()];
    while !left.is_empty() {
        host.until(|l| {
            let before = left.len();
            left.retain(|id| !(l.starts_with(id.as_str()) && l.ends_with(" completed")));
            left.len() < before
        });
    }
    let once = rt.block_on(client.get_job(&once)).unwrap().unwrap();
    assert_eq!(once.status, JobStatus::Failed, "{once:?}");
    assert!(
        once.error
            .unwrap()
            .message
            .contains("host running this job died")
    );
    let again = rt.block_on(client.get_job(&again)).unwrap().unwrap();
    assert_eq!((again.status, again.retry_count), (JobStatus::Completed, 1));
    host.kill();
    s.no_workers_left();
}

#[test]
fn a_host_killed_mid_sequence_goes_on_with_the_sequence_when_restarted() {
    let s = Suite::new("sequence");
    let rt = runtime();
    // A sequence is stored by a queue in this process while no host runs
    // (sequences are the host API's), then the host process runs it.
    let sequence = rt.block_on(async {
        let cfg = cjm::core::load_config(
            &cjm::core::LoadOptions {
                data_dir: Some(s.dir.path().to_path_buf()),
                ..Default::default()
            },
            &|_| None,
            s.dir.path(),
        )
        .unwrap();
        let manager = cjm::manager::Manager::new(cfg, cjm::manager::ManagerOptions::default());
        manager
            .load(&cjm::manager::LoadSpec::new("counter").lazy())
            .unwrap();
        let q = cjm::queue::JobQueue::open(manager, cjm::queue::QueueOptions::new(s.queue()))
            .await
            .unwrap();
        let step = |kwargs: Vec<(String, Value)>, n: i64| {
            SequenceStep::new("counter", vec![Value::Int(n)], kwargs)
        };
        let record = || vec![("action".into(), Value::from("record"))];
        let wait = vec![("action".into(), Value::from("wait"))];
        // Best-effort: a step the host's death fails does not stop it.
        q.submit_sequence(
            vec![step(record(), 1), step(wait, 2), step(record(), 3)],
            0,
            false,
        )
        .await
        .unwrap()
    });
    let client = rt.block_on(QueueClient::open(&s.queue())).unwrap();
    let (mut host, _) = s.host();
    // Killed while its second step runs.
    host.until(|l| l.ends_with(" completed"));
    host.until(|l| l.ends_with(" running"));
    host.kill();
    s.no_workers_left();
    // The next host fails the interrupted step as it opens, moves the
    // sequence on, and runs the third.
    let (mut host, _) = s.host();
    host.until(|l| l.ends_with(" completed"));
    let steps: Vec<_> = rt
        .block_on(client.list(Listing::Sequence(sequence)))
        .unwrap();
    let statuses: Vec<_> = steps.iter().map(|j| j.status).collect();
    assert_eq!(
        statuses,
        [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Completed
        ],
        "{steps:?}"
    );
    assert_eq!(s.ran().get(&1), Some(&1));
    assert_eq!(s.ran().get(&3), Some(&1));
    host.kill();
    s.no_workers_left();
}

#[test]
fn workers_that_exit_segfault_hang_or_run_out_of_memory_fail_their_job_and_the_next_runs() {
    let s = Suite::new("workers");
    let rt = runtime();
    let client = rt.block_on(QueueClient::open(&s.queue())).unwrap();
    let action = |a: &str| vec![("action".into(), Value::from(a))];
    let (mut host, _) = s.host();
    let faults = [
        ("crash", Submit::new("counter", vec![], action("crash"))),
        (
            "segfault",
            Submit::new("counter", vec![], action("segfault")),
        ),
        (
            "hang",
            Submit::new("counter", vec![], action("stubborn")).timeout(Duration::from_millis(300)),
        ),
        ("oom", Submit::new("counter", vec![], action("oom"))),
    ];
    for (what, job) in faults {
        let id = rt.block_on(client.submit(job)).unwrap();
        host.until(|l| l.starts_with(id.as_str()) && l.ends_with(" failed"));
        let job = rt.block_on(client.get_job(&id)).unwrap().unwrap();
        let error = job.error.unwrap();
        let said = error.message.to_lowercase();
        let expected = match what {
            "crash" => "exited with status 3",
            "segfault" => "sigsegv",
            "hang" => "timeout",
            _ => "out of memory",
        };
        assert!(said.contains(expected), "{what}: {error:?}");
        // The next job runs on a fresh worker.
        let next = rt
            .block_on(client.submit(Submit::new("counter", vec![Value::Int(1)], vec![])))
            .unwrap();
        let l = host.until(|l| l.starts_with(next.as_str()) && !l.ends_with(" running"));
        let after = rt.block_on(client.get_job(&next)).unwrap().unwrap();
        assert!(l.ends_with(" completed"), "after {what}: {:?}", after.error);
    }
    host.kill();
    s.no_workers_left();
    // Nothing in /dev/shm: segments are memfds, gone with their processes.
    let shm = fs_err::read_dir("/dev/shm").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("cjm"))
            .count()
    });
    assert_eq!(shm, 0);
}
