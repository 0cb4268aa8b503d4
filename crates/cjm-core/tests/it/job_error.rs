use cjm_core::{ErrorCategory, JobError, isoformat_utc};
use serde_json::Value;

use crate::{errors_fixture, time_at};

#[test]
fn timestamps_format_as_python_isoformat_of_an_aware_utc_datetime() {
    let fixture = errors_fixture();
    for case in fixture["isoformat"].as_array().unwrap() {
        let time = time_at(
            case["seconds"].as_i64().unwrap(),
            case["nanos"].as_u64().unwrap() as u32,
        );
        assert_eq!(isoformat_utc(time), case["isoformat"], "{case}");
    }
}

#[test]
fn job_errors_from_reference_workers_read_back_field_for_field() {
    let fixture = errors_fixture();
    for case in fixture["job_error_wire"].as_array().unwrap() {
        let line = case["worker_line"].as_str().unwrap();
        let chunk: Value = serde_json::from_str(line).unwrap();
        let job_error: JobError = serde_json::from_value(chunk["_job_error"].clone()).unwrap();
        let written = serde_json::to_string(&job_error).unwrap();
        assert_eq!(
            written,
            case["compact"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}

#[test]
fn a_job_error_with_only_the_required_fields_reads_with_the_rest_absent() {
    let job_error: JobError = serde_json::from_str(
        r#"{"category": "fatal", "message": "m", "retriable": false, "original_exc_repr": "X('m')"}"#,
    )
    .unwrap();
    assert_eq!(
        job_error,
        JobError::new(ErrorCategory::Fatal, "m", false, "X('m')")
    );
}

#[test]
fn a_job_error_with_a_category_outside_the_four_is_rejected() {
    let result = serde_json::from_str::<JobError>(
        r#"{"category": "sideways", "message": "m", "retriable": false, "original_exc_repr": "X()"}"#,
    );
    assert!(result.is_err());
}
