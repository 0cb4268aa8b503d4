//! Configuration: validation before any worker starts, defaults, persistence,
//! `reconfigure` and its release hooks.

use cjm_manager::{LoadSpec, ManagerError};
use serde_json::json;

use crate::support::{Project, map};

#[test]
fn a_bad_config_is_refused_with_every_problem_before_any_worker_starts() {
    let p = Project::new("badconfig");
    let m = p.manager();
    let cases = [
        (json!({"step": "five"}), "/step: must be an integer"),
        (json!({"step": 0}), "/step: must be ≥ 1"),
        (json!({"label": 3}), "/label: must be a string"),
        (
            json!({"steps": 2}),
            "/steps: unknown key; did you mean `step`?",
        ),
    ];
    for (config, expected) in cases {
        let err = m
            .load(&LoadSpec::new("counter").config(map(config.clone())))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                ManagerError::Config {
                    persisted: false,
                    ..
                }
            ),
            "{config}: {text}"
        );
        assert!(text.contains(expected), "{config}: {text}");
        assert!(text.contains("plugin `counter`"), "{text}");
        assert!(err.hint().is_some());
    }
    // All at once, in one error.
    let err = m
        .load(&LoadSpec::new("counter").config(map(json!({"step": 0, "label": 3, "extra": 1}))))
        .unwrap_err();
    let ManagerError::Config { error, .. } = &err else {
        panic!("{err}")
    };
    let paths: Vec<&str> = error.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["/step", "/label", "/extra"]);
    assert!(m.instance_ids().is_empty(), "nothing was loaded");
    assert!(
        !p.dir.join("data/logs/counter.log").exists(),
        "no worker was spawned"
    );
    // Lenient mode drops the unknown key and loads.
    let id = m
        .load(&LoadSpec {
            lenient: true,
            ..LoadSpec::new("counter").config(map(json!({"extra": 1})))
        })
        .unwrap();
    assert_eq!(
        serde_json::Value::Object(m.config(&id).unwrap()),
        json!({"step": 1, "label": "x", "rendezvous": 0})
    );
}

#[test]
fn defaults_are_filled_and_configs_persist_across_a_restart() {
    let p = Project::new("persist");
    {
        let m = p.manager();
        let id = m.load(&LoadSpec::new("counter")).unwrap();
        let out = m.execute(&id, vec![], vec![]).unwrap();
        assert_eq!(
            out.get("config").unwrap().to_json(),
            json!({"step": 1, "label": "x", "rendezvous": 0})
        );
        // A change goes through the plugin's reconfigure, then to the store.
        let new = m
            .update_config(&id, &map(json!({"step": 4})), false)
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(new),
            json!({"step": 4, "label": "x", "rendezvous": 0})
        );
        let out = m.execute(&id, vec![], vec![]).unwrap();
        assert_eq!(out.get("config").unwrap().to_json()["step"], 4);
        let err = m
            .update_config(&id, &map(json!({"step": -1})), false)
            .unwrap_err();
        assert!(err.to_string().contains("/step"), "{err}");
        m.disable(&id).unwrap();
    }
    // A new manager (a new session) loads the persisted config and flag.
    let m = p.manager();
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    assert_eq!(m.config(&id).unwrap()["step"], 4);
    assert_eq!(m.state(&id), Some(cjm_manager::InstanceState::Disabled));
    m.enable(&id).unwrap();
    // An explicit config wins over the persisted one; other instances never persist.
    let other = m
        .load(
            &LoadSpec::new("counter")
                .instance("other")
                .config(map(json!({"step": 9}))),
        )
        .unwrap();
    assert_eq!(m.config(&other).unwrap()["step"], 9);
}

#[test]
fn a_persisted_config_that_stopped_validating_is_reported_not_used() {
    let p = Project::new("stale");
    {
        let m = p.manager();
        let id = m.load(&LoadSpec::new("counter")).unwrap();
        m.update_config(&id, &map(json!({"label": "kept"})), false)
            .unwrap();
    }
    // The stored record now holds a key a newer schema does not know.
    let store = cjm_stores::ConfigStore::new(p.dir.join("data/plugin_configs.db"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(store.set(
        "counter",
        &cjm_stores::ConfigRecord {
            config: map(json!({"step": 2, "retired": true})),
            enabled: true,
            updated_at: 0.0,
        },
    ))
    .unwrap();
    let m = p.manager();
    let err = m.load(&LoadSpec::new("counter")).unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::Config {
                persisted: true,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("the persisted configuration no longer fits: "),
        "{text}"
    );
    assert!(text.contains("/retired"), "{text}");
    assert!(err.hint().unwrap().contains("cjm-ctl config set counter"));
}

#[test]
fn reconfigure_releases_only_what_a_changed_reload_trigger_names() {
    let p = Project::new("triggers");
    p.manifest_of("model", "demo", "ModelPlugin", None, "ModelPlugin");
    let m = p.manager();
    let id = m.load(&LoadSpec::new("model")).unwrap();
    let pid = m.info(&id).unwrap().pid;
    // Not a trigger field: reconfigured in place, nothing released.
    m.update_config(&id, &map(json!({"temperature": 0.9})), false)
        .unwrap();
    assert!(p.hooks().is_empty(), "{:?}", p.hooks());
    // The trigger field: its release hook runs (with the old model still set).
    m.update_config(
        &id,
        &map(json!({"model": "large", "temperature": 0.9})),
        false,
    )
    .unwrap();
    assert_eq!(p.hooks(), ["release model base"]);
    let out = m.execute(&id, vec![], vec![]).unwrap().to_json();
    assert_eq!(out, json!({"model": "large", "temperature": 0.9}));
    assert_eq!(
        m.info(&id).unwrap().pid,
        pid,
        "no respawn for a config change"
    );
}
