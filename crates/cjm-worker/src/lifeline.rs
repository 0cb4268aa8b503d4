//! How a worker dies with its host, busy or idle, whatever plugin code is doing.
//!
//! The channel is the lifeline: when the channel thread reads EOF it calls
//! [`host_gone`], which kills the worker's cgroup (when the host gave it one) and its
//! process group, this process included. `PR_SET_PDEATHSIG` is the backstop, for a
//! channel that somehow stays open: it delivers a real-time signal whose handler does
//! the same kill. That handler runs in signal context, so everything it reaches
//! ([`kill_cgroup`] included) uses only async-signal-safe calls: an atomic load,
//! `write`, `getpgrp`, `getpid`, `kill` and `_exit`.

use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// The worker's `cgroup.kill`, opened at start when the host gave it a cgroup of
/// its own (`CJM_CGROUP_KILL`); -1 otherwise.
static CGROUP_KILL: AtomicI32 = AtomicI32::new(-1);

/// Opens `CJM_CGROUP_KILL`, so that leaving can take every process the worker
/// started, even those that left its process group.
pub(crate) fn open_cgroup_kill() {
    let Some(path) = std::env::var_os("CJM_CGROUP_KILL") else {
        return;
    };
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
        CGROUP_KILL.store(file.into_raw_fd(), Ordering::Release);
    }
}

/// Waits (at most two seconds) until the host has moved this process into the
/// cgroup `CJM_CGROUP` names, so that nothing the plugin starts begins outside it.
pub(crate) fn wait_for_cgroup() {
    let Some(want) = std::env::var_os("CJM_CGROUP") else {
        return;
    };
    let want = format!("0::{}", want.to_string_lossy());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut here = String::new();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .open("/proc/self/cgroup")
        {
            let _ = std::io::Read::read_to_string(&mut f, &mut here);
        }
        if here.lines().any(|l| l == want) {
            return;
        }
        if std::time::Instant::now() > deadline {
            eprintln!("cjm-worker: not moved into its cgroup ({want}); going on without it");
            return;
        }
        // A move usually lands within microseconds of the fork; a slow one waits
        // for a kernel grace period (milliseconds).
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Kills the worker's cgroup, this process included (async-signal-safe).
fn kill_cgroup() {
    let fd = CGROUP_KILL.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: write(2) of one byte to a descriptor this process opened.
        unsafe { libc::write(fd, b"1".as_ptr().cast(), 1) };
    }
}

/// Ends the worker and everything it started, without running Python finalizers.
pub(crate) fn exit_group(code: i32) -> ! {
    // The cgroup first: it holds the group and whatever left it, and this
    // process too, so nothing after it may be needed.
    kill_cgroup();
    // Only a process-group leader may take its group down: run by hand (not by a
    // host), a worker shares its shell's group and must not kill it.
    if rustix::process::getpgrp() == rustix::process::getpid() {
        // SAFETY: plain syscall; SIGKILL to our own group, which includes us.
        unsafe { libc::kill(0, libc::SIGKILL) };
    }
    // SAFETY: immediate exit without running Python finalizers (other threads may
    // hold the GIL forever).
    unsafe { libc::_exit(code) }
}

/// The host is gone (or never was): say why on stderr, then [`exit_group`].
pub(crate) fn host_gone(why: &str) -> ! {
    eprintln!("cjm-worker: {why}; exiting with the process group");
    exit_group(0)
}

/// Arms the backstop: when the parent dies, the kernel sends a real-time signal whose
/// handler kills the cgroup and the group as [`exit_group`] does. Not SIGKILL, which
/// would take only this process. Then checks that the parent is still `ppid`: a host
/// that died before the signal was armed sends nothing.
pub(crate) fn die_with_parent(ppid: Option<i32>) {
    let parent_death_signal = libc::SIGRTMIN() + 2;
    // SAFETY: installs an async-signal-safe handler (an atomic load, write, getpgrp,
    // getpid, kill, _exit) for a real-time signal nothing else in the worker uses.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_parent_death as *const () as libc::sighandler_t;
        libc::sigaction(parent_death_signal, &raw const action, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, parent_death_signal);
    }
    if let Some(ppid) = ppid
        && rustix::process::getppid()
            .map(rustix::process::Pid::as_raw_nonzero)
            .map(std::num::NonZero::get)
            != Some(ppid)
    {
        host_gone("the host exited before the worker started");
    }
}

extern "C" fn on_parent_death(_signal: libc::c_int) {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        kill_cgroup();
        if libc::getpgrp() == libc::getpid() {
            libc::kill(0, libc::SIGKILL);
        }
        libc::_exit(0);
    }
}
