//! Whether the kernel's out-of-memory killer ended a worker: only with evidence.
//!
//! A SIGKILL the host did not send is often the OOM killer, but just as often an
//! operator's `kill -9`, a container runtime or a supervisor. Two places say
//! which: the memory cgroup's OOM-kill counter (`memory.events` on cgroup v2,
//! `memory.oom_control` on v1), read when the worker starts and when it dies, and
//! the kernel log (`/dev/kmsg`, where readable), which names the killed pid.
//! Without either, a death says only that something outside cjm sent the signal.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::io::Read;
use std::path::PathBuf;

/// The OOM-kill count of this process's memory cgroup, if one can be read.
pub(crate) fn cgroup_oom_kills() -> Option<u64> {
    let text = fs_err::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let candidates: Vec<PathBuf> = if controllers.is_empty() {
            // cgroup v2: the unified hierarchy, mounted alone or beside v1.
            ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
                .iter()
                .flat_map(|root| {
                    [
                        PathBuf::from(root).join(path).join("memory.events"),
                        PathBuf::from(root).join("memory.events"),
                    ]
                })
                .collect()
        } else if controllers.split(',').any(|c| c == "memory") {
            vec![
                PathBuf::from("/sys/fs/cgroup/memory")
                    .join(path)
                    .join("memory.oom_control"),
                PathBuf::from("/sys/fs/cgroup/memory/memory.oom_control"),
            ]
        } else {
            continue;
        };
        for file in candidates {
            if let Some(n) = fs_err::read_to_string(&file)
                .ok()
                .and_then(|t| counter(&t, "oom_kill"))
            {
                return Some(n);
            }
        }
    }
    None
}

pub(crate) fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A kernel log line saying the OOM killer killed `pid`, if the log is readable
/// and has one.
fn kernel_log_line(pid: u32) -> Option<String> {
    let mut kmsg = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let killed = format!("Killed process {pid} (");
    let task = format!(",pid={pid},");
    // Each read returns one record; the buffer must hold the longest one.
    let mut buf = vec![0u8; 16 * 1024];
    let mut found = None;
    // The ring buffer is finite, and a record that went missing (EPIPE) is skipped.
    for _ in 0..100_000 {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                let message = record.split_once(';').map_or(&*record, |(_, m)| m).trim();
                if message.contains(&killed)
                    || (message.contains("oom-kill:") && message.contains(&task))
                {
                    found = Some(message.to_owned());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    found
}

/// The evidence that the OOM killer ended `pid`: the kernel log's line for it,
/// or the cgroup's OOM-kill counter having moved since `kills_at_start`.
pub(crate) fn evidence(pid: u32, kills_at_start: Option<u64>) -> Option<String> {
    if let Some(line) = kernel_log_line(pid) {
        return Some(format!("the kernel log says: {line}"));
    }
    let (before, now) = (kills_at_start?, cgroup_oom_kills()?);
    (now > before).then(|| {
        format!("the memory cgroup's OOM-kill count rose from {before} to {now} while it ran")
    })
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn the_oom_kill_counter_is_read_from_either_cgroup_version() {
        let v2 = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(counter(v1, "oom_kill"), Some(5));
        assert_eq!(counter("oom 1\n", "oom_kill"), None);
    }
}
