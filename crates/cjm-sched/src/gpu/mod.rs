//! GPUs: their memory, who uses it and how busy they are, from one of three
//! sources chosen once per process:
//!
//! - a scripted fake ([`FakeGpu`]) when `CJM_FAKE_GPU` names its folder, for tests
//!   and the demo on machines without a GPU;
//! - NVML ([`Nvml`]), loaded at run time from the driver's `libnvidia-ml.so.1`, so
//!   that cjm builds and runs on machines without the driver;
//! - none, with the reason (no driver, no devices), said once and never an error.

mod fake;
mod nvml;

use std::sync::OnceLock;

pub use fake::{FAKE_GPU_VAR, FakeDevice, FakeGpu};
pub use nvml::Nvml;

/// One GPU as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    /// Its index, as `CUDA_VISIBLE_DEVICES` numbers it (NVML's order).
    pub index: u32,
    /// Its model name.
    pub name: String,
    /// Its memory, in bytes.
    pub total_bytes: u64,
    /// Its memory that no one holds, in bytes.
    pub free_bytes: u64,
    /// Percent of the last sample period a kernel ran, where known.
    pub utilization_percent: Option<u32>,
}

/// GPU memory one process holds on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcess {
    /// The device's index.
    pub device: u32,
    /// The process.
    pub pid: u32,
    /// What it holds there, in bytes.
    pub used_bytes: u64,
}

/// One reading of every GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuSample {
    /// The devices, by index.
    pub devices: Vec<GpuDevice>,
    /// Per-process use, where the source reports it.
    pub processes: Vec<GpuProcess>,
}

impl GpuSample {
    /// What the processes in `pids` hold on each device, as (device, bytes).
    pub fn held_by(&self, pids: &[u32]) -> Vec<(u32, u64)> {
        let mut held: Vec<(u32, u64)> = Vec::new();
        for p in self.processes.iter().filter(|p| pids.contains(&p.pid)) {
            match held.iter_mut().find(|(d, _)| *d == p.device) {
                Some((_, bytes)) => *bytes += p.used_bytes,
                None => held.push((p.device, p.used_bytes)),
            }
        }
        held
    }
}

/// A GPU reading that failed on a machine that has GPUs.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what}: {reason}")]
pub struct GpuError {
    /// What was being read ("GPU 1's memory", "the fake GPU's devices.json").
    pub what: String,
    /// Why it failed.
    pub reason: String,
}

/// Where GPU readings come from.
#[derive(Debug)]
pub enum Gpus {
    /// No GPU here, and why.
    None {
        /// Why there are none, in words for `cjm-ctl doctor`.
        reason: String,
    },
    /// The NVIDIA driver, through NVML.
    Nvml(Box<Nvml>),
    /// The scripted fake.
    Fake(FakeGpu),
}

impl Gpus {
    /// The fake where `CJM_FAKE_GPU` is set, else NVML, else none. The outcome is
    /// logged once, at info level.
    pub fn detect() -> Self {
        static SAID: OnceLock<()> = OnceLock::new();
        let gpus = match std::env::var_os(FAKE_GPU_VAR) {
            Some(dir) if !dir.is_empty() => Self::Fake(FakeGpu::new(dir.into())),
            _ => match Nvml::load() {
                Ok(nvml) => Self::Nvml(Box::new(nvml)),
                Err(reason) => Self::None { reason },
            },
        };
        SAID.get_or_init(|| tracing::info!("GPUs: {}", gpus.describe()));
        gpus
    }

    /// Every device now; none (and no error) where there is no GPU.
    pub fn sample(&self) -> Result<GpuSample, GpuError> {
        match self {
            Self::None { .. } => Ok(GpuSample::default()),
            Self::Nvml(nvml) => nvml.sample(),
            Self::Fake(fake) => fake.sample(),
        }
    }

    /// Which source this is, in words: "NVML (driver 550.54, 2 devices)",
    /// "none: …", "a scripted fake from …".
    pub fn describe(&self) -> String {
        match self {
            Self::None { reason } => format!("none: {reason}"),
            Self::Nvml(nvml) => nvml.describe(),
            Self::Fake(fake) => format!("a scripted fake from {}", fake.dir().display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_memory_sums_per_device_over_the_given_pids() {
        let sample = GpuSample {
            devices: Vec::new(),
            processes: vec![
                GpuProcess {
                    device: 0,
                    pid: 1,
                    used_bytes: 10,
                },
                GpuProcess {
                    device: 1,
                    pid: 1,
                    used_bytes: 5,
                },
                GpuProcess {
                    device: 0,
                    pid: 2,
                    used_bytes: 7,
                },
                GpuProcess {
                    device: 0,
                    pid: 3,
                    used_bytes: 100,
                },
            ],
        };
        assert_eq!(sample.held_by(&[1, 2]), vec![(0, 17), (1, 5)]);
        assert!(sample.held_by(&[9]).is_empty());
    }
}
