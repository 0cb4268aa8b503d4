//! The manager on a real GPU, where `nvidia-smi` works: a plugin that asks for
//! GPU memory is pinned to one of the devices NVML reports. Elsewhere the test
//! says why it did not run.

use cjm_manager::{LoadSpec, Manager, ManagerOptions};
use cjm_proto::Value;
use serde_json::json;

use crate::support::Project;

#[test]
fn where_nvidia_smi_works_a_gpu_plugin_is_pinned_to_a_real_device() {
    let works = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !works || std::env::var_os(cjm_sched::gpu::FAKE_GPU_VAR).is_some() {
        return eprintln!("skipped: no working nvidia-smi here (or a fake GPU is set)");
    }
    let p = Project::new("real-gpu");
    p.manifest("on-gpu", "demo", "CounterPlugin");
    p.declare(
        "on-gpu",
        json!({"requires_gpu": true, "min_gpu_vram_mb": 64}),
    );
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            gpus: None,
            ..p.options()
        },
    );
    let seen = m.refresh_resources();
    assert!(seen.gpu_source.starts_with("NVML"), "{}", seen.gpu_source);
    let id = m.load(&LoadSpec::new("on-gpu")).unwrap();
    let out = m
        .execute(&id, vec![], vec![("action".into(), Value::from("cuda"))])
        .unwrap()
        .to_json();
    let device: u32 = out["device"].as_str().unwrap().parse().unwrap();
    assert!(
        seen.devices.iter().any(|d| d.index == device),
        "pinned to {device}, devices {:?}",
        seen.devices
    );
}
