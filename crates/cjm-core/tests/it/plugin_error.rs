use std::time::Duration;

use cjm_core::{
    CancelPhase, ErrorCategory, JobError, PluginError, PluginErrorKind, PluginRef,
    ResourceShortfall, ShortfallResource, WorkerExit,
};
use serde_json::Value;

use crate::{errors_fixture, fixture_time};

fn strings(value: &Value) -> Vec<String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// Builds the host-side error a fixture case describes.
fn host_error(spec: &Value) -> PluginError {
    let name = spec["plugin"].as_str().unwrap();
    let plugin = match spec["instance"].as_str() {
        Some(instance) => PluginRef::instance(name, instance),
        None => PluginRef::new(name),
    };
    let message = spec["message"].as_str().unwrap_or_default().to_owned();
    match spec["variant"].as_str().unwrap() {
        "input" => PluginError::Input {
            plugin,
            message,
            fields_invalid: strings(&spec["fields_invalid"]),
        },
        "transient" => PluginError::Transient {
            plugin,
            message,
            retry_after_seconds: spec["retry_after_seconds"].as_f64(),
        },
        "resource" => PluginError::Resource {
            plugin,
            message,
            shortfall: serde_json::from_value(spec["shortfall"].clone()).unwrap(),
        },
        "fatal" => PluginError::Fatal { plugin, message },
        "disabled" => PluginError::Disabled { plugin },
        "not_loaded" => PluginError::NotLoaded { plugin },
        "timeout" => PluginError::Timeout {
            plugin,
            timeout: Duration::from_secs_f64(spec["timeout_seconds"].as_f64().unwrap()),
        },
        "cancelled" => PluginError::Cancelled {
            plugin,
            phase: serde_json::from_value(spec["phase"].clone()).unwrap(),
        },
        "worker_oom" => PluginError::WorkerOom {
            plugin,
            exit: match (spec["signal"].as_i64(), spec["exit_code"].as_i64()) {
                (Some(signal), _) => Some(WorkerExit::Signal(signal as i32)),
                (None, Some(code)) => Some(WorkerExit::Code(code as i32)),
                (None, None) => None,
            },
        },
        "config" => PluginError::Config {
            plugin,
            message,
            fields_invalid: strings(&spec["fields_invalid"]),
        },
        other => panic!("unknown variant {other}"),
    }
}

#[track_caller]
fn check(case: &Value) {
    let error = host_error(&case["error"]);
    let job_error = error.to_job_error(fixture_time(&case["occurred_at"]));
    assert_eq!(
        serde_json::to_value(&job_error).unwrap(),
        case["job_error"],
        "{error}"
    );
    assert_eq!(error.category(), job_error.category, "{error}");
    assert_eq!(error.retriable(), job_error.retriable, "{error}");
}

#[test]
fn host_errors_record_the_job_error_the_reference_records() {
    let fixture = errors_fixture();
    for case in fixture["host_errors"].as_array().unwrap() {
        check(case);
    }
}

#[test]
fn every_variant_but_raised_mirrors_a_reference_class() {
    let fixture = errors_fixture();
    let mut seen: Vec<PluginErrorKind> = fixture["host_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|case| host_error(&case["error"]).kind())
        .collect();
    seen.dedup();
    assert_eq!(seen.len(), PluginErrorKind::ALL.len());
}

#[test]
fn messages_name_the_plugin_and_instance_that_failed() {
    #[track_caller]
    fn check(error: &PluginError, expected: &str) {
        assert_eq!(error.to_string(), expected);
    }
    let whisper = PluginRef::instance("whisper", "whisper-a1b2c3");
    check(
        &PluginError::Disabled {
            plugin: PluginRef::new("whisper"),
        },
        "plugin `whisper` is disabled",
    );
    check(
        &PluginError::NotLoaded {
            plugin: PluginRef::instance("whisper", "whisper"),
        },
        "plugin `whisper` is not loaded",
    );
    check(
        &PluginError::Timeout {
            plugin: whisper.clone(),
            timeout: Duration::from_secs(30),
        },
        "plugin `whisper` (instance `whisper-a1b2c3`) timed out after 30.0s",
    );
    check(
        &PluginError::Cancelled {
            plugin: whisper.clone(),
            phase: CancelPhase::Killed,
        },
        "plugin `whisper` (instance `whisper-a1b2c3`) was cancelled by killing its worker",
    );
    check(
        &PluginError::WorkerOom {
            plugin: PluginRef::new("whisper"),
            exit: Some(WorkerExit::Signal(9)),
        },
        "worker for plugin `whisper` was killed by signal 9, probably out of memory",
    );
    check(
        &PluginError::Config {
            plugin: PluginRef::new("whisper"),
            message: "unknown key `modle`".into(),
            fields_invalid: vec!["modle".into()],
        },
        "invalid configuration for plugin `whisper`: unknown key `modle`",
    );
    let mut raised = JobError::new(
        ErrorCategory::UserInput,
        "'model'",
        true,
        "KeyError('model')",
    );
    raised.plugin_name = Some("whisper".into());
    check(
        &PluginError::from(raised),
        "plugin `whisper` raised a user_input error: 'model'",
    );
}

#[test]
fn hints_carry_the_next_step_apart_from_the_message() {
    let plugin = PluginRef::new("whisper");
    let config = PluginError::Config {
        plugin: plugin.clone(),
        message: "unknown keys".into(),
        fields_invalid: vec!["modle".into(), "langauge".into()],
    };
    assert_eq!(
        config.hint().as_deref(),
        Some("fix these configuration keys: modle, langauge")
    );
    let resource = PluginError::Resource {
        plugin: plugin.clone(),
        message: "CUDA out of memory".into(),
        shortfall: Some(ResourceShortfall {
            resource: ShortfallResource::GpuVramMb,
            needed: 8192.0,
            available: 4096.5,
        }),
    };
    assert_eq!(
        resource.hint().as_deref(),
        Some("it needed 8192 MB of GPU memory but 4096.5 MB were available; free some, then retry")
    );
    let cancelled = PluginError::Cancelled {
        plugin,
        phase: CancelPhase::Cooperative,
    };
    assert_eq!(cancelled.hint(), None);
}

#[test]
fn a_raised_error_keeps_its_record_and_its_verdict() {
    let mut record = JobError::new(
        ErrorCategory::Transient,
        "Plugin 'whisper' cancelled by operator",
        false,
        "PluginCancelledError(\"Plugin 'whisper' cancelled by operator\")",
    );
    record.occurred_at = Some("2026-11-27T15:00:00+00:00".into());
    let error = PluginError::from(record.clone());
    assert_eq!(error.kind(), None);
    assert_eq!(error.category(), ErrorCategory::Transient);
    assert!(!error.retriable());
    assert!(record.is_cancellation());
    assert_eq!(error.to_job_error(crate::time_at(0, 0)), record);
    assert_eq!(error.hint(), None);
}
