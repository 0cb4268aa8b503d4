//! `create_pipeline_with`: a manager, a started queue and bindings in one
//! call; failures reported.

use std::path::Path;

use cjm::manager::{LoadSpec, ManagerError, ManagerOptions};
use cjm::manifest::Manifest;
use cjm::proto::Value;
use serde_json::json;

use cjm_testkit::python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_loads_what_it_can_reports_the_rest_and_runs_queued_jobs() {
    let dir = std::env::temp_dir().join(format!("cjm-pipeline-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(dir.join("manifests")).unwrap();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    let mut m = Manifest::default();
    m.install.python_path = python().display().to_string();
    m.install
        .env_vars
        .insert("PYTHONPATH".into(), json!(plugins.display().to_string()));
    m.code.name = "text-stats".into();
    m.code.version = "1.0.0".into();
    m.code.description = "counts words".into();
    m.code.module = "demo_plugins".into();
    m.code.class_name = "TextStats".into();
    m.code.interface = "cjm_worker.PluginInterface".into();
    m.code.config_schema = json!({"type": "object", "properties": {"lowercase": {"type": "boolean", "default": true}}})
        .as_object()
        .cloned();
    m.refresh_config_schema_hash();
    m.write(dir.join("manifests/text-stats.json")).unwrap();
    let cfg = cjm::core::load_config(
        &cjm::core::LoadOptions {
            data_dir: Some(dir.clone()),
            ..Default::default()
        },
        &|_| None,
        &dir,
    )
    .unwrap();
    let bad_config = json!({"lowercase": "yes"}).as_object().cloned().unwrap();
    let pipeline = cjm::create_pipeline_with(
        cfg,
        ManagerOptions {
            reap_interval: None,
            ..ManagerOptions::default()
        },
        cjm::queue::QueueOptions::new(dir.join("queue.db")),
        [
            LoadSpec::from("text-stats"),
            LoadSpec::from("not-installed"),
            LoadSpec::from(("text-stats", bad_config)).instance("strict"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(pipeline.bindings.keys().collect::<Vec<_>>(), ["text-stats"]);
    let failures: Vec<(&str, bool)> = pipeline
        .failed
        .iter()
        .map(|(spec, e)| {
            (
                spec.plugin.as_str(),
                matches!(e, ManagerError::Config { .. }),
            )
        })
        .collect();
    assert_eq!(failures, [("not-installed", false), ("text-stats", true)]);
    let out = pipeline.bindings["text-stats"]
        .execute(vec![Value::from("One one")], vec![])
        .unwrap();
    assert_eq!(out.get("unique"), Some(&Value::Int(1)));
    // The queue is started: a submitted job runs.
    let id = pipeline
        .queue
        .submit("text-stats", vec![Value::from("Two two two")], vec![], 0)
        .await
        .unwrap();
    let job = pipeline
        .queue
        .wait_for_job(&id, Some(std::time::Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(job.status, cjm::queue::JobStatus::Completed, "{job:?}");
    assert_eq!(job.result.unwrap().get("unique"), Some(&Value::Int(1)));
    drop(pipeline);
    let _ = fs_err::remove_dir_all(&dir);
}
