use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use cjm_stores::{SecretStore, SecretValue, StoreError};
use serde_json::{Value, json};

use crate::support::{Reference, Scratch};

/// A value with everything JSON has to escape.
const AWKWARD_VALUE: &str = "pä$$ \u{1f600} \"quoted\" back\\slash\nnewline\t\u{7f}";

fn mode(path: &Path) -> u32 {
    fs_err::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs_err::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect()
}

enum Op {
    Set(
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    ),
    Delete(&'static str, &'static str, Option<&'static str>, bool),
}

#[tokio::test]
async fn the_same_operations_leave_the_same_bytes_on_both_sides() {
    let scratch = Scratch::new("secrets-bytes");
    let (ours, theirs) = (scratch.join("rs/secrets"), scratch.join("py/secrets"));
    let store = SecretStore::new(&ours);
    let mut reference = Reference::start();
    let ops = [
        Op::Set("gemini", "GEMINI_API_KEY", "g-1", None),
        Op::Set("gemini", "OTHER", AWKWARD_VALUE, Some("team")),
        Op::Set("openai", "OPENAI_API_KEY", "o-1", None),
        Op::Set("gemini", "GEMINI_API_KEY", "g-2", None),
        Op::Set("\u{e9}l\u{e8}ve", "K", "v", Some("")),
        Op::Set("gemini", "ANOTHER", "a", Some("team")),
        Op::Delete("gemini", "OTHER", Some("team"), true),
        Op::Delete("gemini", "OTHER", Some("team"), false),
        Op::Delete("nobody", "K", None, false),
        Op::Delete("openai", "OPENAI_API_KEY", None, true),
        Op::Delete("gemini", "ANOTHER", Some("team"), true),
        Op::Set("openai", "OPENAI_API_KEY", "o-2", Some("team")),
    ];
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Set(plugin, key, value, scope) => {
                store
                    .set_secret(plugin, key, &SecretValue::new(value), scope)
                    .await
                    .unwrap();
                reference.call(&json!({
                    "op": "secret_set", "dir": theirs, "plugin": plugin, "key": key,
                    "value": value, "scope": scope,
                }));
            }
            Op::Delete(plugin, key, scope, expected) => {
                assert_eq!(
                    store.delete_secret(plugin, key, scope).await.unwrap(),
                    expected
                );
                let deleted = reference.call(&json!({
                    "op": "secret_delete", "dir": theirs, "plugin": plugin, "key": key,
                    "scope": scope,
                }));
                assert_eq!(deleted, expected, "step {step}");
            }
        }
        let our_bytes = fs_err::read_to_string(store.path()).unwrap();
        let their_bytes = fs_err::read_to_string(theirs.join("secrets.json")).unwrap();
        assert_eq!(our_bytes, their_bytes, "after step {step}");
    }
    let file: Value = serde_json::from_str(&fs_err::read_to_string(store.path()).unwrap()).unwrap();
    assert_eq!(
        file,
        json!({
            "__default__": {"gemini": {"GEMINI_API_KEY": "g-2"}, "\u{e9}l\u{e8}ve": {"K": "v"}},
            "team": {"openai": {"OPENAI_API_KEY": "o-2"}},
        })
    );
}

#[tokio::test]
async fn rust_reads_what_the_reference_wrote() {
    let scratch = Scratch::new("secrets-read");
    let dir = scratch.join("secrets");
    let mut reference = Reference::start();
    for (plugin, key, value, scope) in [
        ("gemini", "GEMINI_API_KEY", "g", None),
        ("gemini", "B_KEY", AWKWARD_VALUE, None),
        ("gemini", "A_KEY", "scoped", Some("alice")),
    ] {
        reference.call(&json!({
            "op": "secret_set", "dir": dir, "plugin": plugin, "key": key, "value": value,
            "scope": scope,
        }));
    }
    let store = SecretStore::new(&dir);
    let get = |key: &'static str, scope: Option<&'static str>| {
        let store = store.clone();
        async move {
            store
                .get_secret("gemini", key, scope)
                .await
                .unwrap()
                .map(|value| value.expose().to_owned())
        }
    };
    assert_eq!(get("GEMINI_API_KEY", None).await.as_deref(), Some("g"));
    assert_eq!(get("GEMINI_API_KEY", Some("")).await.as_deref(), Some("g"));
    assert_eq!(get("B_KEY", None).await.as_deref(), Some(AWKWARD_VALUE));
    assert_eq!(get("A_KEY", Some("alice")).await.as_deref(), Some("scoped"));
    assert_eq!(get("A_KEY", None).await, None);
    assert_eq!(get("GEMINI_API_KEY", Some("alice")).await, None);
    assert_eq!(
        store.list_keys("gemini", None).await.unwrap(),
        ["B_KEY", "GEMINI_API_KEY"]
    );
    assert_eq!(
        store.list_keys("gemini", Some("alice")).await.unwrap(),
        ["A_KEY"]
    );
    assert!(store.list_keys("openai", None).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_reference_reads_what_rust_wrote() {
    let scratch = Scratch::new("secrets-write");
    let dir = scratch.join("data/secrets");
    let store = SecretStore::new(&dir);
    store
        .set_secret(
            "gemini",
            "GEMINI_API_KEY",
            &SecretValue::new(AWKWARD_VALUE),
            None,
        )
        .await
        .unwrap();
    store
        .set_secret("gemini", "TEAM_KEY", &SecretValue::new("t"), Some("team"))
        .await
        .unwrap();
    let mut reference = Reference::start();
    let get = |reference: &mut Reference, key: &str, scope: Option<&str>| {
        reference.call(&json!({
            "op": "secret_get", "dir": dir, "plugin": "gemini", "key": key, "scope": scope,
        }))
    };
    assert_eq!(get(&mut reference, "GEMINI_API_KEY", None), AWKWARD_VALUE);
    assert_eq!(get(&mut reference, "TEAM_KEY", Some("team")), "t");
    assert_eq!(get(&mut reference, "TEAM_KEY", None), Value::Null);
    assert_eq!(
        reference
            .call(&json!({"op": "secret_list", "dir": dir, "plugin": "gemini", "scope": "team"})),
        json!(["TEAM_KEY"])
    );
}

#[tokio::test]
async fn the_directory_is_0700_and_the_file_0600_with_no_temporary_file_left() {
    let scratch = Scratch::new("secrets-modes");
    let dir = scratch.join("secrets");
    // A directory that exists with loose permissions is tightened, as the
    // reference does on every write.
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = SecretStore::new(&dir);
    for i in 0..3 {
        store
            .set_secret("p", &format!("K{i}"), &SecretValue::new("v"), None)
            .await
            .unwrap();
    }
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(mode(&dir.join("secrets.json.lock")), 0o600);
    assert_eq!(
        names(&dir),
        BTreeSet::from(["secrets.json".to_owned(), "secrets.json.lock".to_owned()])
    );

    // A new directory, and a file the reference wrote, keep the same modes.
    let fresh = scratch.join("fresh/secrets");
    let mut reference = Reference::start();
    reference
        .call(&json!({"op": "secret_set", "dir": fresh, "plugin": "p", "key": "K", "value": "v"}));
    SecretStore::new(&fresh)
        .set_secret("p", "K2", &SecretValue::new("v"), None)
        .await
        .unwrap();
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("secrets.json")), 0o600);
}

#[tokio::test]
async fn a_missing_file_reads_as_empty_and_nothing_is_created_until_a_write() {
    let scratch = Scratch::new("secrets-missing");
    let dir = scratch.join("not-yet/secrets");
    let store = SecretStore::new(&dir);
    assert!(store.get_secret("p", "K", None).await.unwrap().is_none());
    assert!(store.list_keys("p", None).await.unwrap().is_empty());
    assert!(!store.delete_secret("p", "K", None).await.unwrap());
    assert!(!scratch.join("not-yet").exists());
    store
        .set_secret("p", "K", &SecretValue::new("v"), None)
        .await
        .unwrap();
    assert!(store.path().is_file());
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_that_quotes_no_secret_and_is_left_alone() {
    let scratch = Scratch::new("secrets-corrupt");
    let dir = scratch.join("secrets");
    fs_err::create_dir_all(&dir).unwrap();
    let text = r#"{"__default__": {"p": {"K": "hunter2-very-secret", "#;
    fs_err::write(dir.join("secrets.json"), text).unwrap();
    let store = SecretStore::new(&dir);

    let read = store.get_secret("p", "K", None).await.unwrap_err();
    let write = store
        .set_secret("p", "OTHER", &SecretValue::new("new-secret-value"), None)
        .await
        .unwrap_err();
    for error in [&read, &write] {
        assert!(
            matches!(error, StoreError::SecretsNotJson { .. }),
            "{error:?}"
        );
        let shown = format!(
            "{error} / {error:?} / {:?}",
            std::error::Error::source(error)
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("new-secret-value"), "{shown}");
        assert!(shown.contains("secrets.json"), "{shown}");
    }
    // The reference would have read `{}` and overwritten the file.
    assert_eq!(fs_err::read_to_string(store.path()).unwrap(), text);

    fs_err::write(
        store.path(),
        r#"{"__default__": {"p": {"K": ["hunter2"]}}}"#,
    )
    .unwrap();
    let error = store.get_secret("p", "K", None).await.unwrap_err();
    assert!(
        matches!(error, StoreError::SecretsMalformed { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "the secrets file {} is malformed: secret `K` of plugin `p` in scope `__default__` is not a string",
            store.path().display()
        )
    );
}

#[tokio::test]
async fn default_locations_are_the_references() {
    let mut reference = Reference::start();
    let defaults = reference.call(&json!({"op": "defaults"}));
    assert_eq!(
        json!(SecretStore::in_data_dir(None).unwrap().path()),
        defaults["secrets"]
    );
    let in_dir = SecretStore::in_data_dir(Some("/data/cjm".as_ref())).unwrap();
    assert_eq!(in_dir.dir(), Path::new("/data/cjm/secrets"));
    assert_eq!(in_dir.path(), Path::new("/data/cjm/secrets/secrets.json"));
}
