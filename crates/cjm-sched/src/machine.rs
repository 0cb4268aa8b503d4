//! The machine's memory as a scheduler must see it: what the kernel says is
//! available, capped by the memory limit of the cgroup cjm runs in (a container's
//! limit is usually far below the machine's RAM), swap, and memory pressure.

use std::path::{Path, PathBuf};

use procfs::{Current, Meminfo, MemoryPressure};

/// One reading of the machine's memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineSample {
    /// `MemTotal`, in bytes.
    pub total_bytes: u64,
    /// `MemAvailable`: what can be given out without swapping, in bytes.
    pub available_bytes: u64,
    /// `SwapTotal`, in bytes.
    pub swap_total_bytes: u64,
    /// `SwapFree`, in bytes.
    pub swap_free_bytes: u64,
    /// The memory limit of the cgroup this process is in, where one is set.
    pub limit: Option<CgroupLimit>,
    /// `/proc/pressure/memory`, where the kernel has it (Linux 4.20, `CONFIG_PSI`).
    pub pressure: Option<Pressure>,
}

/// A memory cgroup's limit and what its members use now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimit {
    /// The limit, in bytes.
    pub limit_bytes: u64,
    /// What is charged to it now, less the page cache it can drop, in bytes.
    pub used_bytes: u64,
}

/// The share of the last ten seconds in which tasks stalled waiting for memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// Some task stalled, percent.
    pub some_avg10: f32,
    /// Every task stalled at once, percent.
    pub full_avg10: f32,
}

impl MachineSample {
    /// Reads `/proc/meminfo`, the own cgroup's limit and memory pressure.
    pub fn read() -> std::io::Result<Self> {
        let info = Meminfo::current().map_err(std::io::Error::other)?;
        let pressure = MemoryPressure::current().ok().map(|p| Pressure {
            some_avg10: p.some.avg10,
            full_avg10: p.full.avg10,
        });
        Ok(Self {
            total_bytes: info.mem_total,
            available_bytes: info.mem_available.unwrap_or(info.mem_free),
            swap_total_bytes: info.swap_total,
            swap_free_bytes: info.swap_free,
            limit: own_cgroup_limit(),
            pressure,
        })
    }

    /// What a new worker can be given: `MemAvailable`, or less where the cgroup
    /// limit leaves less.
    pub fn free_bytes(&self) -> u64 {
        match self.limit {
            Some(l) => self
                .available_bytes
                .min(l.limit_bytes.saturating_sub(l.used_bytes)),
            None => self.available_bytes,
        }
    }

    /// The most there could ever be: RAM, or the cgroup limit where lower.
    pub fn capacity_bytes(&self) -> u64 {
        self.limit
            .map_or(self.total_bytes, |l| self.total_bytes.min(l.limit_bytes))
    }
}

/// A limit this large means none (cgroup v1 writes `PAGE_COUNTER_MAX` pages).
const NO_LIMIT: u64 = 1 << 60;

/// The memory limit of the cgroup this process is in, v2 (`memory.max`) or v1
/// (`memory.limit_in_bytes`), if one is set and readable.
fn own_cgroup_limit() -> Option<CgroupLimit> {
    let cgroups = fs_err::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                if let Some(limit) = v2_limit(&Path::new(root).join(rel)) {
                    return Some(limit);
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = PathBuf::from("/sys/fs/cgroup/memory").join(rel);
            if let Some(limit) = v1_limit(&dir) {
                return Some(limit);
            }
        }
    }
    None
}

fn v2_limit(dir: &Path) -> Option<CgroupLimit> {
    let max = read_number(&dir.join("memory.max"))?;
    let current = read_number(&dir.join("memory.current"))?;
    let cache = stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
    (max < NO_LIMIT).then(|| CgroupLimit {
        limit_bytes: max,
        used_bytes: current.saturating_sub(cache),
    })
}

fn v1_limit(dir: &Path) -> Option<CgroupLimit> {
    let max = read_number(&dir.join("memory.limit_in_bytes"))?;
    let usage = read_number(&dir.join("memory.usage_in_bytes"))?;
    let cache = stat_field(&dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
    (max < NO_LIMIT).then(|| CgroupLimit {
        limit_bytes: max,
        used_bytes: usage.saturating_sub(cache),
    })
}

/// A file holding one number (`max` reads as none).
fn read_number(file: &Path) -> Option<u64> {
    fs_err::read_to_string(file).ok()?.trim().parse().ok()
}

/// One `key value` line of a `memory.stat`.
pub(crate) fn stat_field(file: &Path, key: &str) -> Option<u64> {
    let text = fs_err::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(available: u64, limit: Option<(u64, u64)>) -> MachineSample {
        MachineSample {
            total_bytes: 100,
            available_bytes: available,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
            limit: limit.map(|(limit_bytes, used_bytes)| CgroupLimit {
                limit_bytes,
                used_bytes,
            }),
            pressure: None,
        }
    }

    #[test]
    fn a_cgroup_limit_caps_what_is_free_and_what_there_could_ever_be() {
        assert_eq!(sample(80, None).free_bytes(), 80);
        assert_eq!(sample(80, None).capacity_bytes(), 100);
        assert_eq!(sample(80, Some((50, 20))).free_bytes(), 30);
        assert_eq!(sample(80, Some((50, 20))).capacity_bytes(), 50);
        assert_eq!(sample(10, Some((50, 20))).free_bytes(), 10);
        assert_eq!(sample(10, Some((50, 60))).free_bytes(), 0);
    }

    #[test]
    fn this_machine_reads_with_plausible_numbers() {
        let m = MachineSample::read().expect("/proc/meminfo");
        assert!(m.total_bytes > 0);
        assert!(m.available_bytes <= m.total_bytes);
        assert!(m.free_bytes() <= m.capacity_bytes());
    }
}
