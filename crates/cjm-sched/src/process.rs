//! Per-worker memory and CPU from procfs, counting every process the worker
//! started: one scan of `/proc` serves any number of workers, so a sample of a
//! hundred workers costs one pass over the machine's processes.
//!
//! [`sample`] is the cheap sweep (resident memory and CPU time of each tree).
//! [`peak_and_reset`] is the per-call reading: the high-water mark of each
//! process's resident set since the last reset (`VmHWM`), its proportional and
//! unique set sizes where the kernel has `smaps_rollup` (Linux 4.14), and then a
//! reset of the mark (`clear_refs` 5, Linux 4.0) so that the next reading covers
//! the next call only.

use std::collections::HashMap;

use procfs::process::{ClearRefs, Process};

/// A worker's processes' use now, the worker and everything below it together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeUsage {
    /// The worker's pid.
    pub pid: u32,
    /// The worker and its live descendants.
    pub processes: usize,
    /// Their resident memory, in bytes.
    pub rss_bytes: u64,
    /// Their CPU time (user and system), in seconds.
    pub cpu_seconds: f64,
}

/// A worker tree's memory over the period since the last reset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakUsage {
    /// The sum of each process's resident high-water mark, in bytes: the peak
    /// of the tree or more (the processes may have peaked at different times).
    pub rss_peak_bytes: u64,
    /// Their proportional set size now (shared pages split among sharers).
    pub pss_bytes: Option<u64>,
    /// Their unique set size now (pages no other process maps).
    pub uss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ppid: u32,
    rss_bytes: u64,
    cpu_seconds: f64,
}

/// One pass over `/proc`: each process's parent, resident memory and CPU time.
#[derive(Debug, Default)]
pub struct ProcessTable {
    entries: HashMap<u32, Entry>,
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessTable {
    /// Reads every process's `stat`. Processes that exit during the scan are
    /// left out.
    pub fn scan() -> std::io::Result<Self> {
        let page = procfs::page_size();
        let ticks = procfs::ticks_per_second() as f64;
        let mut table = Self::default();
        for process in procfs::process::all_processes()
            .map_err(std::io::Error::other)?
            .flatten()
        {
            let Ok(stat) = process.stat() else { continue };
            let (pid, parent) = (stat.pid as u32, stat.ppid as u32);
            table.entries.insert(
                pid,
                Entry {
                    ppid: parent,
                    rss_bytes: stat.rss * page,
                    cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
                },
            );
            table.children.entry(parent).or_default().push(pid);
        }
        Ok(table)
    }

    /// The pid and every live descendant of it, the pid first; empty when the
    /// pid is gone.
    pub fn tree(&self, pid: u32) -> Vec<u32> {
        if !self.entries.contains_key(&pid) {
            return Vec::new();
        }
        let mut pids = vec![pid];
        let mut next = 0;
        while let Some(&p) = pids.get(next) {
            next += 1;
            if let Some(kids) = self.children.get(&p) {
                pids.extend(kids.iter().copied().filter(|&k| k != p));
            }
        }
        pids
    }

    /// What the tree below `pid` uses, or `None` when the pid is gone.
    pub fn usage(&self, pid: u32) -> Option<TreeUsage> {
        let pids = self.tree(pid);
        if pids.is_empty() {
            return None;
        }
        let mut usage = TreeUsage {
            pid,
            processes: pids.len(),
            rss_bytes: 0,
            cpu_seconds: 0.0,
        };
        for p in &pids {
            let e = self.entries[p];
            usage.rss_bytes += e.rss_bytes;
            usage.cpu_seconds += e.cpu_seconds;
        }
        Some(usage)
    }

    /// The parent of `pid`, if it was seen.
    pub fn parent(&self, pid: u32) -> Option<u32> {
        self.entries.get(&pid).map(|e| e.ppid)
    }
}

/// Each worker's tree usage, from one scan; `None` for a worker that is gone.
pub fn sample(pids: &[u32]) -> std::io::Result<Vec<Option<TreeUsage>>> {
    let table = ProcessTable::scan()?;
    Ok(pids.iter().map(|&p| table.usage(p)).collect())
}

/// The worker tree's peak since the last reset and its PSS/USS now, then a reset
/// of every member's high-water mark. `None` when the worker is gone.
pub fn peak_and_reset(pid: u32) -> Option<PeakUsage> {
    let table = ProcessTable::scan().ok()?;
    let pids = table.tree(pid);
    if pids.is_empty() {
        return None;
    }
    let mut peak = PeakUsage {
        rss_peak_bytes: 0,
        pss_bytes: Some(0),
        uss_bytes: Some(0),
    };
    for p in pids {
        let Ok(process) = Process::new(p as i32) else {
            continue;
        };
        let hwm = process
            .status()
            .ok()
            .and_then(|s| s.vmhwm)
            .map(|kb| kb * 1024);
        let rss = table.entries.get(&p).map_or(0, |e| e.rss_bytes);
        peak.rss_peak_bytes += hwm.unwrap_or(rss).max(rss);
        if let Ok(rollup) = process.smaps_rollup() {
            let map = rollup.memory_map_rollup.0.first();
            let field = |k: &str| {
                map.and_then(|m| m.extension.map.get(k).copied())
                    .unwrap_or(0)
            };
            peak.pss_bytes = peak.pss_bytes.map(|v| v + field("Pss"));
            peak.uss_bytes = peak
                .uss_bytes
                .map(|v| v + field("Private_Clean") + field("Private_Dirty"));
        } else {
            peak.pss_bytes = None;
            peak.uss_bytes = None;
        }
        // Reset the mark for the next call; a process we may not write to keeps
        // its mark, which only makes the next reading larger.
        let _ = process.clear_refs(ClearRefs::PeakRSS);
    }
    Some(peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_in_the_table_with_its_parent_and_memory() {
        let me = std::process::id();
        let table = ProcessTable::scan().expect("scan /proc");
        let usage = table.usage(me).expect("this process");
        assert_eq!(usage.pid, me);
        assert!(usage.processes >= 1);
        assert!(usage.rss_bytes > 0);
        assert_eq!(table.parent(me), Some(parent_from_stat()));
    }

    fn parent_from_stat() -> u32 {
        let stat = fs_err::read_to_string("/proc/self/stat").expect("own stat");
        let after = stat.rsplit_once(')').expect("comm").1;
        after
            .split_whitespace()
            .nth(1)
            .expect("ppid")
            .parse()
            .expect("number")
    }

    #[test]
    fn a_pid_that_is_gone_has_no_usage() {
        let table = ProcessTable::scan().expect("scan /proc");
        assert_eq!(table.usage(u32::MAX - 1), None);
        assert!(table.tree(u32::MAX - 1).is_empty());
    }

    #[test]
    fn the_peak_of_this_process_covers_its_resident_set() {
        let me = std::process::id();
        let peak = peak_and_reset(me).expect("this process");
        let now = ProcessTable::scan().expect("scan").usage(me).expect("me");
        assert!(peak.rss_peak_bytes > 0);
        assert!(peak.rss_peak_bytes + (64 << 20) > now.rss_bytes);
        if let (Some(pss), Some(uss)) = (peak.pss_bytes, peak.uss_bytes) {
            assert!(uss <= pss + 4096, "unique {uss} <= proportional {pss}");
        }
    }
}
