//! Two OS processes on the same files at once: a second copy of this test
//! binary (running [`child_writer`]) or the reference in Python. Both sides start
//! on a signal sent over a pipe once both are ready, so they overlap without any
//! sleep.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use cjm_stores::{
    ConfigRecord, ConfigStore, EmpiricalStore, ResourceSample, SecretStore, SecretValue,
};
use serde_json::{Value, json};
use std::time::UNIX_EPOCH;

use crate::support::{Reference, Scratch};

const CHILD_ENV: &str = "CJM_STORES_CHILD";
const TASKS: usize = 4;
const PER_TASK: usize = 25;

/// The second process of the tests below, which run this test binary again with
/// `CJM_STORES_CHILD` set to what to write, and `--ignored` to reach it. It is not a
/// test of its own, so an ordinary run skips it rather than count it as a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "not a test: the second process of the concurrency tests, which start it"]
async fn child_writer() {
    let task = std::env::var(CHILD_ENV)
        .unwrap_or_else(|_| panic!("{CHILD_ENV} is not set: only the concurrency tests run this"));
    let task: Value = serde_json::from_str(&task).unwrap();
    let path = PathBuf::from(task["path"].as_str().unwrap());
    let prefix = task["prefix"].as_str().unwrap().to_owned();
    // Ready: wait for the parent's signal.
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).unwrap();
    match task["kind"].as_str().unwrap() {
        "secrets" => write_secrets(SecretStore::new(path), &prefix).await,
        "empirical" => {
            let store = Arc::new(EmpiricalStore::new(path));
            record_samples(&store, 1.0).await;
        }
        kind => panic!("unknown child task {kind}"),
    }
}

/// Starts [`child_writer`] on `task` and waits until it is ready.
fn spawn_child(task: &Value) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "concurrency::child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD_ENV, task.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.as_mut().unwrap());
    let mut line = String::new();
    while line.trim() != "ready" {
        line.clear();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "the child exited before it was ready"
        );
    }
    child
}

fn go(child: &mut Child) {
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
}

fn wait(mut child: Child) {
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "the child writer failed: {status}");
}

/// `TASKS` tasks setting `PER_TASK` secrets each, named `<prefix>-<task>-<i>`.
async fn write_secrets(store: SecretStore, prefix: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (store, prefix) = (store.clone(), prefix.to_owned());
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                let value = SecretValue::new(format!("value-{prefix}-{task}-{i}"));
                store
                    .set_secret("shared", &format!("{prefix}-{task}-{i}"), &value, None)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// `TASKS` tasks recording `PER_TASK` samples each into one record.
async fn record_samples(store: &Arc<EmpiricalStore>, cpu: f64) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = Arc::clone(store);
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                let sample = ResourceSample {
                    cpu_percent: cpu,
                    memory_mb_peak: cpu * 100.0 + i as f64,
                    gpu_memory_mb_peak: 0.0,
                    duration_seconds: 0.5,
                    success: true,
                    observed_at: UNIX_EPOCH,
                    api_usage: Some([("calls".to_owned(), 1.0)].into()),
                };
                store.record_sample("i#0", "p", "h", &sample).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_writing_secrets_at_once_lose_no_update() {
    let scratch = Scratch::new("concurrent-secrets");
    let dir = scratch.join("secrets");
    let mut child = spawn_child(&json!({"kind": "secrets", "path": dir, "prefix": "child"}));
    let store = SecretStore::new(&dir);
    go(&mut child);
    write_secrets(store.clone(), "parent").await;
    wait(child);

    let keys = store.list_keys("shared", None).await.unwrap();
    assert_eq!(keys.len(), 2 * TASKS * PER_TASK, "lost updates");
    for prefix in ["child", "parent"] {
        let value = store
            .get_secret("shared", &format!("{prefix}-3-24"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value.expose(), format!("value-{prefix}-3-24"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_recording_samples_at_once_count_every_sample() {
    let scratch = Scratch::new("concurrent-empirical");
    let db = scratch.join("empirical_resources.db");
    let mut child = spawn_child(&json!({"kind": "empirical", "path": db, "prefix": ""}));
    let store = Arc::new(EmpiricalStore::new(&db));
    go(&mut child);
    record_samples(&store, 3.0).await;
    wait(child);

    let record = store.get_record("i#0", "h").await.unwrap().unwrap();
    let total = (2 * TASKS * PER_TASK) as i64;
    assert_eq!(record.sample_count, total, "lost samples");
    assert_eq!(record.success_count, total);
    assert_eq!(record.api_usage_totals["calls"], total as f64);
    assert_eq!(record.memory_mb_peak_max, 300.0 + (PER_TASK - 1) as f64);
    // Half the samples at 1.0 and half at 3.0, in whatever order.
    assert!(
        (record.cpu_percent_mean - 2.0).abs() < 1e-9,
        "{}",
        record.cpu_percent_mean
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_and_the_reference_writing_configs_at_once_lose_nothing() {
    let scratch = Scratch::new("concurrent-config");
    let db = scratch.join("plugin_configs.db");
    let store = Arc::new(ConfigStore::new(&db));
    // Created first so that both sides start on an existing database.
    store.set("seed", &ConfigRecord::default()).await.unwrap();
    let mut reference = Reference::start();
    let theirs = TASKS * PER_TASK;
    reference.send(&json!({"op": "config_set_many", "db": db, "prefix": "py-", "count": theirs}));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                let mut record = ConfigRecord::default();
                record.config.insert("i".into(), json!(i));
                store.set(&format!("rs-{task}-{i}"), &record).await.unwrap();
                // Reads interleaved with the other process's writes.
                assert!(
                    store
                        .get(&format!("rs-{task}-{i}"))
                        .await
                        .unwrap()
                        .is_some()
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(
        reference.receive(),
        Ok(json!(theirs)),
        "the reference failed"
    );

    let all = store.list_all().await.unwrap();
    assert_eq!(all.len(), 1 + theirs + TASKS * PER_TASK);
    assert_eq!(all["py-99"].config["i"], 99);
    let listed = reference.call(&json!({"op": "config_list", "db": db}));
    assert_eq!(listed.as_object().unwrap().len(), all.len());
    drop(reference);
    Arc::into_inner(store).unwrap().close().await;
    check_integrity(&db);
}

#[tokio::test]
async fn open_stores_hold_no_lock_between_calls() {
    let scratch = Scratch::new("idle-locks");
    let (configs_db, empirical_db) = (scratch.join("configs.db"), scratch.join("empirical.db"));
    let configs = ConfigStore::new(&configs_db);
    configs.set("a", &ConfigRecord::default()).await.unwrap();
    assert!(configs.get("a").await.unwrap().is_some());
    assert_eq!(configs.list_all().await.unwrap().len(), 1);
    let empirical = Arc::new(EmpiricalStore::new(&empirical_db));
    record_samples(&empirical, 1.0).await;
    assert!(empirical.get_record("i#0", "h").await.unwrap().is_some());
    assert_eq!(empirical.list_records(None).await.unwrap().len(), 1);

    // With both pools still open, another process gets the exclusive lock
    // without waiting at all.
    for db in [&configs_db, &empirical_db] {
        let out = Command::new(crate::support::python())
            .args([
                "-c",
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n\
                 c.execute('BEGIN EXCLUSIVE'); c.execute('COMMIT'); print('ok')",
            ])
            .arg(db)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    configs.close().await;
    Arc::into_inner(empirical).unwrap().close().await;
}

/// `SQLite`'s own check of the file, run by Python's `sqlite3`.
fn check_integrity(db: &Path) {
    let mut reference = Reference::start();
    assert_eq!(reference.sql(db, "PRAGMA integrity_check"), [[json!("ok")]]);
}
