//! A scripted GPU for tests and the demo, shared between the host and its
//! workers through a folder, so that a plugin in another process can "allocate"
//! on it and the host sees the memory go, as it would with NVML:
//!
//! ```text
//! <dir>/devices.json     {"devices": [{"name": "Fake GPU", "total_mb": 8192}],
//!                         "release_ms": 0}
//! <dir>/usage/<pid>.json {"0": 1536.0}    MB that process holds, per device index
//! <dir>/oom/<token>      one scripted out-of-memory per file: the next allocation
//!                        that removes it fails as if the device were full
//! ```
//!
//! A plugin writes its own `usage/<pid>.json` (atomically: write, then rename),
//! mapping the devices it sees through `CUDA_VISIBLE_DEVICES` as CUDA would. The
//! memory of a process that has exited stays held for `release_ms` after the host
//! first sees it gone (a driver that frees late), then comes back and its file
//! is removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{GpuDevice, GpuError, GpuProcess, GpuSample};
use crate::amount::{from_mb, to_mb};

/// The variable naming the fake GPU's folder; set, it replaces NVML.
pub const FAKE_GPU_VAR: &str = "CJM_FAKE_GPU";

/// One fake device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeDevice {
    /// Its model name.
    pub name: String,
    /// Its memory, in MB.
    pub total_mb: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Devices {
    devices: Vec<FakeDevice>,
    #[serde(default)]
    release_ms: u64,
}

/// The fake GPU in one folder.
#[derive(Debug)]
pub struct FakeGpu {
    dir: PathBuf,
    /// When each exited process was first seen gone.
    gone_since: Mutex<HashMap<u32, Instant>>,
}

impl FakeGpu {
    /// The fake in `dir` (read at each sample).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            gone_since: Mutex::new(HashMap::new()),
        }
    }

    /// Writes a fake with these devices into `dir`, holding a dead process's
    /// memory for `release` after it is seen gone.
    pub fn create(dir: &Path, devices: &[FakeDevice], release: Duration) -> std::io::Result<Self> {
        fs_err::create_dir_all(dir.join("usage"))?;
        fs_err::create_dir_all(dir.join("oom"))?;
        let spec = Devices {
            devices: devices.to_vec(),
            release_ms: release.as_millis() as u64,
        };
        write_atomically(
            &dir.join("devices.json"),
            &serde_json::to_vec_pretty(&spec).map_err(std::io::Error::other)?,
        )?;
        Ok(Self::new(dir.to_owned()))
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that `pid` holds `bytes` on `device` (what a plugin's helper does
    /// from inside the worker).
    pub fn set_usage(&self, pid: u32, device: u32, bytes: u64) -> std::io::Result<()> {
        let file = self.dir.join("usage").join(format!("{pid}.json"));
        let mut usage: HashMap<String, f64> = fs_err::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        usage.insert(device.to_string(), to_mb(bytes));
        write_atomically(
            &file,
            &serde_json::to_vec(&usage).map_err(std::io::Error::other)?,
        )
    }

    /// Scripts `count` more out-of-memory failures for the next allocations.
    pub fn script_oom(&self, count: usize) -> std::io::Result<()> {
        let oom = self.dir.join("oom");
        fs_err::create_dir_all(&oom)?;
        let start = fs_err::read_dir(&oom)?.count();
        for n in 0..count {
            fs_err::write(
                oom.join(format!("{}-{}", std::process::id(), start + n)),
                b"",
            )?;
        }
        Ok(())
    }

    /// The scripted out-of-memory failures not yet used.
    pub fn scripted_ooms(&self) -> usize {
        fs_err::read_dir(self.dir.join("oom")).map_or(0, Iterator::count)
    }

    /// The devices and what each live (or lately dead) process holds.
    pub fn sample(&self) -> Result<GpuSample, GpuError> {
        let spec_file = self.dir.join("devices.json");
        let spec: Devices = fs_err::read(&spec_file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|reason| GpuError {
                what: format!("the fake GPU's {}", spec_file.display()),
                reason,
            })?;
        let release = Duration::from_millis(spec.release_ms);
        let mut sample = GpuSample {
            devices: spec
                .devices
                .iter()
                .enumerate()
                .map(|(index, d)| GpuDevice {
                    index: index as u32,
                    name: d.name.clone(),
                    total_bytes: from_mb(d.total_mb),
                    free_bytes: from_mb(d.total_mb),
                    utilization_percent: None,
                })
                .collect(),
            processes: Vec::new(),
        };
        let mut gone = crate::lock(&self.gone_since);
        for entry in fs_err::read_dir(self.dir.join("usage"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let path = entry.path();
            let Some(pid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let since = *gone.entry(pid).or_insert_with(Instant::now);
                if since.elapsed() >= release {
                    let _ = fs_err::remove_file(&path);
                    gone.remove(&pid);
                    continue;
                }
            }
            let Some(usage) = fs_err::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<HashMap<String, f64>>(&b).ok())
            else {
                continue;
            };
            for (device, mb) in usage {
                let Some(d) = device
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| sample.devices.get_mut(i))
                else {
                    continue;
                };
                let used_bytes = from_mb(mb);
                d.free_bytes = d.free_bytes.saturating_sub(used_bytes);
                sample.processes.push(GpuProcess {
                    device: d.index,
                    pid,
                    used_bytes,
                });
            }
        }
        sample.processes.sort_by_key(|p| (p.device, p.pid));
        Ok(sample)
    }
}

/// Writes `bytes` to `file` through a temporary file and a rename, so readers
/// see the old content or the new, never half.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    fs_err::write(&tmp, bytes)?;
    fs_err::rename(&tmp, file)
}

impl FakeDevice {
    /// A device called `name` with `total_mb` of memory.
    pub fn new(name: &str, total_mb: u64) -> Self {
        Self {
            name: name.to_owned(),
            total_mb: total_mb as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::MB;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cjm-fake-gpu-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_live_process_holds_what_it_set_and_the_rest_is_free() {
        let dir = scratch("live");
        let gpu = FakeGpu::create(
            &dir,
            &[
                FakeDevice::new("Fake A", 8192),
                FakeDevice::new("Fake B", 4096),
            ],
            Duration::ZERO,
        )
        .expect("create");
        gpu.set_usage(std::process::id(), 1, 1024 * MB)
            .expect("usage");
        let sample = gpu.sample().expect("sample");
        assert_eq!(sample.devices.len(), 2);
        assert_eq!(sample.devices[0].free_bytes, 8192 * MB);
        assert_eq!(sample.devices[1].total_bytes, 4096 * MB);
        assert_eq!(sample.devices[1].free_bytes, 3072 * MB);
        assert_eq!(
            sample.processes,
            vec![GpuProcess {
                device: 1,
                pid: std::process::id(),
                used_bytes: 1024 * MB
            }]
        );
        fs_err::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_dead_process_gives_its_memory_back_and_its_file_goes() {
        let dir = scratch("dead");
        let gpu = FakeGpu::create(&dir, &[FakeDevice::new("Fake", 8192)], Duration::ZERO)
            .expect("create");
        // A pid above the kernel's pid_max is never alive.
        gpu.set_usage(4_999_999, 0, 2048 * MB).expect("usage");
        let sample = gpu.sample().expect("sample");
        assert_eq!(sample.devices[0].free_bytes, 8192 * MB);
        assert!(sample.processes.is_empty());
        assert!(!dir.join("usage/4999999.json").exists());
        fs_err::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_late_release_holds_a_dead_process_memory_for_a_while() {
        let dir = scratch("late");
        let gpu = FakeGpu::create(
            &dir,
            &[FakeDevice::new("Fake", 8192)],
            Duration::from_hours(1),
        )
        .expect("create");
        gpu.set_usage(4_999_998, 0, 2048 * MB).expect("usage");
        assert_eq!(
            gpu.sample().expect("sample").devices[0].free_bytes,
            6144 * MB
        );
        assert_eq!(
            gpu.sample().expect("again").devices[0].free_bytes,
            6144 * MB
        );
        fs_err::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn scripted_ooms_are_counted_and_a_missing_spec_is_a_clear_error() {
        let dir = scratch("oom");
        let gpu = FakeGpu::create(&dir, &[FakeDevice::new("Fake", 1024)], Duration::ZERO)
            .expect("create");
        gpu.script_oom(2).expect("script");
        assert_eq!(gpu.scripted_ooms(), 2);
        fs_err::remove_file(dir.join("devices.json")).expect("remove spec");
        let err = gpu.sample().expect_err("no spec").to_string();
        assert!(err.starts_with("cannot read the fake GPU's "), "{err}");
        assert!(err.contains("devices.json"), "{err}");
        fs_err::remove_dir_all(&dir).expect("clean up");
    }
}
