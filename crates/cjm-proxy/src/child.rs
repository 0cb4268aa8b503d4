//! A worker's process as the OS sees it: the spawner thread every child is forked
//! from, the command line and what runs between fork and exec, the started child
//! (executed by this host or forked by a forkserver), and the one place a process
//! group is signalled.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use cjm_core::WorkerExit;
pub(crate) use rustix::process::Signal;

use crate::cgroup::WorkerCgroup;
use crate::deadline::Deadline;
use crate::env::worker_env;
use crate::forkserver::{self, Forked};
use crate::lock::lock;
use crate::spec::{StartMethod, WorkerSpec};

/// Forks from one long-lived thread: `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked a child exits, so a worker forked from a short-lived thread (a blocking
/// pool thread, a caller's thread) would be killed when that thread ends.
type SpawnJob = Box<dyn FnOnce() + Send>;

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        // The thread lives as long as the host process: it is the parent of record
        // of every worker.
        let _ = std::thread::Builder::new()
            .name("cjm-spawner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            });
        Mutex::new(tx)
    })
}

/// Runs `cmd.spawn()` on the spawner thread.
pub(crate) fn spawn_command(mut cmd: Command) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    let job: SpawnJob = Box::new(move || {
        let _ = tx.send(cmd.spawn());
    });
    let gone = || std::io::Error::other("the spawner thread is gone");
    lock(spawner()).send(job).map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

fn build_command(spec: &WorkerSpec, env: &[(OsString, OsString)], child_fd: i32) -> Command {
    let mut cmd = Command::new(&spec.python);
    cmd.arg("-m")
        .arg("cjm_worker")
        .arg("--fd")
        .arg(child_fd.to_string())
        .arg("--module")
        .arg(&spec.module)
        .arg("--class")
        .arg(&spec.class)
        .arg("--ppid")
        .arg(std::process::id().to_string());
    cmd.env_clear();
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so stopping it takes its children too.
    cmd.process_group(0);
    inherit_and_die_with_host(&mut cmd, child_fd);
    cmd
}

/// Lets exactly the child `cmd` starts inherit `fd` (its end of a socket pair)
/// and has the kernel kill it when the host dies: it must be started by
/// [`spawn_command`], whose thread lives as long as the host.
pub(crate) fn inherit_and_die_with_host(cmd: &mut Command, fd: i32) {
    // SAFETY: only async-signal-safe calls (fcntl, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Sends `signal` to the process group that `leader` leads: a worker or a
/// forkserver, each started as the leader of a group of its own, so the signal
/// reaches whatever it started too. A group that is gone already is no error (its
/// leader may be reaped while the rest of its group still runs, or all of it may
/// be gone), and pid 0, which `kill` would read as the host's own group, is never
/// signalled.
pub(crate) fn kill_group(leader: u32, signal: Signal) {
    let Some(pid) = i32::try_from(leader)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, signal);
}

/// A started worker process, whoever its parent is.
pub(crate) enum ChildProc {
    /// Executed by this host, which reaps it.
    Exec(Child),
    /// Forked by a forkserver, which reaps it and reports its status.
    Forked(Forked),
}

/// One of the worker's output streams (stdout, stderr), read by a log thread.
pub(crate) type Stream = Box<dyn std::io::Read + Send>;

impl ChildProc {
    pub(crate) fn id(&self) -> u32 {
        match self {
            Self::Exec(c) => c.id(),
            Self::Forked(f) => f.pid,
        }
    }

    /// The exit, if it comes before `deadline` (a worker that closed its channel
    /// is usually exiting); `None` when it does not, or cannot be known.
    pub(crate) fn wait_until(&mut self, deadline: &Deadline) -> Option<WorkerExit> {
        let status = match self {
            // A child has no event to wait on short of `waitpid`, which cannot time
            // out: poll, sleeping in real time between looks.
            Self::Exec(c) => loop {
                match c.try_wait() {
                    Ok(Some(s)) => break s,
                    Ok(None) if deadline.next_wait().is_some() => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Ok(None) | Err(_) => return None,
                }
            },
            Self::Forked(f) => std::process::ExitStatus::from_raw(deadline.recv(&f.exit).ok()?),
        };
        Some(exit_of(status))
    }

    /// Waits for the exit; `None` when its status cannot be known.
    pub(crate) fn wait(&mut self) -> Option<WorkerExit> {
        let status = match self {
            Self::Exec(c) => loop {
                match c.wait() {
                    Ok(s) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            },
            Self::Forked(f) => std::process::ExitStatus::from_raw(f.exit.recv().ok()?),
        };
        Some(exit_of(status))
    }
}

fn exit_of(status: std::process::ExitStatus) -> WorkerExit {
    match status.signal() {
        Some(sig) => WorkerExit::Signal(sig),
        None => WorkerExit::Code(status.code().unwrap_or(-1)),
    }
}

/// Starts the worker's process: forked by its interpreter's forkserver when the
/// spec asks for one and one can be had, executed otherwise.
pub(crate) fn start_child(
    spec: &WorkerSpec,
    child_end: &OwnedFd,
    cgroup: Option<&WorkerCgroup>,
) -> std::io::Result<(ChildProc, [Option<Stream>; 2])> {
    let mut env = worker_env(spec);
    if let Some(cg) = cgroup {
        env.push((crate::cgroup::KILL_VAR.into(), cg.kill_file().into()));
        env.push((crate::cgroup::WAIT_VAR.into(), cg.rel().into()));
    }
    // A worker forked with no directory of its own goes where an executed one
    // would: the host's current directory (if that is gone, exec copes better).
    let cwd = spec.cwd.clone().or_else(|| std::env::current_dir().ok());
    if spec.start_method == StartMethod::Forkserver
        && let Some(cwd) = cwd
    {
        let (out_r, out_w) = std::io::pipe()?;
        let (err_r, err_w) = std::io::pipe()?;
        let fds = [child_end.as_fd(), out_w.as_fd(), err_w.as_fd()];
        if let Some(forked) = forkserver::fork(spec, &env, &cwd, fds) {
            if let Some(cg) = cgroup {
                cg.add(forked.pid);
            }
            return Ok((
                ChildProc::Forked(forked),
                [Some(Box::new(out_r)), Some(Box::new(err_r))],
            ));
        }
    }
    let mut child = spawn_command(build_command(spec, &env, child_end.as_raw_fd()))?;
    if let Some(cg) = cgroup {
        cg.add(child.id());
    }
    let streams: [Option<Stream>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as Stream),
        child.stderr.take().map(|s| Box::new(s) as Stream),
    ];
    Ok((ChildProc::Exec(child), streams))
}
