use std::fmt::Write as _;

use cjm_stores::{SecretStore, SecretValue};

use crate::support::Scratch;

const SECRET: &str = "sk-live-7f3a9c-do-not-print";

#[track_caller]
fn assert_no_secret(shown: &str) {
    assert!(!shown.contains(SECRET), "a secret leaked into: {shown}");
    assert!(
        !shown.contains("7f3a9c"),
        "part of a secret leaked into: {shown}"
    );
}

/// An error, its `Debug` and every cause in its chain.
fn everything_about(error: &dyn std::error::Error) -> String {
    let mut shown = format!("{error} / {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        _ = write!(shown, " / {cause} / {cause:?}");
        source = cause.source();
    }
    shown
}

#[tokio::test]
async fn secret_values_never_show_in_debug_output() {
    let scratch = Scratch::new("hygiene-debug");
    let store = SecretStore::new(scratch.join("secrets"));
    let value = SecretValue::new(SECRET);
    store.set_secret("p", "KEY", &value, None).await.unwrap();
    let read = store.get_secret("p", "KEY", None).await.unwrap();
    let shown = format!(
        "{:?} {:?} {:#?} {:?}",
        store,
        value,
        read,
        vec![value.clone()]
    );
    assert_no_secret(&shown);
    assert!(shown.contains("SecretValue(***)"), "{shown}");
    assert_eq!(read.unwrap().expose(), SECRET);
}

#[tokio::test]
async fn a_failed_write_reports_the_path_but_never_the_value() {
    let scratch = Scratch::new("hygiene-errors");
    // The secrets directory's place is taken by a file.
    let blocked = scratch.join("blocked");
    fs_err::write(&blocked, "").unwrap();
    let error = SecretStore::new(&blocked)
        .set_secret("p", "KEY", &SecretValue::new(SECRET), None)
        .await
        .unwrap_err();
    let shown = everything_about(&error);
    assert_no_secret(&shown);
    assert!(shown.contains(&*blocked.to_string_lossy()), "{shown}");

    // The secrets file's place is taken by a directory.
    let dir = scratch.join("secrets");
    fs_err::create_dir_all(dir.join("secrets.json")).unwrap();
    let store = SecretStore::new(&dir);
    let error = store
        .set_secret("p", "KEY", &SecretValue::new(SECRET), None)
        .await
        .unwrap_err();
    let shown = everything_about(&error);
    assert_no_secret(&shown);
    assert!(shown.contains("could not read the secrets file"), "{shown}");
}
