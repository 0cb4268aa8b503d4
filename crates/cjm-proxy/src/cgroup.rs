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
//! [`isolation`] says which applies, for `cjm-ctl doctor`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The variable that tells a worker which `cgroup.kill` to write when its host dies.
pub(crate) const KILL_VAR: &str = "CJM_CGROUP_KILL";

/// Where this host's worker cgroups go, or why there are none.
fn root() -> &'static Result<PathBuf, String> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let own = own_cgroup_dir()?;
        reap_dead_hosts(&own);
        let root = own.join(format!("cjm-{}", std::process::id()));
        match fs_err::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot make a cgroup for workers: {e}")),
        }
        // The root cgroup has no cgroup.kill, so it is looked for in ours.
        if root.join("cgroup.kill").is_file() {
            Ok(root)
        } else {
            let _ = fs_err::remove_dir(&root);
            Err(format!(
                "{} has no cgroup.kill (Linux before 5.14)",
                root.display()
            ))
        }
    })
}

/// This process's cgroup folder in the unified hierarchy.
fn own_cgroup_dir() -> Result<PathBuf, String> {
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
        Ok(dir)
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
    root().clone()
}

/// One worker's cgroup; killed and removed on drop.
#[derive(Debug)]
pub(crate) struct WorkerCgroup {
    dir: PathBuf,
}

impl WorkerCgroup {
    /// A new, empty cgroup, or `None` where the machine gives cjm none.
    pub(crate) fn create() -> Option<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = root().as_ref().ok()?;
        let dir = root.join(format!("w-{}", N.fetch_add(1, Ordering::Relaxed)));
        match fs_err::create_dir(&dir) {
            Ok(()) => Some(Self { dir }),
            Err(e) => {
                tracing::debug!(error = %e, "no cgroup for this worker");
                None
            }
        }
    }

    /// `cgroup.procs`, opened for the child to write `0` into between fork and
    /// exec (which moves the writer).
    pub(crate) fn procs(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }

    /// Moves process `pid` (and none of its existing children) in.
    pub(crate) fn add(&self, pid: u32) -> std::io::Result<()> {
        let mut procs = self.procs()?;
        procs.write_all(pid.to_string().as_bytes())
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
