//! Admission on real workers and the scripted fake GPU: placement by free memory,
//! eviction of idle workers, calls that wait with their reason, calls that can
//! never fit, memory that comes back late, and the reference's policies.

use std::sync::Arc;
use std::time::Duration;

use cjm_manager::{LoadSpec, Manager, ManagerError, ManagerEvent, ManagerOptions, SystemClock};
use cjm_proto::Value;
use cjm_sched::gpu::{FakeDevice, FakeGpu};
use cjm_sched::{Gpus, Policy};
use serde_json::json;

use crate::support::{Project, eventually, map, wait_for};

/// A project with one fake GPU per entry of `devices_mb`, and the manager's
/// options on it.
pub(crate) fn on_fake_gpus(
    name: &str,
    devices_mb: &[u64],
    release: Duration,
) -> (Project, ManagerOptions) {
    let p = Project::new(name);
    let devices: Vec<FakeDevice> = devices_mb
        .iter()
        .map(|mb| FakeDevice::new("Fake GPU", *mb))
        .collect();
    let fake = FakeGpu::create(&p.dir.join("gpu"), &devices, release).unwrap();
    // The real clock: whether a sample was taken after a call ended or a worker
    // was evicted is read on it.
    let options = ManagerOptions {
        gpus: Some(Arc::new(Gpus::Fake(fake))),
        clock: SystemClock::shared(),
        ..p.options()
    };
    (p, options)
}

/// A GPU plugin declaring `mb` of GPU memory, whose worker holds as much.
pub(crate) fn gpu_plugin(p: &Project, name: &str, mb: u64) {
    p.gpu_manifest(name, json!({"requires_gpu": true, "min_gpu_vram_mb": mb}));
}

pub(crate) fn load(m: &Manager, name: &str, vram_mb: u64) -> String {
    m.load(&LoadSpec::new(name).config(map(json!({ "vram_mb": vram_mb }))))
        .unwrap()
}

/// The `CUDA_VISIBLE_DEVICES` a call on `id` ran under.
fn device_of(m: &Manager, id: &str) -> String {
    let out = m.execute(id, vec![], vec![]).unwrap().to_json();
    out["device"].as_str().unwrap_or("unset").to_owned()
}

pub(crate) fn hold() -> Vec<(String, Value)> {
    vec![("hold".into(), Value::Bool(true))]
}

#[test]
fn workers_are_pinned_to_the_device_with_the_most_free_memory() {
    let (p, options) = on_fake_gpus("sched-pin", &[8192, 8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 6144);
    gpu_plugin(&p, "gpu-b", 6144);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 6144);
    let first = device_of(&m, &a);
    let b = load(&m, "gpu-b", 6144);
    let second = device_of(&m, &b);
    let mut both = [first.clone(), second.clone()];
    both.sort();
    assert_eq!(both, ["0", "1"], "one per device: {first}, {second}");
    assert_eq!(
        m.state(&a).unwrap().as_str(),
        "ready",
        "nothing was evicted"
    );
}

#[test]
fn an_idle_worker_is_evicted_for_a_call_that_does_not_fit_beside_it() {
    let (p, options) = on_fake_gpus("sched-evict", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 6144);
    gpu_plugin(&p, "gpu-b", 4096);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 6144);
    assert_eq!(device_of(&m, &a), "0");
    let mut events = m.subscribe();
    let b = m
        .load(
            &LoadSpec::new("gpu-b")
                .lazy()
                .config(map(json!({"vram_mb": 4096}))),
        )
        .unwrap();
    let out = m.execute(&b, vec![], vec![]).unwrap().to_json();
    assert_eq!(out["held_mb"], json!(4096.0));
    wait_for(&mut events, |e| {
        matches!(e, ManagerEvent::Evicted { instance_id, for_instance, .. }
            if instance_id == &a && for_instance == &b)
    });
    assert_eq!(m.state(&a).unwrap().as_str(), "stopped");
    assert!(m.worker(&a).is_none(), "gpu-a's worker was stopped");
}

#[test]
fn a_call_that_could_never_fit_fails_at_once_naming_the_numbers_and_evicts_nothing() {
    let (p, options) = on_fake_gpus("sched-never", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 2048);
    gpu_plugin(&p, "gpu-huge", 12288);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 2048);
    m.execute(&a, vec![], vec![]).unwrap();
    let huge = m.load(&LoadSpec::new("gpu-huge").lazy()).unwrap();
    let err = m.execute(&huge, vec![], vec![]).unwrap_err();
    assert!(matches!(err, ManagerError::Never { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin gpu-huge: gpu-huge can never run here: it needs 12.0 GB of GPU memory and the \
         most any GPU could give is 8.0 GB (GPU 0, Fake GPU, 8.0 GB in all); lower its \
         footprint (resources.min_gpu_vram_mb, or a smaller model in its config) or use a \
         larger GPU"
    );
    assert_eq!(
        m.state(&a).unwrap().as_str(),
        "ready",
        "nothing was evicted"
    );
}

#[test]
fn a_call_waits_with_its_reason_while_the_memory_is_busy_and_runs_once_it_is_free() {
    let (p, options) = on_fake_gpus("sched-wait", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 6144);
    gpu_plugin(&p, "gpu-b", 4096);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 6144);
    let b = m
        .load(
            &LoadSpec::new("gpu-b")
                .lazy()
                .config(map(json!({"vram_mb": 4096}))),
        )
        .unwrap();
    let mut events = m.subscribe();
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| m.execute(&a, vec![], hold()));
        eventually("gpu-a's call to hold", || {
            p.hooks().iter().any(|l| l.ends_with("holding"))
        });
        let waiting = scope.spawn(|| m.execute(&b, vec![], vec![]));
        let seen = wait_for(&mut events, |e| matches!(e, ManagerEvent::Waiting { .. }));
        let Some(ManagerEvent::Waiting {
            instance_id,
            reason,
        }) = seen.last()
        else {
            unreachable!()
        };
        assert_eq!(instance_id, &b);
        assert_eq!(
            reason,
            "gpu-b waits for memory: it needs 4.0 GB of GPU memory on GPU 0 (Fake GPU) and \
             2.0 GB is free there; gpu-a (running a call, 6.0 GB) holds the rest; it starts \
             when a call of gpu-a finishes"
        );
        let seen_now = m.resources();
        assert_eq!(seen_now.policy, "fit");
        assert_eq!(seen_now.waiting.len(), 1, "{:?}", seen_now.waiting);
        assert_eq!(
            (
                &seen_now.waiting[0].instance_id,
                &seen_now.waiting[0].reason
            ),
            (&b, reason)
        );
        assert_eq!(seen_now.devices.len(), 1);
        assert_eq!(seen_now.devices[0].total_bytes, 8192 << 20);
        let a_now = seen_now.instances.iter().find(|i| i.id == a).unwrap();
        assert_eq!(
            (a_now.state.as_str(), a_now.device, a_now.running),
            ("busy", Some(0), 1)
        );
        assert_eq!(
            a_now.expected.to_string(),
            "0 MB RAM, 6.0 GB GPU (declared)"
        );
        fs_err::write(p.marker("release"), b"").unwrap();
        busy.join().unwrap().unwrap();
        let out = waiting.join().unwrap().unwrap().to_json();
        assert_eq!(out["held_mb"], json!(4096.0));
    });
    assert!(m.worker(&a).is_none(), "gpu-a was evicted once idle");
    assert!(m.resources().waiting.is_empty(), "no call waits any more");
}

#[test]
fn a_call_that_waits_past_the_admission_timeout_fails_with_the_reason() {
    let (p, options) = on_fake_gpus("sched-timeout", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 6144);
    gpu_plugin(&p, "gpu-b", 4096);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            admission_timeout: Duration::from_millis(200),
            ..options
        },
    );
    let a = load(&m, "gpu-a", 6144);
    let b = m.load(&LoadSpec::new("gpu-b").lazy()).unwrap();
    std::thread::scope(|s| {
        let busy = s.spawn(|| m.execute(&a, vec![], hold()));
        eventually("gpu-a's call to hold", || {
            p.hooks().iter().any(|l| l.ends_with("holding"))
        });
        let err = m.execute(&b, vec![], vec![]).unwrap_err();
        fs_err::write(p.marker("release"), b"").unwrap();
        busy.join().unwrap().unwrap();
        assert!(matches!(err, ManagerError::Waited { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("a call to instance gpu-b of plugin gpu-b gave up after waiting "),
            "{text}"
        );
        assert!(
            text.ends_with(
                "gpu-b waits for memory: it needs 4.0 GB of GPU memory on GPU 0 (Fake GPU) and \
                 2.0 GB is free there; gpu-a (running a call, 6.0 GB) holds the rest; it \
                 starts when a call of gpu-a finishes"
            ),
            "{text}"
        );
        assert!(err.hint().unwrap().contains("cjm-ctl resources"));
    });
}

#[test]
fn memory_that_comes_back_late_after_an_eviction_is_waited_for_by_measuring_it() {
    // The fake driver frees an exited process's memory 300 ms after it is seen gone.
    let (p, options) = on_fake_gpus("sched-late", &[8192], Duration::from_millis(300));
    gpu_plugin(&p, "gpu-a", 6144);
    gpu_plugin(&p, "gpu-b", 4096);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 6144);
    m.execute(&a, vec![], vec![]).unwrap();
    let b = m
        .load(
            &LoadSpec::new("gpu-b")
                .lazy()
                .config(map(json!({"vram_mb": 4096}))),
        )
        .unwrap();
    let mut events = m.subscribe();
    // Had b's worker started before the memory came back, its allocation of
    // 4096 MB would have failed on the fake device.
    let out = m.execute(&b, vec![], vec![]).unwrap().to_json();
    assert_eq!(out["held_mb"], json!(4096.0));
    let seen = wait_for(
        &mut events,
        |e| matches!(e, ManagerEvent::State { instance_id, to, .. } if instance_id == &b && to.as_str() == "ready"),
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ManagerEvent::Waiting { reason, .. }
            if reason.contains("it starts when the memory freed by evicting gpu-a comes back"))),
        "b waited for the memory, saying so: {seen:#?}"
    );
}

#[test]
fn without_a_gpu_a_plugin_that_asks_for_one_runs_as_the_reference_runs_it() {
    let p = Project::new("sched-nogpu");
    gpu_plugin(&p, "gpu-a", 6144);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            gpus: Some(Arc::new(Gpus::None {
                reason: "no NVIDIA driver (libnvidia-ml.so.1 not found)".into(),
            })),
            ..p.options()
        },
    );
    let a = m.load(&LoadSpec::new("gpu-a").lazy()).unwrap();
    // The plugin itself needs the fake to "allocate"; without one it only runs.
    let err = m.execute(&a, vec![], vec![]).unwrap_err().to_string();
    assert!(
        err.contains("CJM_FAKE_GPU is not set"),
        "admitted and started; the plugin's own error: {err}"
    );
}

#[test]
fn the_safety_policy_refuses_what_was_declared_beyond_free_ram_after_evicting_idle_ones() {
    let p = Project::new("sched-safety");
    p.gpu_manifest("ram-hog", json!({"min_system_ram_mb": 100_000_000}));
    p.manifest("counter", "demo", "CounterPlugin");
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            scheduling: Policy::Safety,
            ..p.options()
        },
    );
    let counter = m.load(&LoadSpec::new("counter")).unwrap();
    let hog = m.load(&LoadSpec::new("ram-hog").lazy()).unwrap();
    let err = m.execute(&hog, vec![], vec![]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "the safety scheduler blocked the call to instance ram-hog: ram-hog needs \
             100000000MB RAM and "
        ),
        "{text}"
    );
    assert!(
        text.ends_with("MB is available (after evicting counter)"),
        "{text}"
    );
    assert!(m.worker(&counter).is_none(), "the idle counter was evicted");
}

#[test]
fn the_permissive_policy_admits_everything() {
    let (p, options) = on_fake_gpus("sched-permissive", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-huge", 12288);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            scheduling: Policy::Permissive,
            ..options
        },
    );
    let huge = m.load(&LoadSpec::new("gpu-huge").lazy()).unwrap();
    let out = m.execute(&huge, vec![], vec![]).unwrap().to_json();
    assert_eq!(
        out["held_mb"],
        json!(0.0),
        "admitted, though it declares 12 GB of 8"
    );
}

#[test]
fn a_call_that_runs_out_of_gpu_memory_evicts_an_idle_worker_restarts_and_runs_again() {
    let (p, options) = on_fake_gpus("sched-oom", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 2048);
    gpu_plugin(&p, "gpu-b", 2048);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 2048);
    let b = load(&m, "gpu-b", 2048);
    let first_pid = m.worker(&b).unwrap().pid();
    let fake = FakeGpu::new(p.dir.join("gpu"));
    fake.script_oom(1).unwrap();
    let mut events = m.subscribe();
    let out = m
        .execute(&b, vec![], vec![("extra_vram_mb".into(), Value::Int(1024))])
        .unwrap()
        .to_json();
    assert_eq!(
        fake.scripted_ooms(),
        0,
        "the first try met the scripted out-of-memory"
    );
    assert_ne!(
        out["pid"],
        json!(first_pid),
        "the retry ran in a fresh worker"
    );
    let seen = wait_for(
        &mut events,
        |e| matches!(e, ManagerEvent::Evicted { instance_id, .. } if instance_id == &a),
    );
    let oom = seen
        .iter()
        .find_map(|e| match e {
            ManagerEvent::OutOfMemory {
                instance_id,
                attempt,
                error,
            } => Some((instance_id.clone(), *attempt, error.clone())),
            _ => None,
        })
        .expect("the out-of-memory is reported");
    assert_eq!((oom.0.as_str(), oom.1), (b.as_str(), 1));
    assert!(
        oom.2
            .contains("cannot allocate 1024 MB (a scripted out-of-memory"),
        "{}",
        oom.2
    );
    assert!(
        m.worker(&a).is_none(),
        "the idle gpu-a was evicted to make room"
    );
}

#[test]
fn a_call_that_runs_out_of_memory_on_every_try_says_why_it_gave_up() {
    let (p, options) = on_fake_gpus("sched-oom-twice", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-b", 2048);
    let m = Manager::new(p.config(), options);
    let b = load(&m, "gpu-b", 2048);
    let fake = FakeGpu::new(p.dir.join("gpu"));
    fake.script_oom(2).unwrap();
    let err = m
        .execute(&b, vec![], vec![("extra_vram_mb".into(), Value::Int(1024))])
        .unwrap_err();
    assert!(
        matches!(err, ManagerError::OutOfMemory { tries: 2, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "instance gpu-b of plugin gpu-b ran out of memory on all 2 tries (an idle worker \
             evicted and its own restarted between them): "
        ),
        "{text}"
    );
    // The second try met the second scripted out-of-memory as its fresh worker
    // started: its initialize allocates the model's 2048 MB.
    assert!(
        text.contains("cannot allocate 2048 MB (a scripted out-of-memory"),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("resources.min_gpu_vram_mb"));
    assert_eq!(fake.scripted_ooms(), 0);
    let out = m.execute(&b, vec![], vec![]).unwrap().to_json();
    assert_eq!(
        out["held_mb"],
        json!(2048.0),
        "the instance works again afterwards"
    );
}

#[test]
fn two_calls_admitted_at_once_never_share_the_same_free_memory() {
    // Without retries, an over-commit would show: the second model's allocation
    // fails on the fake device.
    let (p, options) = on_fake_gpus("sched-race", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 5120);
    gpu_plugin(&p, "gpu-b", 5120);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            oom_retries: 0,
            ..options
        },
    );
    for (name, mb) in [("gpu-a", 5120), ("gpu-b", 5120)] {
        m.load(
            &LoadSpec::new(name)
                .lazy()
                .config(map(json!({ "vram_mb": mb }))),
        )
        .unwrap();
    }
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let calls: Vec<_> = ["gpu-a", "gpu-b"]
            .into_iter()
            .map(|id| {
                let (m, barrier) = (&m, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    m.execute(id, vec![], vec![])
                })
            })
            .collect();
        for c in calls {
            let out = c.join().unwrap().unwrap().to_json();
            assert_eq!(out["held_mb"], json!(5120.0));
        }
    });
    let running: Vec<String> = m
        .instances(None)
        .into_iter()
        .filter(|i| i.pid.is_some())
        .map(|i| i.id)
        .collect();
    assert_eq!(running.len(), 1, "one model fits at a time: {running:?}");
}

#[test]
fn calls_hammering_instances_that_are_being_evicted_all_complete() {
    // Two models that cannot share the card, called from 8 threads at once: each
    // call evicts the other model or waits for it, and none deadlocks or fails.
    let (p, options) = on_fake_gpus("sched-hammer", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 5120);
    gpu_plugin(&p, "gpu-b", 5120);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            oom_retries: 0,
            admission_timeout: Duration::from_mins(1),
            ..options
        },
    );
    for (name, mb) in [("gpu-a", 5120), ("gpu-b", 5120)] {
        m.load(
            &LoadSpec::new(name)
                .lazy()
                .config(map(json!({ "vram_mb": mb }))),
        )
        .unwrap();
    }
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let m = &m;
                scope.spawn(move || {
                    for i in 0..6 {
                        let id = if (t + i) % 2 == 0 { "gpu-a" } else { "gpu-b" };
                        let out = m.execute(id, vec![], vec![]).unwrap().to_json();
                        assert_eq!(out["held_mb"], json!(5120.0), "{id}: {out}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    assert!(m.resources().waiting.is_empty());
}

#[test]
fn each_call_is_recorded_in_the_reference_store_and_becomes_the_expected_footprint() {
    let (p, options) = on_fake_gpus("sched-record", &[8192], Duration::ZERO);
    // Declared 1 GB; its worker really holds 1.5 GB.
    gpu_plugin(&p, "gpu-a", 1024);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 1536);
    eventually("a sample that shows gpu-a's 1.5 GB", || {
        m.refresh_resources()
            .instances
            .iter()
            .any(|i| i.id == a && i.held.vram_bytes == 1536 << 20)
    });
    for _ in 0..5 {
        m.execute(&a, vec![], vec![]).unwrap();
    }
    let expected = || {
        m.resources()
            .instances
            .into_iter()
            .find(|i| i.id == a)
            .unwrap()
            .expected
    };
    eventually("the five calls recorded", || {
        matches!(
            expected().basis,
            cjm_sched::Basis::Measured { samples: 5, .. }
        )
    });
    let e = expected();
    assert_eq!(
        e.footprint.vram_bytes,
        cjm_sched::amount::from_mb(1536.0 * 1.1)
    );
    assert!(
        e.footprint.ram_bytes > 1 << 20,
        "a Python worker's peak RSS: {e}"
    );
    assert!(
        e.to_string().ends_with("(measured over 5 calls, +10 %)"),
        "{e}"
    );

    // The reference's own store reads the record the manager wrote.
    let hash = cjm_stores::compute_config_hash(Some(&map(json!({"vram_mb": 1536, "ram_mb": 0}))));
    let script = format!(
        "from cjm_plugin_system.core.empirical_store import LocalEmpiricalResourceStore as S\n\
         r = S({db:?}).get_record('gpu-a', {hash:?})\n\
         print(r.sample_count, r.success_rate, r.gpu_memory_mb_peak_max, r.memory_mb_peak_max > 1)",
        db = p
            .dir
            .join("data/empirical_resources.db")
            .display()
            .to_string(),
    );
    let out = std::process::Command::new(crate::support::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "5 1.0 1536.0 True",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A manifest whose `resources` amounts are not numbers of MB is refused at
/// load, naming the key and the value; an absurdly large one loads and is
/// refused at its first call with the numbers, as any call that cannot fit.
#[test]
fn declared_amounts_that_are_not_numbers_of_mb_are_refused_with_the_key_and_value() {
    let (p, options) = on_fake_gpus("sched-hostile", &[8192], Duration::ZERO);
    let cases = [
        (
            json!({"min_system_ram_mb": "lots"}),
            "min_system_ram_mb",
            "\"lots\"",
        ),
        (json!({"min_gpu_vram_mb": -5}), "min_gpu_vram_mb", "-5"),
        (json!({"max_system_ram_mb": 0}), "max_system_ram_mb", "0"),
        (
            json!({"min_system_ram_mb": [1]}),
            "min_system_ram_mb",
            "[1]",
        ),
    ];
    for (i, (block, ..)) in cases.iter().enumerate() {
        let name = format!("hostile-{i}");
        p.manifest(&name, "demo", "CounterPlugin");
        p.declare(&name, block.clone());
    }
    p.manifest("huge", "demo", "CounterPlugin");
    p.declare("huge", json!({"min_system_ram_mb": 1e300}));
    let m = Manager::new(p.config(), options);
    for (i, (_, key, shown)) in cases.into_iter().enumerate() {
        let name = format!("hostile-{i}");
        let err = m.load(&LoadSpec::new(name.as_str()).lazy()).unwrap_err();
        assert!(matches!(err, ManagerError::BadResources { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "plugin {name} declares resources.{key} = {shown} in its manifest"
            )),
            "{text}"
        );
        assert!(
            err.hint()
                .unwrap()
                .contains(&format!("fix resources.{key}"))
        );
        assert!(m.instance_ids().is_empty(), "nothing was loaded");
    }
    let huge = m.load(&LoadSpec::new("huge").lazy()).unwrap();
    let err = m.execute(&huge, vec![], vec![]).unwrap_err();
    assert!(matches!(err, ManagerError::Never { .. }), "{err:?}");
    assert!(err.to_string().contains("huge can never run here"), "{err}");
}

/// The reference's `queue` policy on real workers: a call whose declared GPU
/// memory is not free checks again every poll interval and runs once a call
/// beside it frees the memory, evicting nothing (its worker initializes on the
/// fake GPU, which would refuse it had it started early).
#[test]
fn the_queue_policy_checks_again_until_the_memory_is_free_and_then_runs() {
    let (p, options) = on_fake_gpus("sched-queue", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 0);
    gpu_plugin(&p, "gpu-b", 4096);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            scheduling: Policy::Queue {
                timeout: Duration::from_secs(30),
                poll_interval: Duration::from_millis(20),
            },
            ..options
        },
    );
    let a = load(&m, "gpu-a", 0);
    let b = m
        .load(
            &LoadSpec::new("gpu-b")
                .lazy()
                .config(map(json!({"vram_mb": 4096}))),
        )
        .unwrap();
    std::thread::scope(|scope| {
        let mut kwargs = hold();
        kwargs.push(("extra_vram_mb".into(), Value::from(6144i64)));
        let busy = scope.spawn(|| m.execute(&a, vec![], kwargs));
        eventually("gpu-a's call to hold 6 GB", || {
            p.hooks().iter().any(|l| l.ends_with("holding"))
        });
        // The policy reads the latest sample: wait until one shows the hold,
        // or gpu-b's call could be admitted on a sample taken before it.
        eventually("a sample that shows the 6 GB held", || {
            m.refresh_resources()
                .devices
                .iter()
                .any(|d| d.free_bytes <= 2048 << 20)
        });
        let mut events = m.subscribe();
        let queued = scope.spawn(|| m.execute(&b, vec![], vec![]));
        let seen = wait_for(&mut events, |e| matches!(e, ManagerEvent::Waiting { .. }));
        let Some(ManagerEvent::Waiting { reason, .. }) = seen.last() else {
            unreachable!()
        };
        assert!(
            reason.starts_with("gpu-b waits (queue policy): gpu-b needs 4096MB VRAM and "),
            "{reason}"
        );
        assert_eq!(m.resources().waiting.len(), 1);
        fs_err::write(p.marker("release"), b"").unwrap();
        busy.join().unwrap().unwrap();
        let out = queued.join().unwrap().unwrap().to_json();
        assert_eq!(out["held_mb"], json!(4096.0), "{out}");
    });
    assert!(
        m.worker(&a).is_some(),
        "the queue policy waited; nothing was evicted"
    );
    assert!(m.resources().waiting.is_empty());
}

/// Past its timeout, the `queue` policy evicts idle instances, least recently
/// used first, before the block is final, as the reference's does.
#[test]
fn past_its_timeout_the_queue_policy_evicts_an_idle_instance_and_runs() {
    let (p, options) = on_fake_gpus("sched-queue-evict", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 6144);
    gpu_plugin(&p, "gpu-b", 4096);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            scheduling: Policy::Queue {
                timeout: Duration::from_millis(100),
                poll_interval: Duration::from_millis(20),
            },
            ..options
        },
    );
    let a = load(&m, "gpu-a", 6144);
    m.execute(&a, vec![], vec![]).unwrap();
    let b = m
        .load(
            &LoadSpec::new("gpu-b")
                .lazy()
                .config(map(json!({"vram_mb": 4096}))),
        )
        .unwrap();
    let out = m.execute(&b, vec![], vec![]).unwrap().to_json();
    assert_eq!(out["held_mb"], json!(4096.0), "{out}");
    assert!(m.worker(&a).is_none(), "the idle gpu-a was evicted");
}

/// A recorded call's CPU percent is its worker's since the previous batch, as
/// the reference's worker reports it: a call that keeps a core busy for 0.3 s
/// raises the record's mean above zero.
#[test]
fn a_busy_call_is_recorded_with_the_cpu_percent_of_its_worker() {
    let (p, options) = on_fake_gpus("sched-cpu", &[8192], Duration::ZERO);
    let m = Manager::new(p.config(), options);
    let id = m.load(&LoadSpec::new("counter")).unwrap();
    let spin = || {
        m.execute(
            &id,
            vec![],
            vec![
                ("action".into(), Value::from("spin")),
                ("seconds".into(), Value::from(0.3)),
            ],
        )
        .unwrap();
    };
    let recorded = |n: i64| {
        let e = m
            .resources()
            .instances
            .into_iter()
            .find(|i| i.id == id)
            .unwrap()
            .expected;
        matches!(e.basis, cjm_sched::Basis::Measured { samples, .. } if samples == n)
    };
    spin();
    eventually("the first call recorded", || recorded(1));
    spin();
    eventually("the second call recorded", || recorded(2));
    let script = format!(
        "import sqlite3\n\
         c = sqlite3.connect({db:?})\n\
         print(c.execute(\"SELECT cpu_percent_mean FROM empirical_resources WHERE instance_id = 'counter'\").fetchone()[0])",
        db = p
            .dir
            .join("data/empirical_resources.db")
            .display()
            .to_string(),
    );
    let out = std::process::Command::new(crate::support::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    let mean: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    // The first batch has no earlier reading (0 %); the second saw 0.3 s of CPU
    // within well under 3 s.
    assert!(mean > 5.0 && mean <= 100.0, "cpu_percent_mean {mean}");
}
