use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use cjm_stores::{
    EmpiricalRecord, EmpiricalStore, ResourceSample, StoreError, compute_config_hash,
};
use serde_json::{Map, Value, json};

use crate::support::{Reference, Scratch};

/// Samples with awkward floats: many significant digits, wide magnitudes,
/// zeros, repeats and failures, some with API usage, from a fixed xorshift.
fn samples(count: usize) -> Vec<ResourceSample> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..count)
        .map(|i| {
            let api_usage = match i % 3 {
                0 => None,
                1 => Some(BTreeMap::from([
                    ("tokens".to_owned(), (next() * 5000.0).floor()),
                    ("credits".to_owned(), next() * 0.1),
                ])),
                _ => Some(BTreeMap::from([("pages".to_owned(), 1.0 + next())])),
            };
            ResourceSample {
                cpu_percent: next() * 400.0,
                memory_mb_peak: 10.0 + next() * 20_000.0,
                gpu_memory_mb_peak: if i % 4 == 0 { 0.0 } else { next() * 1e4 },
                duration_seconds: 1e-3 * 10f64.powf(next() * 5.0),
                success: i % 4 != 3,
                observed_at: UNIX_EPOCH
                    + Duration::from_micros(1_795_618_800_000_000 + i as u64 * 1_234_567),
                api_usage,
            }
        })
        .collect()
}

fn sample_json(sample: &ResourceSample) -> Value {
    json!({
        "cpu_percent": sample.cpu_percent,
        "memory_mb_peak": sample.memory_mb_peak,
        "gpu_memory_mb_peak": sample.gpu_memory_mb_peak,
        "duration_seconds": sample.duration_seconds,
        "success": sample.success,
        "observed_at": cjm_core::isoformat_utc(sample.observed_at),
        "api_usage": sample.api_usage,
    })
}

fn record_by_reference(
    reference: &mut Reference,
    db: &Path,
    (instance_id, plugin_name, config_hash): (&str, &str, &str),
    sample: &ResourceSample,
) {
    reference.call(&json!({
        "op": "emp_record", "db": db, "instance_id": instance_id,
        "plugin_name": plugin_name, "config_hash": config_hash, "sample": sample_json(sample),
    }));
}

fn get_by_reference(reference: &mut Reference, db: &Path, instance_id: &str, hash: &str) -> Value {
    reference
        .call(&json!({"op": "emp_get", "db": db, "instance_id": instance_id, "config_hash": hash}))
}

fn bits(value: &Value) -> u64 {
    value.as_f64().unwrap().to_bits()
}

/// `ours` and the reference's `theirs` hold the same record, every float to
/// the bit.
#[track_caller]
fn assert_same(ours: &EmpiricalRecord, theirs: &Value) {
    assert_eq!(ours.instance_id, theirs["instance_id"]);
    assert_eq!(ours.plugin_name, theirs["plugin_name"]);
    assert_eq!(ours.config_hash, theirs["config_hash"]);
    assert_eq!(json!(ours.sample_count), theirs["sample_count"]);
    for (field, ours) in [
        ("cpu_percent_mean", ours.cpu_percent_mean),
        ("memory_mb_peak_max", ours.memory_mb_peak_max),
        ("memory_mb_peak_mean", ours.memory_mb_peak_mean),
        ("gpu_memory_mb_peak_max", ours.gpu_memory_mb_peak_max),
        ("gpu_memory_mb_peak_mean", ours.gpu_memory_mb_peak_mean),
        ("duration_seconds_mean", ours.duration_seconds_mean),
        ("success_rate", ours.success_rate),
    ] {
        assert_eq!(
            ours.to_bits(),
            bits(&theirs[field]),
            "{field}: {ours} vs {}",
            theirs[field]
        );
    }
    let micros = ours
        .last_observed
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    assert_eq!(json!(micros), theirs["last_observed_micros"]);
    let totals = theirs["api_usage_totals"].as_object().unwrap();
    assert_eq!(
        ours.api_usage_totals.keys().collect::<Vec<_>>(),
        totals.keys().collect::<Vec<_>>()
    );
    for (unit, total) in &ours.api_usage_totals {
        assert_eq!(total.to_bits(), bits(&totals[unit]), "api usage {unit}");
    }
}

const KEY: (&str, &str, &str) = ("whisper#0", "whisper", "sha256:abc");

#[tokio::test]
async fn samples_recorded_alternately_by_both_sides_agree_to_the_bit() {
    let scratch = Scratch::new("empirical-alternate");
    let (mixed, py, rs) = (
        scratch.join("mixed.db"),
        scratch.join("py.db"),
        scratch.join("rs.db"),
    );
    let mut reference = Reference::start();
    let (store_mixed, store_rs, store_py) = (
        EmpiricalStore::new(&mixed),
        EmpiricalStore::new(&rs),
        EmpiricalStore::new(&py),
    );
    let samples = samples(40);
    let (instance_id, plugin_name, hash) = KEY;
    for (i, sample) in samples.iter().enumerate() {
        record_by_reference(&mut reference, &py, KEY, sample);
        store_rs
            .record_sample(instance_id, plugin_name, hash, sample)
            .await
            .unwrap();
        if i % 2 == 0 {
            store_mixed
                .record_sample(instance_id, plugin_name, hash, sample)
                .await
                .unwrap();
        } else {
            record_by_reference(&mut reference, &mixed, KEY, sample);
        }
    }

    let theirs = get_by_reference(&mut reference, &py, instance_id, hash);
    for (db, store) in [(&mixed, &store_mixed), (&py, &store_py), (&rs, &store_rs)] {
        let ours = store.get_record(instance_id, hash).await.unwrap().unwrap();
        assert_same(&ours, &theirs);
        assert_same(
            &ours,
            &get_by_reference(&mut reference, db, instance_id, hash),
        );
    }
    // The stored text too: the timestamp and the totals' JSON.
    let query = "SELECT last_observed, api_usage_totals, sample_count, success_count \
                 FROM empirical_resources";
    let stored = reference.sql(&py, query);
    assert_eq!(reference.sql(&mixed, query), stored);
    assert_eq!(reference.sql(&rs, query), stored);

    // And the numbers are the aggregates they claim to be.
    let ours = store_rs
        .get_record(instance_id, hash)
        .await
        .unwrap()
        .unwrap();
    let n = samples.len() as f64;
    let mean = |f: fn(&ResourceSample) -> f64| samples.iter().map(f).sum::<f64>() / n;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(ours.cpu_percent_mean, mean(|s| s.cpu_percent)));
    assert!(close(ours.memory_mb_peak_mean, mean(|s| s.memory_mb_peak)));
    assert!(close(
        ours.duration_seconds_mean,
        mean(|s| s.duration_seconds)
    ));
    let max = samples.iter().map(|s| s.memory_mb_peak).fold(0.0, f64::max);
    assert_eq!(ours.memory_mb_peak_max, max);
    assert_eq!(ours.sample_count, 40);
    assert_eq!(ours.success_count, 30);
    assert_eq!(ours.success_rate, 0.75);
    assert_eq!(ours.last_observed, samples[39].observed_at);
    for store in [store_mixed, store_rs, store_py] {
        store.close().await;
    }
}

#[tokio::test]
async fn config_hashes_match_the_references() {
    let mut reference = Reference::start();
    let configs: Vec<Option<Map<String, Value>>> = vec![
        None,
        Some(Map::new()),
        Some(serde_json::from_str(crate::config::AWKWARD_CONFIG).unwrap()),
        Some(serde_json::from_str(r#"{"b": 1, "a": [1.5, "é", {"y": null, "x": 1e-7}]}"#).unwrap()),
    ];
    for config in configs {
        let theirs = reference.call(&json!({"op": "emp_hash", "config": config}));
        assert_eq!(compute_config_hash(config.as_ref()), theirs, "{config:?}");
    }
}

#[tokio::test]
async fn records_are_listed_filtered_and_deleted_as_the_reference_does() {
    let scratch = Scratch::new("empirical-list");
    let db = scratch.join("empirical_resources.db");
    let mut reference = Reference::start();
    let store = EmpiricalStore::new(&db);
    let sample = &samples(1)[0];
    record_by_reference(&mut reference, &db, ("p#1", "p", "h1"), sample);
    store.record_sample("p#2", "p", "h1", sample).await.unwrap();
    record_by_reference(&mut reference, &db, ("q#1", "q", "h2"), sample);
    store.record_sample("p#1", "p", "h2", sample).await.unwrap();
    // A second sample replaces the row, which moves it to the end of the scan.
    store.record_sample("p#1", "p", "h1", sample).await.unwrap();

    let ids = |records: &[EmpiricalRecord]| {
        records
            .iter()
            .map(|r| format!("{}/{}", r.instance_id, r.config_hash))
            .collect::<Vec<_>>()
    };
    let their_ids = |records: Value| {
        records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["instance_id"].as_str().unwrap(),
                    r["config_hash"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    let all = store.list_records(None).await.unwrap();
    assert_eq!(ids(&all), ["p#2/h1", "q#1/h2", "p#1/h2", "p#1/h1"]);
    assert_eq!(
        ids(&all),
        their_ids(reference.call(&json!({"op": "emp_list", "db": db})))
    );
    let p = store.list_records(Some("p")).await.unwrap();
    assert_eq!(ids(&p), ["p#2/h1", "p#1/h2", "p#1/h1"]);
    assert_eq!(
        ids(&p),
        their_ids(reference.call(&json!({"op": "emp_list", "db": db, "plugin_name": "p"})))
    );
    assert!(store.list_records(Some("none")).await.unwrap().is_empty());

    assert!(store.delete_record("q#1", "h2").await.unwrap());
    assert!(!store.delete_record("q#1", "h2").await.unwrap());
    assert_eq!(
        get_by_reference(&mut reference, &db, "q#1", "h2"),
        Value::Null
    );
    assert_eq!(
        reference.call(
            &json!({"op": "emp_delete", "db": db, "instance_id": "p#2", "config_hash": "h1"})
        ),
        true
    );
    assert_eq!(store.get_record("p#2", "h1").await.unwrap(), None);
    assert_eq!(store.list_records(None).await.unwrap().len(), 2);
    store.close().await;
}

#[tokio::test]
async fn a_database_from_before_api_usage_totals_gains_the_column() {
    let scratch = Scratch::new("empirical-migrate");
    let db = scratch.join("empirical_resources.db");
    let mut reference = Reference::start();
    reference.sql(
        &db,
        "CREATE TABLE empirical_resources (
            instance_id TEXT NOT NULL, plugin_name TEXT NOT NULL, config_hash TEXT NOT NULL,
            sample_count INTEGER NOT NULL DEFAULT 0, success_count INTEGER NOT NULL DEFAULT 0,
            cpu_percent_mean REAL NOT NULL DEFAULT 0.0, memory_mb_peak_max REAL NOT NULL DEFAULT 0.0,
            memory_mb_peak_mean REAL NOT NULL DEFAULT 0.0, gpu_memory_mb_peak_max REAL NOT NULL DEFAULT 0.0,
            gpu_memory_mb_peak_mean REAL NOT NULL DEFAULT 0.0, duration_seconds_mean REAL NOT NULL DEFAULT 0.0,
            last_observed TEXT NOT NULL, PRIMARY KEY (instance_id, config_hash))",
    );
    reference.sql(
        &db,
        "INSERT INTO empirical_resources VALUES \
         ('old#0', 'old', 'h', 2, 1, 10.0, 100.0, 80.0, 0.0, 0.0, 1.5, '2025-01-01T00:00:00+00:00')",
    );
    let store = EmpiricalStore::new(&db);
    let old = store.get_record("old#0", "h").await.unwrap().unwrap();
    assert_eq!(old.api_usage_totals, BTreeMap::new());
    assert_eq!(old.success_rate, 0.5);

    let mut sample = samples(1).remove(0);
    sample.api_usage = Some(BTreeMap::from([("tokens".to_owned(), 7.0)]));
    store
        .record_sample("old#0", "old", "h", &sample)
        .await
        .unwrap();
    let theirs = get_by_reference(&mut reference, &db, "old#0", "h");
    assert_eq!(theirs["sample_count"], 3);
    assert_eq!(theirs["api_usage_totals"], json!({"tokens": 7.0}));
    assert_same(
        &store.get_record("old#0", "h").await.unwrap().unwrap(),
        &theirs,
    );
    store.close().await;
}

#[tokio::test]
async fn a_time_written_with_any_offset_reads_as_its_instant() {
    let scratch = Scratch::new("empirical-offset");
    let db = scratch.join("empirical_resources.db");
    let mut reference = Reference::start();
    let mut sample = sample_json(&samples(1)[0]);
    sample["observed_at"] = json!("2026-11-25T20:30:00.123456+05:30");
    reference.call(&json!({
        "op": "emp_record", "db": db, "instance_id": "i", "plugin_name": "p",
        "config_hash": "h", "sample": sample,
    }));
    let theirs = get_by_reference(&mut reference, &db, "i", "h");
    let store = EmpiricalStore::new(&db);
    let ours = store.get_record("i", "h").await.unwrap().unwrap();
    assert_eq!(
        ours.last_observed,
        UNIX_EPOCH + Duration::from_micros(theirs["last_observed_micros"].as_u64().unwrap())
    );
    assert_eq!(
        ours.last_observed,
        UNIX_EPOCH + Duration::from_micros(1_795_618_800_123_456)
    );
    store.close().await;
}

#[tokio::test]
async fn a_missing_database_reads_as_empty_and_is_created_by_the_first_sample() {
    let scratch = Scratch::new("empirical-missing");
    let parent = scratch.join("not-yet");
    let store = EmpiricalStore::new(parent.join("empirical_resources.db"));
    assert_eq!(store.get_record("i", "h").await.unwrap(), None);
    assert!(store.list_records(None).await.unwrap().is_empty());
    assert!(!store.delete_record("i", "h").await.unwrap());
    assert!(!parent.exists(), "a read created {}", parent.display());
    store
        .record_sample("i", "p", "h", &samples(1)[0])
        .await
        .unwrap();
    assert!(store.path().is_file());
    store.close().await;
}

#[tokio::test]
async fn a_database_made_here_has_the_references_schema_text() {
    let scratch = Scratch::new("empirical-schema");
    let (ours, theirs) = (scratch.join("rs.db"), scratch.join("py.db"));
    let store = EmpiricalStore::new(&ours);
    let sample = &samples(1)[0];
    store.record_sample("i", "p", "h", sample).await.unwrap();
    store.close().await;
    let mut reference = Reference::start();
    record_by_reference(&mut reference, &theirs, ("i", "p", "h"), sample);
    let query = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name";
    assert_eq!(reference.sql(&ours, query), reference.sql(&theirs, query));
}

#[tokio::test]
async fn api_usage_that_json_cannot_hold_is_refused_before_anything_is_written() {
    let scratch = Scratch::new("empirical-nan");
    let store = EmpiricalStore::new(scratch.join("empirical_resources.db"));
    let mut sample = samples(1).remove(0);
    sample.api_usage = Some(BTreeMap::from([("tokens".to_owned(), f64::NAN)]));
    let error = store
        .record_sample("i", "p", "h", &sample)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("`tokens` is not a finite number"),
        "{error}"
    );
    assert!(!store.path().exists());
}

#[tokio::test]
async fn default_locations_are_the_references() {
    let mut reference = Reference::start();
    let defaults = reference.call(&json!({"op": "defaults"}));
    assert_eq!(
        json!(EmpiricalStore::in_data_dir(None).unwrap().path()),
        defaults["empirical"]
    );
    let in_dir = EmpiricalStore::in_data_dir(Some("/data/cjm".as_ref())).unwrap();
    assert_eq!(in_dir.path(), Path::new("/data/cjm/empirical_resources.db"));
}

#[tokio::test]
async fn a_batch_of_samples_records_what_as_many_single_samples_do() {
    let scratch = Scratch::new("empirical-batch");
    let (one, batch) = (scratch.join("one.db"), scratch.join("batch.db"));
    let (store_one, store_batch) = (EmpiricalStore::new(&one), EmpiricalStore::new(&batch));
    let samples = samples(25);
    let (instance_id, plugin_name, hash) = KEY;
    for sample in &samples {
        store_one
            .record_sample(instance_id, plugin_name, hash, sample)
            .await
            .unwrap();
    }
    store_batch
        .record_samples(instance_id, plugin_name, hash, &samples[..10])
        .await
        .unwrap();
    store_batch
        .record_samples(instance_id, plugin_name, hash, &[])
        .await
        .unwrap();
    store_batch
        .record_samples(instance_id, plugin_name, hash, &samples[10..])
        .await
        .unwrap();
    let ours = store_batch
        .get_record(instance_id, hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ours,
        store_one
            .get_record(instance_id, hash)
            .await
            .unwrap()
            .unwrap()
    );
    // The reference's own store reads the batch's record as its own.
    let mut reference = Reference::start();
    assert_same(
        &ours,
        &get_by_reference(&mut reference, &batch, instance_id, hash),
    );
    for store in [store_one, store_batch] {
        store.close().await;
    }
}
