//! Discovery and an instance's life: states, ids, lazy starts and idle stops,
//! enable/disable hooks, the concurrency cap, parallel loads, start methods, call
//! events, and the API inside a tokio runtime.

use std::time::Duration;

use cjm_core::PluginError;
use cjm_manager::{InstanceState, LoadSpec, ManagerError, ManagerEvent};
use cjm_proto::Value;
use serde_json::json;

use crate::support::{Project, eventually, map};

fn pid_of(out: &Value) -> i64 {
    match out.get("pid") {
        Some(Value::Int(pid)) => *pid,
        other => panic!("no pid in {other:?}"),
    }
}

#[test]
fn discovery_answers_by_role_domain_and_canonical() {
    let p = Project::new("discovery");
    p.manifest("whisper", "transcription", "TranscriptionPlugin");
    p.manifest("voxtral", "transcription", "TranscriptionPlugin");
    p.manifest("graph", "graph", "GraphStorage");
    let m = p.manager();
    let names = |v: Vec<cjm_manifest::Discovered>| -> Vec<String> {
        v.into_iter().map(|d| d.manifest.code.name).collect()
    };
    assert_eq!(
        names(m.get_by_role("TranscriptionPlugin")),
        ["voxtral", "whisper"]
    );
    assert_eq!(names(m.get_by_domain("graph")), ["graph"]);
    assert_eq!(
        m.get_canonical("GraphStorage").unwrap().manifest.code.name,
        "graph"
    );
    assert!(
        m.get_canonical("TranscriptionPlugin").is_none(),
        "two compete"
    );
    assert!(m.get_canonical("Nothing").is_none());
    assert_eq!(m.compatible().len(), 4);
    let err = m.load(&LoadSpec::new("missing")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plugin missing is not installed"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("install-all"));
}

#[test]
fn an_instance_goes_through_its_states_and_is_called() {
    let p = Project::new("states");
    let m = p.manager();
    let mut events = m.subscribe();
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    assert_eq!(id, "counter");
    assert_eq!(m.state(&id), Some(InstanceState::Ready));
    let states: Vec<(InstanceState, InstanceState)> = crate::support::wait_for(&mut events, |e| {
        matches!(
            e,
            ManagerEvent::State {
                to: InstanceState::Ready,
                ..
            }
        )
    })
    .into_iter()
    .filter_map(|e| match e {
        ManagerEvent::State { from, to, .. } => Some((from, to)),
        _ => None,
    })
    .collect();
    assert_eq!(
        states,
        [
            (InstanceState::Stopped, InstanceState::Starting),
            (InstanceState::Starting, InstanceState::Ready)
        ]
    );
    let out = m.execute(&id, vec![Value::Int(5)], vec![]).unwrap();
    assert_eq!(out.get("args"), Some(&Value::List(vec![Value::Int(5)])));
    m.unload(&id).unwrap();
    assert_eq!(m.state(&id), None);
    let err = m.execute(&id, vec![], vec![]).unwrap_err();
    assert!(
        matches!(&err, ManagerError::NotLoaded { instance_id, .. } if *instance_id == id),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("instance {id:?} is not loaded")),
        "{err}"
    );
    let hint = err.hint().unwrap_or_default();
    assert!(hint.contains(&format!("LoadSpec::new(\"{id}\")")), "{hint}");
}

#[test]
fn instances_follow_the_reference_id_rules_and_keep_their_own_config() {
    let p = Project::new("ids");
    let m = p.manager();
    let a = m
        .load(
            &LoadSpec::new("counter")
                .instance("fast_1")
                .config(map(json!({"step": 5}))),
        )
        .unwrap();
    let b = m
        .load(
            &LoadSpec::new("counter")
                .new_instance()
                .config(map(json!({"step": 2}))),
        )
        .unwrap();
    assert_eq!(a, "fast_1");
    assert!(
        b.starts_with("counter-") && b.len() == "counter-".len() + 6,
        "{b}"
    );
    assert!(b["counter-".len()..].bytes().all(|c| c.is_ascii_hexdigit()));
    let out_a = m.execute(&a, vec![], vec![]).unwrap();
    let out_b = m.execute(&b, vec![], vec![]).unwrap();
    assert_eq!(
        out_a.get("config").unwrap().to_json(),
        json!({"step": 5, "label": "x", "rendezvous": 0})
    );
    assert_eq!(
        out_b.get("config").unwrap().to_json(),
        json!({"step": 2, "label": "x", "rendezvous": 0})
    );
    assert_ne!(pid_of(&out_a), pid_of(&out_b), "one worker each");

    // Loading a loaded id again changes nothing.
    let again = m
        .load(
            &LoadSpec::new("counter")
                .instance("fast_1")
                .config(map(json!({"step": 9}))),
        )
        .unwrap();
    assert_eq!(again, "fast_1");
    assert_eq!(
        pid_of(&m.execute(&a, vec![], vec![]).unwrap()),
        pid_of(&out_a)
    );

    // A reload restarts the worker, with a new configuration if given.
    m.reload(&a, Some(map(json!({"step": 7})))).unwrap();
    let reloaded = m.execute(&a, vec![], vec![]).unwrap();
    assert_eq!(
        reloaded.get("config").unwrap().to_json(),
        json!({"step": 7})
    );
    assert_ne!(pid_of(&reloaded), pid_of(&out_a));

    for bad in ["", "has space", "dots.are.out", &"x".repeat(65)] {
        let err = m.load(&LoadSpec::new("counter").instance(bad)).unwrap_err();
        assert!(
            matches!(err, ManagerError::InvalidInstanceId { .. }),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(m.instances(Some("counter")).len(), 2);
}

#[test]
fn a_lazy_instance_starts_on_first_use_and_an_idle_one_stops() {
    let p = Project::new("lazy");
    let m = p.manager();
    let id = m
        .load(
            &LoadSpec::new("counter")
                .lazy()
                .idle_ttl(Duration::from_secs(30)),
        )
        .unwrap();
    assert_eq!(m.state(&id), Some(InstanceState::Stopped));
    assert!(m.info(&id).unwrap().pid.is_none());
    let first = pid_of(&m.execute(&id, vec![], vec![]).unwrap());
    assert_eq!(m.state(&id), Some(InstanceState::Ready));

    p.clock.advance(Duration::from_secs(10));
    assert!(m.reap_idle().is_empty(), "not idle long enough");
    p.clock.advance(Duration::from_secs(25));
    assert_eq!(m.reap_idle(), std::slice::from_ref(&id));
    assert_eq!(m.state(&id), Some(InstanceState::Stopped));

    let second = pid_of(&m.execute(&id, vec![], vec![]).unwrap());
    assert_ne!(first, second, "restarted on demand");
    m.prefetch(&id).unwrap();
    assert_eq!(p.hooks(), ["prefetch"]);
}

#[test]
fn the_reaper_thread_judges_idleness_on_the_managers_clock() {
    let p = Project::new("reaper-clock");
    // A reaper that looks every millisecond of real time, on a clock that moves
    // only when the test says: it must not stop the worker until the clock has
    // passed the idle timeout, however often it looks.
    let m = cjm_manager::Manager::new(
        p.config(),
        cjm_manager::ManagerOptions {
            reap_interval: Some(Duration::from_millis(1)),
            ..p.options()
        },
    );
    let id = m
        .load(&LoadSpec::new("counter").idle_ttl(Duration::from_secs(30)))
        .unwrap();
    let mut events = m.subscribe();
    m.execute(&id, vec![], vec![]).unwrap();
    let pid = m.info(&id).unwrap().pid.unwrap();
    p.clock.advance(Duration::from_secs(31));
    let seen = crate::support::wait_for(&mut events, |e| {
        matches!(
            e,
            ManagerEvent::State {
                to: InstanceState::Stopped,
                ..
            }
        )
    });
    assert_eq!(
        seen,
        [
            ManagerEvent::State {
                instance_id: id.clone(),
                plugin: "counter".into(),
                from: InstanceState::Ready,
                to: InstanceState::Stopping,
            },
            ManagerEvent::State {
                instance_id: id.clone(),
                plugin: "counter".into(),
                from: InstanceState::Stopping,
                to: InstanceState::Stopped,
            },
        ],
        "stopped once the clock passed the timeout, and not before"
    );
    assert_eq!(m.info(&id).unwrap().pid, None);
    assert!(
        cjm_testkit::eventually(Duration::from_secs(10), || crate::support::exited(pid)).is_some(),
        "worker {pid} stopped"
    );
}

#[test]
fn a_disabled_instance_refuses_work_and_its_hooks_wait_for_the_running_call() {
    let p = Project::new("disable");
    let m = p.manager();
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    let blocked = {
        let (m, id) = (m.clone(), id.clone());
        std::thread::spawn(move || {
            m.execute(&id, vec![], vec![("action".into(), Value::from("block"))])
        })
    };
    // The call is in the plugin, and stays there until `release` exists.
    eventually("the call to be in the plugin", || {
        p.hooks() == ["call-start"]
    });
    assert_eq!(m.info(&id).unwrap().in_flight, 1);
    assert_eq!(m.state(&id), Some(InstanceState::Busy));
    m.disable(&id).unwrap();
    assert_eq!(m.state(&id), Some(InstanceState::Disabled));
    let err = m.execute(&id, vec![], vec![]).unwrap_err();
    assert!(
        matches!(err, ManagerError::Plugin(PluginError::Disabled { .. })),
        "{err}"
    );
    // The manager holds the hook back while the call runs: it is pending, not
    // sent, and the plugin has not run it.
    let info = m.info(&id).unwrap();
    assert_eq!((info.in_flight, info.pending_hook), (1, Some("on_disable")));
    assert_eq!(p.hooks(), ["call-start"]);
    fs_err::write(p.marker("release"), "").unwrap();
    blocked.join().unwrap().unwrap();
    // The last call out fires it, in the caller's thread, before `execute` returns.
    assert_eq!(p.hooks(), ["call-start", "call-end", "on_disable"]);
    assert_eq!(m.info(&id).unwrap().pending_hook, None);

    m.enable(&id).unwrap();
    assert_eq!(
        p.hooks(),
        ["call-start", "call-end", "on_disable", "on_enable"],
        "with nothing in flight, a hook runs at once"
    );
    assert_eq!(m.state(&id), Some(InstanceState::Ready));
    m.execute(&id, vec![], vec![]).unwrap();
}

#[test]
fn a_concurrency_cap_holds_calls_back() {
    let p = Project::new("cap");
    let m = p.manager();
    let id = m.load(&LoadSpec::new("counter").max_concurrent(1)).unwrap();
    let call = |action: &'static str| {
        let (m, id) = (m.clone(), id.clone());
        std::thread::spawn(move || {
            m.execute(&id, vec![], vec![("action".into(), Value::from(action))])
        })
    };
    let first = call("block");
    eventually("the first call to be in the plugin", || {
        p.hooks() == ["call-start"]
    });
    let second = call("block");
    // The second is provably held at the cap: counted as waiting, not in flight,
    // and not in the plugin (the first cannot end until `release` exists).
    eventually("the second call to wait at the cap", || {
        m.info(&id).unwrap().waiting == 1
    });
    let info = m.info(&id).unwrap();
    assert_eq!((info.in_flight, info.waiting), (1, 1));
    assert_eq!(p.hooks(), ["call-start"]);
    fs_err::write(p.marker("release"), "").unwrap();
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    assert_eq!(
        p.hooks(),
        ["call-start", "call-end", "call-start", "call-end"],
        "one after the other"
    );
    let info = m.info(&id).unwrap();
    assert_eq!((info.in_flight, info.waiting), (0, 0));
}

#[test]
fn many_instances_load_at_once() {
    let p = Project::new("many");
    let m = p.manager();
    // Each initialize waits until all four are initializing: loads one after the
    // other would never get there.
    let specs: Vec<LoadSpec> = (0..4)
        .map(|i| {
            LoadSpec::new("counter")
                .instance(format!("c{i}"))
                .config(map(json!({"rendezvous": 4})))
        })
        .collect();
    let ids: Vec<String> = m
        .load_many(&specs)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3"]);
    assert!(
        ids.iter()
            .all(|id| m.state(id) == Some(InstanceState::Ready))
    );
}

fn parent_of(pid: u32) -> u32 {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("ppid field")
}

#[test]
fn workers_are_forked_by_default_and_executed_on_request() {
    let p = Project::new("start-method");
    let host = std::process::id();
    let forked = p.manager();
    forked.load(&LoadSpec::new("counter")).unwrap();
    let w = forked.worker("counter").expect("a worker");
    let server = parent_of(w.pid());
    assert_ne!(server, host, "forked by a forkserver");
    assert_eq!(
        parent_of(server),
        host,
        "the forkserver is the host's child"
    );
    drop(w);
    drop(forked);

    let executed = cjm_manager::Manager::new(
        p.config(),
        cjm_manager::ManagerOptions {
            search_paths: Some(vec![p.dir.join("data/manifests")]),
            reap_interval: None,
            start_method: cjm_manager::StartMethod::Spawn,
            ..cjm_manager::ManagerOptions::default()
        },
    );
    executed.load(&LoadSpec::new("counter")).unwrap();
    let w = executed.worker("counter").expect("a worker");
    assert_eq!(parent_of(w.pid()), host, "executed by the host");
}

#[test]
fn load_all_loads_every_installed_plugin_at_once_and_unload_all_stops_them() {
    let p = Project::new("load-all");
    p.manifest("whisper", "transcription", "TranscriptionPlugin");
    let m = p.manager();
    let configs = [("whisper".to_owned(), map(json!({"step": 3})))].into();
    let loaded = m.load_all(&configs);
    assert_eq!(
        loaded.keys().map(String::as_str).collect::<Vec<_>>(),
        ["counter", "whisper"]
    );
    for (name, outcome) in &loaded {
        assert_eq!(outcome.as_ref().unwrap(), name, "the default instance");
        assert_eq!(m.state(name), Some(InstanceState::Ready));
    }
    let out = m.execute("whisper", vec![], vec![]).unwrap();
    assert_eq!(
        out.get("config").unwrap().to_json()["step"],
        json!(3),
        "its given config"
    );
    let pids: Vec<u32> = ["counter", "whisper"]
        .iter()
        .map(|id| m.worker(id).unwrap().pid())
        .collect();
    m.unload_all();
    assert!(m.instance_ids().is_empty());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || fs_err::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "worker {pid} stopped"
        );
    }
}

#[test]
fn call_subscribers_see_one_busy_pair_per_call_that_finds_the_instance_idle() {
    let p = Project::new("call-events");
    let m = p.manager();
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    let mut plain = m.subscribe();
    let mut calls = m.subscribe_with_calls();
    let busy = |from, to| ManagerEvent::State {
        instance_id: id.clone(),
        plugin: "counter".into(),
        from,
        to,
    };
    let drain = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<ManagerEvent>| {
        std::iter::from_fn(|| rx.try_recv().ok()).collect::<Vec<_>>()
    };
    // The transitions are sent on the caller's thread, before `execute` returns.
    m.execute(&id, vec![], vec![]).unwrap();
    let pair = [
        busy(InstanceState::Ready, InstanceState::Busy),
        busy(InstanceState::Busy, InstanceState::Ready),
    ];
    assert_eq!(drain(&mut calls), pair);
    assert_eq!(
        drain(&mut plain),
        [],
        "plain subscribers get no call events"
    );

    // Two overlapping calls: the second finds the instance busy already.
    let call = |action: &'static str| {
        let (m, id) = (m.clone(), id.clone());
        std::thread::spawn(move || {
            m.execute(&id, vec![], vec![("action".into(), Value::from(action))])
        })
    };
    let first = call("block");
    eventually("the first call to be in the plugin", || {
        p.hooks() == ["call-start"]
    });
    let second = call("echo");
    eventually("both calls in flight", || {
        m.info(&id).unwrap().in_flight == 2
    });
    fs_err::write(p.marker("release"), "").unwrap();
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    assert_eq!(drain(&mut calls), pair);
    assert_eq!(drain(&mut plain), []);
}

#[tokio::test]
async fn the_blocking_api_works_from_inside_a_tokio_runtime() {
    let p = Project::new("in-runtime");
    let m = p.manager();
    // Each of these reads or writes the config store, whose own runtime cannot be
    // blocked on from this one: the manager moves that onto a thread of its own.
    let id = m
        .load(
            &LoadSpec::new("counter")
                .config(map(json!({"step": 4})))
                .max_concurrent(1),
        )
        .unwrap();
    m.update_config(&id, &map(json!({"step": 5})), false)
        .unwrap();
    m.disable(&id).unwrap();
    m.enable(&id).unwrap();
    // With a cap, the awaited call waits for its turn on the blocking pool.
    let out = m.execute_async(&id, vec![], vec![]).await.unwrap();
    assert_eq!(out.get("config").unwrap().to_json()["step"], json!(5));
    drop(m);

    let again = p.manager();
    let id = again.load(&LoadSpec::new("counter")).unwrap();
    assert_eq!(
        again.config(&id).unwrap()["step"],
        json!(5),
        "persisted from inside the runtime"
    );
    let out = again.execute_async(&id, vec![], vec![]).await.unwrap();
    assert_eq!(out.get("config").unwrap().to_json()["step"], json!(5));
}
