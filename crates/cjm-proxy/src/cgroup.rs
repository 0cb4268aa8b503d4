//! A cgroup v2 per worker, where the machine lets cjm make one, so that stopping a
//! worker takes everything it started, even a grandchild that left the worker's
//! process group with `setsid()`.
//!
//! A process group is the first net: killing it takes the worker and the children
//! that stayed in it. A child that calls `setsid()` (a daemonising library, a
//! shell's `setsid cmd &`) leaves the group but cannot leave its cgroup, and
//! writing `1` to the cgroup's `cgroup.kill` (Linux 5.14) kills every process in
//! it at once. cjm makes `cjm-<host pid>/w-<n>` below its own cgroup in the
//! unified (v2) hierarchy, moves each worker in before it runs plugin code (an
//! executed worker moves itself between fork and exec; a forked one is moved by
//! the host as soon as its pid is known), kills the cgroup when the worker is
//! stopped or dies, and removes it. The worker itself writes `cgroup.kill` when it
//! sees its host die (`CJM_CGROUP_KILL`). A later host removes the folders of
//! hosts that died.
//!
//! Where there is no writable v2 hierarchy (cgroup v1 only, or a v2 tree not
//! delegated to this user: `systemd-run --user -p Delegate=yes` delegates one),
//! workers run without one, and a `setsid` grandchild can outlive its worker.
//! `CJM_WORKER_CGROUPS=0` in the host's environment turns worker cgroups off.
//! [`isolation`] says which applies, for `cjm-ctl doctor`.
//!
//! Where the memory controller is delegated too (it is listed in the host
//! cgroup's `cgroup.controllers`), cjm enables it for its workers: each worker's
//! memory is then counted exactly (`memory.current`, `memory.peak`, page cache
//! and all, nothing shared with its forkserver counted twice), an out-of-memory
//! kill inside it shows in its own `memory.events`, and a spec's
//! `memory_limit_bytes` becomes its `memory.max`. [`memory_accounting`] says
//! whether that applies; elsewhere the scheduler reads procfs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::lock::lock;

/// The variable that tells a worker which `cgroup.kill` to write when its host dies.
pub(crate) const KILL_VAR: &str = "CJM_CGROUP_KILL";
/// The variable that tells a worker which cgroup to wait to be in before it runs
/// plugin code (its path as `/proc/self/cgroup` shows it).
pub(crate) const WAIT_VAR: &str = "CJM_CGROUP";

/// This host's folder for worker cgroups.
struct Root {
    /// Its path in the mounted hierarchy.
    dir: PathBuf,
    /// Its path as `/proc/<pid>/cgroup` shows it (`0::<rel>`).
    rel: String,
    /// Whether its workers' cgroups have the memory controller, or why not.
    memory: Result<(), String>,
}

/// What one worker's cgroup counts, where the memory controller is delegated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupMemory {
    /// `memory.current`: everything charged to it now (RSS, page cache, kernel).
    pub current_bytes: u64,
    /// `memory.peak` (Linux 5.19): the most it has held, where the kernel has it.
    pub peak_bytes: Option<u64>,
    /// `memory.max`, when it is a number (`None`: no limit).
    pub max_bytes: Option<u64>,
    /// `memory.events`' `oom_kill`: processes the OOM killer ended inside it.
    pub oom_kills: u64,
}

impl CgroupMemory {
    /// Reads the memory files of the cgroup at `dir`; `None` without `memory.current`.
    pub(crate) fn read(dir: &Path) -> Option<Self> {
        let number = |file: &str| {
            fs_err::read_to_string(dir.join(file))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let events = fs_err::read_to_string(dir.join("memory.events")).unwrap_or_default();
        Some(Self {
            current_bytes: number("memory.current")?,
            peak_bytes: number("memory.peak"),
            max_bytes: number("memory.max"),
            oom_kills: crate::oom::counter(&events, "oom_kill").unwrap_or(0),
        })
    }
}

/// Turns the memory controller on for the workers' cgroups below `root`, or
/// says why it cannot be.
fn enable_memory(root: &Path) -> Result<(), String> {
    let controllers = fs_err::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| format!("cannot read the controllers: {e}"))?;
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!(
            "the memory controller is not delegated to {} (its cgroup.controllers: {:?})",
            root.display(),
            controllers.trim()
        ));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("cgroup.subtree_control"))
        .and_then(|mut f| f.write_all(b"+memory"))
        .map_err(|e| {
            format!(
                "cannot enable the memory controller under {}: {e}",
                root.display()
            )
        })
}

/// Where this host's worker cgroups go, or why there are none.
fn root() -> &'static Result<Root, String> {
    static ROOT: OnceLock<Result<Root, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        if std::env::var_os("CJM_WORKER_CGROUPS").is_some_and(|v| v == "0") {
            return Err("turned off (CJM_WORKER_CGROUPS=0)".to_owned());
        }
        let (own, own_rel) = own_cgroup_dir()?;
        reap_dead_hosts(&own);
        let name = format!("cjm-{}", std::process::id());
        let rel = format!("{}/{name}", own_rel.trim_end_matches('/'));
        let root = own.join(&name);
        match fs_err::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot make a cgroup for workers: {e}")),
        }
        // The root cgroup has no cgroup.kill, so it is looked for in ours.
        if root.join("cgroup.kill").is_file() {
            let memory = enable_memory(&root);
            Ok(Root {
                dir: root,
                rel,
                memory,
            })
        } else {
            let _ = fs_err::remove_dir(&root);
            Err(format!(
                "{} has no cgroup.kill (Linux before 5.14)",
                root.display()
            ))
        }
    })
}

/// This process's cgroup folder in the unified hierarchy, and its path as
/// `/proc/self/cgroup` shows it.
fn own_cgroup_dir() -> Result<(PathBuf, String), String> {
    let cgroups = fs_err::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy (cgroup v1 only)")?;
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    // `36 25 0:30 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw`: field 4 is the
    // cgroup the mount shows as its root, field 5 where it is mounted.
    let (mount_root, mount_point) = mounts
        .lines()
        .find_map(|l| {
            let (fields, fs) = l.split_once(" - ")?;
            fs.starts_with("cgroup2 ").then_some(())?;
            let mut f = fields.split(' ').skip(3);
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .ok_or("no cgroup v2 hierarchy is mounted")?;
    let relative = Path::new(path)
        .strip_prefix(&mount_root)
        .map_err(|_| format!("this process's cgroup {path} is outside the mounted {mount_root}"))?;
    let dir = Path::new(&mount_point).join(relative);
    if dir.is_dir() {
        Ok((dir, path.to_owned()))
    } else {
        Err(format!("{} is not there", dir.display()))
    }
}

/// Kills and removes what hosts that died left behind (`cjm-<pid>` of a pid that
/// is gone).
fn reap_dead_hosts(own: &Path) {
    let Ok(entries) = fs_err::read_dir(own) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cjm-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            continue;
        }
        let host = entry.path();
        for worker in fs_err::read_dir(&host)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            if worker.path().is_dir() {
                kill_and_remove(&worker.path());
            }
        }
        let _ = fs_err::remove_dir(&host);
    }
}

/// Whether workers get a cgroup of their own here, and where, or why not.
pub fn isolation() -> Result<PathBuf, String> {
    root().as_ref().map(|r| r.dir.clone()).map_err(Clone::clone)
}

/// Whether each worker's memory is counted (and limited) by its own cgroup
/// here, and where, or why not.
pub fn memory_accounting() -> Result<PathBuf, String> {
    let root = root().as_ref().map_err(Clone::clone)?;
    root.memory.clone().map(|()| root.dir.clone())
}

/// One worker's cgroup; killed and removed on drop.
#[derive(Debug)]
pub(crate) struct WorkerCgroup {
    dir: PathBuf,
    rel: String,
}

impl WorkerCgroup {
    /// A new, empty cgroup, or `None` where the machine gives cjm none; with
    /// `limit`, its `memory.max` where the memory controller is delegated.
    pub(crate) fn create(plugin: &str, limit: Option<u64>) -> Option<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = match root() {
            Ok(root) => root,
            Err(why) => {
                if let Some(bytes) = limit {
                    unlimited(plugin, bytes, why);
                }
                return None;
            }
        };
        let name = format!("w-{}", N.fetch_add(1, Ordering::Relaxed));
        let dir = root.dir.join(&name);
        match fs_err::create_dir(&dir) {
            Ok(()) => {
                if let Some(bytes) = limit {
                    let set = root.memory.clone().and_then(|()| {
                        fs_err::write(dir.join("memory.max"), bytes.to_string())
                            .map_err(|e| e.to_string())
                    });
                    if let Err(why) = set {
                        unlimited(plugin, bytes, &why);
                    }
                }
                Some(Self {
                    dir,
                    rel: format!("{}/{name}", root.rel),
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "no cgroup for this worker");
                None
            }
        }
    }

    /// Moves process `pid` in, on the mover thread. A move can cost a kernel RCU
    /// grace period (about 14 ms here when none happened lately), so it overlaps
    /// the interpreter's start instead of delaying it: the worker waits, before it
    /// imports plugin code, until it is in the cgroup ([`WAIT_VAR`]).
    pub(crate) fn add(&self, pid: u32) {
        static MOVER: OnceLock<Mutex<std::sync::mpsc::Sender<(PathBuf, u32)>>> = OnceLock::new();
        let mover = MOVER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, u32)>();
            let _ = std::thread::Builder::new()
                .name("cjm-cgroups".into())
                .spawn(move || {
                    for (procs, pid) in rx {
                        let moved = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&procs)
                            .and_then(|mut f| f.write_all(pid.to_string().as_bytes()));
                        if let Err(e) = moved {
                            tracing::debug!(error = %e, pid, "a worker stays out of its cgroup");
                        }
                    }
                });
            Mutex::new(tx)
        });
        let _ = lock(mover).send((self.dir.join("cgroup.procs"), pid));
    }

    /// The cgroup's path as the worker's `/proc/self/cgroup` will show it.
    pub(crate) fn rel(&self) -> &str {
        &self.rel
    }

    /// The `cgroup.kill` file, for the worker to write when its host dies.
    pub(crate) fn kill_file(&self) -> PathBuf {
        self.dir.join("cgroup.kill")
    }

    /// Kills every process in it.
    pub(crate) fn kill(&self) {
        write_kill(&self.dir);
    }

    /// What it counts, where the memory controller is on for it.
    pub(crate) fn memory(&self) -> Option<CgroupMemory> {
        CgroupMemory::read(&self.dir)
    }
}

/// Says (once per plugin) that a hard memory limit cannot be set here.
fn unlimited(plugin: &str, bytes: u64, why: &str) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = lock(&SAID);
    if !said.iter().any(|p| p == plugin) {
        said.push(plugin.to_owned());
        tracing::warn!(
            "plugin {plugin} asks for a hard memory limit of {} MB, which needs a cgroup v2 \
             memory controller delegated to cjm, and here {why}; its workers run without \
             that limit (the scheduler still admits calls by their expected footprint)",
            bytes >> 20
        );
    }
}

impl Drop for WorkerCgroup {
    fn drop(&mut self) {
        kill_and_remove(&self.dir);
    }
}

fn write_kill(dir: &Path) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
    {
        let _ = f.write_all(b"1");
    }
}

/// Kills the cgroup's processes and removes it once they are gone (the kernel
/// refuses to remove a cgroup with members; they die within milliseconds).
fn kill_and_remove(dir: &Path) {
    write_kill(dir);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                tracing::debug!(error = %e, dir = %dir.display(), "a worker cgroup stayed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CgroupMemory;

    #[test]
    fn a_cgroups_memory_files_are_read_and_an_unlimited_max_is_none() {
        let dir = std::env::temp_dir().join(format!("cjm-cgroup-files-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        assert_eq!(CgroupMemory::read(&dir), None, "no memory controller");
        fs_err::write(dir.join("memory.current"), "1048576\n").unwrap();
        fs_err::write(dir.join("memory.max"), "max\n").unwrap();
        let m = CgroupMemory::read(&dir).unwrap();
        assert_eq!(
            m,
            CgroupMemory {
                current_bytes: 1 << 20,
                peak_bytes: None,
                max_bytes: None,
                oom_kills: 0
            }
        );
        fs_err::write(dir.join("memory.peak"), "2097152\n").unwrap();
        fs_err::write(dir.join("memory.max"), "268435456\n").unwrap();
        fs_err::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        let m = CgroupMemory::read(&dir).unwrap();
        assert_eq!(
            (m.peak_bytes, m.max_bytes, m.oom_kills),
            (Some(2 << 20), Some(256 << 20), 1)
        );
        fs_err::remove_dir_all(&dir).unwrap();
    }
}
