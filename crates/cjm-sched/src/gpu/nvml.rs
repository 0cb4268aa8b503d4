//! NVIDIA GPUs through NVML, which `nvml-wrapper` loads from the driver's
//! `libnvidia-ml.so.1` at run time: on a machine without the driver, loading
//! fails and there are no GPUs.

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

use super::{GpuDevice, GpuError, GpuProcess, GpuSample};

/// The loaded NVML library, initialised.
pub struct Nvml {
    lib: nvml_wrapper::Nvml,
    driver: String,
    devices: u32,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvml")
            .field("driver", &self.driver)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl Nvml {
    /// Loads and initialises NVML, or says why there are no GPUs.
    pub fn load() -> Result<Self, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| match e {
            NvmlError::LibloadingError(_) => {
                "no NVIDIA driver (libnvidia-ml.so.1 is not installed)".to_owned()
            }
            NvmlError::DriverNotLoaded => {
                "the NVIDIA driver is installed but not loaded".to_owned()
            }
            NvmlError::NoPermission => {
                "NVML may not talk to the NVIDIA driver (no permission)".to_owned()
            }
            other => format!("NVML did not start: {other}"),
        })?;
        let devices = nvml
            .device_count()
            .map_err(|e| format!("NVML cannot count devices: {e}"))?;
        if devices == 0 {
            return Err("the NVIDIA driver is loaded but sees no devices".to_owned());
        }
        let driver = nvml
            .sys_driver_version()
            .unwrap_or_else(|_| "unknown".to_owned());
        Ok(Self {
            lib: nvml,
            driver,
            devices,
        })
    }

    /// "NVML (driver 550.54.15, 2 devices)".
    pub fn describe(&self) -> String {
        let s = if self.devices == 1 { "" } else { "s" };
        format!("NVML (driver {}, {} device{s})", self.driver, self.devices)
    }

    /// Every device's memory and utilisation, and each process's memory on it.
    pub fn sample(&self) -> Result<GpuSample, GpuError> {
        let mut sample = GpuSample::default();
        for index in 0..self.devices {
            let what = |part: &str| format!("GPU {index}'s {part}");
            let fail = |part: &str, e: NvmlError| GpuError {
                what: what(part),
                reason: e.to_string(),
            };
            let device = self
                .lib
                .device_by_index(index)
                .map_err(|e| fail("handle", e))?;
            let memory = device.memory_info().map_err(|e| fail("memory", e))?;
            sample.devices.push(GpuDevice {
                index,
                name: device.name().unwrap_or_else(|_| "NVIDIA GPU".to_owned()),
                total_bytes: memory.total,
                free_bytes: memory.free,
                utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
            });
            let compute = device.running_compute_processes().unwrap_or_default();
            let graphics = device.running_graphics_processes().unwrap_or_default();
            for process in compute.into_iter().chain(graphics) {
                if let UsedGpuMemory::Used(used_bytes) = process.used_gpu_memory
                    && !sample
                        .processes
                        .iter()
                        .any(|p| p.pid == process.pid && p.device == index)
                {
                    sample.processes.push(GpuProcess {
                        device: index,
                        pid: process.pid,
                        used_bytes,
                    });
                }
            }
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs for real where a driver is present; elsewhere checks that its absence
    /// reads as a reason, not an error.
    #[test]
    fn nvml_loads_where_a_driver_is_and_says_why_not_elsewhere() {
        match Nvml::load() {
            Ok(nvml) => {
                let sample = nvml.sample().expect("sample real GPUs");
                assert!(!sample.devices.is_empty());
                for d in &sample.devices {
                    assert!(d.total_bytes > 0 && d.free_bytes <= d.total_bytes);
                }
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
}
