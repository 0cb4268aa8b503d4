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
            Ok(Root { dir: root, rel })
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

/// One worker's cgroup; killed and removed on drop.
#[derive(Debug)]
pub(crate) struct WorkerCgroup {
    dir: PathBuf,
    rel: String,
}

impl WorkerCgroup {
    /// A new, empty cgroup, or `None` where the machine gives cjm none.
    pub(crate) fn create() -> Option<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = root().as_ref().ok()?;
        let name = format!("w-{}", N.fetch_add(1, Ordering::Relaxed));
        let dir = root.dir.join(&name);
        match fs_err::create_dir(&dir) {
            Ok(()) => Some(Self {
                dir,
                rel: format!("{}/{name}", root.rel),
            }),
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
