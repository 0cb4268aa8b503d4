//! The NVML code against a real GPU, where `nvidia-smi` works: the devices,
//! their names and totals as the driver's own tool reports them. Elsewhere each
//! test says why it did not run and checks nothing else.

use std::process::Command;

use cjm_sched::gpu::{Gpus, Nvml};

/// `nvidia-smi`'s `index, name, memory.total [MiB], memory.used [MiB]` per
/// device, or why it cannot be had here.
fn nvidia_smi() -> Result<Vec<(u32, String, u64, u64)>, String> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total,memory.used",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .map_err(|e| format!("no nvidia-smi here ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "nvidia-smi fails here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            match (n(0), f.get(1), n(2), n(3)) {
                (Some(i), Some(name), Some(total), Some(used)) => {
                    Ok((i as u32, (*name).to_owned(), total, used))
                }
                _ => Err(format!("cannot read nvidia-smi's line {l:?}")),
            }
        })
        .collect()
}

#[test]
fn where_nvidia_smi_works_nvml_sees_the_same_devices_names_and_totals() {
    let smi = match nvidia_smi() {
        Ok(devices) if !devices.is_empty() => devices,
        Ok(_) => return eprintln!("skipped: nvidia-smi lists no GPU here"),
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let nvml = Nvml::load().expect("nvidia-smi works, so NVML must load");
    let sample = nvml.sample().unwrap();
    assert_eq!(sample.devices.len(), smi.len(), "{sample:?} vs {smi:?}");
    for (d, (index, name, total_mib, used_mib)) in sample.devices.iter().zip(&smi) {
        assert_eq!(d.index, *index);
        assert_eq!(&d.name, name);
        assert_eq!(d.total_bytes >> 20, *total_mib, "{d:?}");
        // Used memory moves; within a tenth of the card of what nvidia-smi read.
        let used = (d.total_bytes - d.free_bytes) >> 20;
        assert!(
            used.abs_diff(*used_mib) <= total_mib / 10,
            "NVML says {used} MiB used, nvidia-smi {used_mib} MiB: {d:?}"
        );
        assert!(d.utilization_percent.is_none_or(|u| u <= 100), "{d:?}");
    }
    // Detection picks NVML where a driver works and no fake is set.
    if std::env::var_os(cjm_sched::gpu::FAKE_GPU_VAR).is_none() {
        let gpus = Gpus::detect();
        assert!(matches!(gpus, Gpus::Nvml(_)), "{}", gpus.describe());
    }
}
