//! The reference's system-monitor plugin as a further source of readings, on a
//! real worker whose answers the test scripts: its GPU where cjm reads none,
//! its stats for the reference's policies, its worker kept through evictions,
//! and instances that do not answer the contract refused.

use std::sync::Arc;
use std::time::Duration;

use cjm_manager::{LoadSpec, Manager, ManagerError, ManagerOptions, SystemClock};
use cjm_sched::{Gpus, Policy};
use serde_json::{Value, json};

use crate::support::Project;

const MB: u64 = 1 << 20;

/// A project with the monitor fixture installed as `sysmon` and a machine on
/// which cjm itself reads no GPU; the monitor is polled on every sample.
fn project(name: &str) -> (Project, ManagerOptions) {
    let p = Project::new(name);
    p.manifest_of(
        "sysmon",
        "infra",
        "SystemMonitorPlugin",
        None,
        "SystemMonitor",
    );
    let options = ManagerOptions {
        gpus: Some(Arc::new(Gpus::None {
            reason: "no NVIDIA driver on this test machine".into(),
        })),
        system_monitor_interval: Duration::ZERO,
        clock: SystemClock::shared(),
        admission_timeout: Duration::from_millis(300),
        ..p.options()
    };
    (p, options)
}

/// What the monitor plugin answers from now on.
fn script(p: &Project, answer: &Value) {
    fs_err::write(p.marker("sysmon.json"), answer.to_string()).unwrap();
}

/// The reference's `SystemStats` of a machine with one GPU of `total_mb`,
/// `free_mb` of it free, and `ram_mb` of RAM available.
fn gpu_stats(total_mb: u64, free_mb: u64, ram_mb: u64) -> Value {
    json!({"stats": {
        "gpu_type": "Plugin GPU",
        "gpu_total_memory_mb": total_mb,
        "gpu_free_memory_mb": free_mb,
        "gpu_used_memory_mb": total_mb - free_mb,
        "memory_available_mb": ram_mb,
        "memory_total_mb": 32768,
    }})
}

/// A `Counter` plugin that declares it needs `vram_mb` of GPU memory.
fn gpu_counter(p: &Project, name: &str, vram_mb: u64) {
    p.manifest(name, "demo", "CounterPlugin");
    p.declare(
        name,
        json!({"requires_gpu": true, "min_gpu_vram_mb": vram_mb}),
    );
}

fn with_monitor(p: &Project, options: ManagerOptions) -> Manager {
    let m = Manager::new(p.config(), options);
    m.load(&LoadSpec::new("sysmon")).unwrap();
    assert_eq!(m.register_system_monitor("sysmon").unwrap(), "sysmon");
    assert_eq!(m.system_monitor().as_deref(), Some("sysmon"));
    m
}

#[test]
fn where_cjm_reads_no_gpu_calls_are_placed_on_the_monitors_gpu_and_wait_for_it() {
    let (p, options) = project("sysmon-gpu");
    script(&p, &gpu_stats(8192, 8192, 16384));
    gpu_counter(&p, "model-a", 6144);
    gpu_counter(&p, "model-b", 6144);
    let m = with_monitor(&p, options);

    let seen = m.resources();
    assert!(
        seen.gpu_source
            .contains("the system monitor, plugin sysmon (instance sysmon)"),
        "{}",
        seen.gpu_source
    );
    assert_eq!(seen.devices.len(), 1, "{:?}", seen.devices);
    let gpu = &seen.devices[0];
    assert_eq!(
        (gpu.name.as_str(), gpu.total_bytes, gpu.free_bytes),
        ("Plugin GPU", 8192 * MB, 8192 * MB)
    );

    let a = m.load(&LoadSpec::new("model-a")).unwrap();
    m.execute(&a, vec![], vec![]).unwrap();
    let pid = m.info(&a).unwrap().pid.unwrap();

    // The monitor now says model-a's worker holds 6 GB and 1 GB is left, so
    // model-b does not fit, and evicting model-a does not give it back (the
    // monitor still reports it held): model-b waits and says why.
    let mut answer = gpu_stats(8192, 1024, 16384);
    answer["processes"] = json!([{"pid": pid, "gpu_index": 0, "gpu_memory_mb": 6144}]);
    script(&p, &answer);
    let b = m.load(&LoadSpec::new("model-b").lazy()).unwrap();
    let err = m.execute(&b, vec![], vec![]).unwrap_err();
    assert!(matches!(err, ManagerError::Waited { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("model-b") && text.contains("6.0 GB"),
        "{text}"
    );

    // The memory comes back: model-b runs.
    script(&p, &gpu_stats(8192, 8192, 16384));
    m.execute(&b, vec![], vec![]).unwrap();
    let held = m
        .resources()
        .instances
        .into_iter()
        .find(|i| i.id == "sysmon")
        .map(|i| i.state.as_str().to_owned());
    assert_eq!(held.as_deref(), Some("ready"), "the monitor was kept");
}

#[test]
fn the_monitors_share_of_a_worker_is_what_the_worker_holds() {
    let (p, options) = project("sysmon-held");
    script(&p, &gpu_stats(8192, 8192, 16384));
    gpu_counter(&p, "model", 1024);
    let m = with_monitor(&p, options);
    let id = m.load(&LoadSpec::new("model")).unwrap();
    m.execute(&id, vec![], vec![]).unwrap();
    let pid = m.info(&id).unwrap().pid.unwrap();
    let mut answer = gpu_stats(8192, 5120, 16384);
    answer["processes"] = json!([{"pid": pid, "gpu_index": -1, "gpu_memory_mb": 3072}]);
    script(&p, &answer);
    // A fresh sample polls the monitor: make one by registering again.
    m.register_system_monitor("sysmon").unwrap();
    let r = m.resources();
    let model = r.instances.iter().find(|i| i.id == id).unwrap();
    assert_eq!(model.held.vram_bytes, 3072 * MB, "{model:?}");
    assert_eq!(r.devices[0].free_bytes, 5120 * MB);
}

#[test]
fn the_safety_policy_decides_on_the_monitors_stats_and_never_evicts_it() {
    let (p, options) = project("sysmon-safety");
    script(&p, &gpu_stats(8192, 1024, 16384));
    gpu_counter(&p, "model", 4096);
    let m = with_monitor(
        &p,
        ManagerOptions {
            scheduling: Policy::Safety,
            ..options
        },
    );
    let id = m.load(&LoadSpec::new("model").lazy()).unwrap();
    let err = m.execute(&id, vec![], vec![]).unwrap_err();
    let ManagerError::Blocked {
        blocked, evicted, ..
    } = &err
    else {
        panic!("expected the safety policy to block it: {err}")
    };
    assert_eq!(
        (blocked.resource, blocked.needed_mb, blocked.available_mb),
        ("gpu_vram_mb", 4096.0, 1024.0)
    );
    assert!(
        evicted.is_empty(),
        "the monitor is not evicted: {evicted:?}"
    );
    assert_eq!(m.state("sysmon").unwrap().as_str(), "ready");
}

#[test]
fn the_monitor_keeps_its_worker_when_a_worker_slot_is_needed() {
    let (p, options) = project("sysmon-slot");
    script(&p, &gpu_stats(8192, 8192, 16384));
    p.manifest("a", "demo", "CounterPlugin");
    p.manifest("b", "demo", "CounterPlugin");
    let m = with_monitor(
        &p,
        ManagerOptions {
            max_workers: Some(2),
            ..options
        },
    );
    let a = m.load(&LoadSpec::new("a")).unwrap();
    m.execute(&a, vec![], vec![]).unwrap();
    let b = m.load(&LoadSpec::new("b").lazy()).unwrap();
    m.execute(&b, vec![], vec![]).unwrap();
    assert_eq!(m.state(&a).unwrap().as_str(), "stopped", "a made room");
    assert_eq!(m.state("sysmon").unwrap().as_str(), "ready");
}

#[test]
fn the_monitor_named_in_the_options_is_registered_as_it_loads() {
    let (p, options) = project("sysmon-option");
    script(&p, &gpu_stats(8192, 4096, 16384));
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            system_monitor: Some("sysmon".into()),
            ..options
        },
    );
    assert_eq!(m.system_monitor(), None);
    m.load(&LoadSpec::new("counter")).unwrap();
    assert_eq!(m.system_monitor(), None, "only the one named");
    m.load(&LoadSpec::new("sysmon").lazy()).unwrap();
    assert_eq!(m.system_monitor().as_deref(), Some("sysmon"));
    assert!(m.worker("sysmon").is_some(), "a monitor runs, lazy or not");
    assert_eq!(m.resources().devices[0].free_bytes, 4096 * MB);
}

#[test]
fn an_instance_that_does_not_answer_the_contract_is_refused_with_what_it_answered() {
    let (p, options) = project("sysmon-refused");
    let m = Manager::new(p.config(), options);
    m.load(&LoadSpec::new("counter")).unwrap();
    let err = m.register_system_monitor("counter").unwrap_err();
    assert!(matches!(err, ManagerError::NotAMonitor { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("instance counter of plugin counter cannot be the system monitor")
            && text.contains("not a monitor plugin"),
        "{text}"
    );
    assert!(err.hint().is_some());

    m.load(&LoadSpec::new("sysmon")).unwrap();
    script(&p, &json!({"raw": "all fine"}));
    let err = m.register_system_monitor("sysmon").unwrap_err();
    assert!(err.to_string().contains("returned a string"), "{err}");
    assert_eq!(m.system_monitor(), None);

    let err = m.register_system_monitor("nothing-here").unwrap_err();
    assert!(matches!(err, ManagerError::NotLoaded { .. }), "{err}");
}
