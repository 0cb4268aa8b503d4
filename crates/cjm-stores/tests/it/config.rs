use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cjm_core::ManualClock;
use cjm_stores::{ConfigRecord, ConfigStore};
use serde_json::{Map, Value, json};

use crate::support::{Reference, Scratch};

/// Keys out of order, nesting, unicode in and out of the BMP, escapes, and
/// floats and integers at the edges of their printing rules.
pub(crate) const AWKWARD_CONFIG: &str = r#"{
    "model": "tiny",
    "b": {"z": [1, 2.5, {"deep": [null, true, false]}], "a": {}},
    "a": [],
    "unicode": "caf\u00e9 \u6f22\u5b57 \ud83d\ude00 \u0000\u001f\u007f",
    "escapes": "quote \" backslash \\ newline \n tab \t",
    "\u00e9cl\u00e9": "key with accents",
    "floats": [0.1, 1e-07, 1e16, 123456789.125, -0.0, 2.0, 1.7976931348623157e308, 5e-324],
    "ints": [0, -1, 9223372036854775807, -9223372036854775808, 18446744073709551615]
}"#;

fn awkward_config() -> Map<String, Value> {
    serde_json::from_str(AWKWARD_CONFIG).unwrap()
}

fn at(seconds: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(seconds, nanos)
}

#[tokio::test]
async fn rows_written_by_either_side_hold_the_same_bytes() {
    let scratch = Scratch::new("config-bytes");
    let db = scratch.join("plugin_configs.db");
    let mut reference = Reference::start();
    reference.call(&json!({
        "op": "config_set", "db": db, "name": "py",
        "config": awkward_config(), "enabled": false,
    }));
    let store = ConfigStore::new(&db);
    let record = ConfigRecord {
        config: awkward_config(),
        enabled: false,
        updated_at: 0.0,
    };
    store.set("rs", &record).await.unwrap();

    let rows = reference.sql(
        &db,
        "SELECT plugin_name, config_json, enabled, typeof(enabled), typeof(updated_at) \
         FROM plugin_configs ORDER BY plugin_name",
    );
    assert_eq!(rows.len(), 2);
    let (py, rs) = (&rows[0], &rows[1]);
    assert_eq!(py[0], "py");
    assert_eq!(rs[0], "rs");
    assert_eq!(rs[1], py[1], "config_json differs from json.dumps(config)");
    assert_eq!(&rs[2..], &py[2..]);
    assert_eq!(&rs[2..], &[json!(0), json!("integer"), json!("real")]);
    store.close().await;
}

#[tokio::test]
async fn rust_reads_what_the_reference_wrote() {
    let scratch = Scratch::new("config-read");
    let db = scratch.join("data/plugin_configs.db");
    let mut reference = Reference::start();
    let mut stamps = Map::new();
    for (name, config, enabled) in [
        ("whisper", json!(awkward_config()), true),
        ("gemini", json!({"api": {"region": "eu"}}), false),
        ("empty", json!({}), true),
    ] {
        let stamp = reference.call(&json!({
            "op": "config_set", "db": db, "name": name, "config": config, "enabled": enabled,
        }));
        stamps.insert(name.to_owned(), stamp);
    }

    let store = ConfigStore::new(&db);
    let whisper = store.get("whisper").await.unwrap().unwrap();
    assert_eq!(whisper.config, awkward_config());
    assert!(whisper.enabled);
    assert_eq!(json!(whisper.updated_at), stamps["whisper"]);

    let all = store.list_all().await.unwrap();
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["empty", "gemini", "whisper"]
    );
    let gemini = &all["gemini"];
    assert_eq!(json!(gemini.config), json!({"api": {"region": "eu"}}));
    assert!(!gemini.enabled);
    assert_eq!(json!(gemini.updated_at), stamps["gemini"]);
    assert_eq!(all["empty"].config, Map::new());
    assert_eq!(store.get("absent").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn the_reference_reads_what_rust_wrote() {
    let scratch = Scratch::new("config-write");
    let db = scratch.join("nested/dirs/plugin_configs.db");
    let store = ConfigStore::new(&db).with_clock(Arc::new(ManualClock::starting_at(at(
        1_795_705_200,
        123_456_789,
    ))));
    let record = ConfigRecord {
        config: awkward_config(),
        enabled: false,
        updated_at: 42.0,
    };
    let stamp = store.set("whisper", &record).await.unwrap();
    assert!((stamp - 1_795_705_200.123_456_7).abs() < 1e-6, "{stamp}");
    store.set("other", &ConfigRecord::default()).await.unwrap();

    let mut reference = Reference::start();
    let got = reference.call(&json!({"op": "config_get", "db": db, "name": "whisper"}));
    assert_eq!(
        got,
        json!({"config": awkward_config(), "enabled": false, "updated_at": stamp})
    );
    let all = reference.call(&json!({"op": "config_list", "db": db}));
    assert_eq!(
        all["other"],
        json!({"config": {}, "enabled": true, "updated_at": stamp})
    );
    store.close().await;
}

#[tokio::test]
async fn deletes_are_seen_by_the_other_side() {
    let scratch = Scratch::new("config-delete");
    let db = scratch.join("plugin_configs.db");
    let mut reference = Reference::start();
    for name in ["a", "b"] {
        reference.call(&json!({
            "op": "config_set", "db": db, "name": name, "config": {"n": name}, "enabled": true,
        }));
    }
    let store = ConfigStore::new(&db);
    assert!(store.delete("a").await.unwrap());
    assert!(!store.delete("a").await.unwrap());
    assert_eq!(
        reference.call(&json!({"op": "config_get", "db": db, "name": "a"})),
        Value::Null
    );
    assert_eq!(
        reference.call(&json!({"op": "config_delete", "db": db, "name": "b"})),
        true
    );
    assert!(store.list_all().await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_missing_database_reads_as_empty_and_is_created_by_the_first_write() {
    let scratch = Scratch::new("config-missing");
    let parent = scratch.join("not-yet");
    let store = ConfigStore::new(parent.join("plugin_configs.db"));
    assert_eq!(store.get("whisper").await.unwrap(), None);
    assert!(store.list_all().await.unwrap().is_empty());
    assert!(!store.delete("whisper").await.unwrap());
    assert!(!parent.exists(), "a read created {}", parent.display());

    store
        .set("whisper", &ConfigRecord::default())
        .await
        .unwrap();
    assert!(store.path().is_file());
    store.close().await;
}

#[tokio::test]
async fn a_database_made_here_has_the_references_schema_text() {
    let scratch = Scratch::new("config-schema");
    let (ours, theirs) = (scratch.join("rs.db"), scratch.join("py.db"));
    let store = ConfigStore::new(&ours);
    store.set("x", &ConfigRecord::default()).await.unwrap();
    store.close().await;
    let mut reference = Reference::start();
    reference.call(
        &json!({"op": "config_set", "db": theirs, "name": "x", "config": {}, "enabled": true}),
    );
    let query = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name";
    let schema = reference.sql(&ours, query);
    assert_eq!(schema, reference.sql(&theirs, query));
    assert_eq!(schema[0][1], "plugin_configs");
    // Left in the rollback-journal mode both sides use by default.
    assert_eq!(
        reference.sql(&ours, "PRAGMA journal_mode"),
        [[json!("delete")]]
    );
}

#[tokio::test]
async fn a_row_whose_config_is_not_json_reads_as_an_empty_config_on_both_sides() {
    let scratch = Scratch::new("config-corrupt");
    let db = scratch.join("plugin_configs.db");
    let store = ConfigStore::new(&db);
    store.set("bad", &ConfigRecord::default()).await.unwrap();
    let mut reference = Reference::start();
    reference.sql(
        &db,
        "UPDATE plugin_configs SET config_json = '{not json', enabled = 0",
    );
    let ours = store.get("bad").await.unwrap().unwrap();
    let theirs = reference.call(&json!({"op": "config_get", "db": db, "name": "bad"}));
    assert_eq!(json!(ours.config), theirs["config"]);
    assert_eq!(ours.config, Map::new());
    assert!(!ours.enabled);
    store.close().await;
}

#[tokio::test]
async fn default_locations_are_the_references() {
    let mut reference = Reference::start();
    let defaults = reference.call(&json!({"op": "defaults"}));
    let store = ConfigStore::in_data_dir(None).unwrap();
    assert_eq!(json!(store.path()), defaults["config"]);
    let in_dir = ConfigStore::in_data_dir(Some("/data/cjm".as_ref())).unwrap();
    assert_eq!(
        in_dir.path(),
        std::path::Path::new("/data/cjm/plugin_configs.db")
    );
}
