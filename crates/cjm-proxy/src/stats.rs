//! A worker's resource use as procfs sees it: the worker's own RSS and that of its
//! whole process tree, their CPU time, and how many descendants it has.

use std::collections::HashMap;

/// A worker's resource use, read from procfs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerStats {
    /// The worker's pid.
    pub pid: u32,
    /// Resident memory of the worker alone, in bytes.
    pub rss_bytes: u64,
    /// Resident memory of the worker and all its descendants, in bytes.
    pub tree_rss_bytes: u64,
    /// CPU time (user + system) of the worker and its descendants, in seconds.
    pub cpu_seconds: f64,
    /// Number of live descendants.
    pub children: usize,
}

pub(crate) fn collect(pid: u32) -> Result<WorkerStats, procfs::ProcError> {
    let page = procfs::page_size();
    let ticks = procfs::ticks_per_second() as f64;
    let me = procfs::process::Process::new(pid as i32)?;
    let stat = me.stat()?;
    let rss = stat.rss * page;
    // Walk all processes once, then the tree below `pid`.
    let mut kids: HashMap<i32, Vec<(i32, u64, f64)>> = HashMap::new();
    for p in procfs::process::all_processes()?.flatten() {
        if let Ok(s) = p.stat() {
            kids.entry(s.ppid).or_default().push((
                s.pid,
                s.rss * page,
                (s.utime + s.stime) as f64 / ticks,
            ));
        }
    }
    let mut tree_rss = rss;
    let mut cpu = (stat.utime + stat.stime) as f64 / ticks;
    let mut children = 0;
    let mut stack = vec![pid as i32];
    while let Some(p) = stack.pop() {
        for &(child, child_rss, child_cpu) in kids.get(&p).map(Vec::as_slice).unwrap_or_default() {
            children += 1;
            tree_rss += child_rss;
            cpu += child_cpu;
            stack.push(child);
        }
    }
    Ok(WorkerStats {
        pid,
        rss_bytes: rss,
        tree_rss_bytes: tree_rss,
        cpu_seconds: cpu,
        children,
    })
}
