//! Starting workers by forking a warm interpreter instead of executing a new one.
//!
//! Starting an interpreter and importing the worker runtime costs 15–20 ms of CPU;
//! on a small machine, ten workers started at once queue for the cores. A
//! forkserver (`python -m cjm_worker._forkserver FD`) pays that once per
//! interpreter and startup environment, then forks each worker for about 4 ms of
//! CPU all told (bench/RESULTS.md: most of it the child's copy-on-write page
//! faults). The child turns into exactly what `python -m cjm_worker` would be: its
//! own process group, the worker's environment, working directory, `sys.path`,
//! stdout and stderr (see the Python module for the child's side).
//!
//! The server, not the host, is the worker's parent, so it reports each child's
//! wait status back; the host's waiter thread reads it instead of `waitpid`. The
//! server is single-threaded, forked from the host's spawner thread (so it dies
//! with the host) and is restarted on demand if it ever dies; its children die
//! with it. Whenever a server cannot be had (an environment whose cjm-worker
//! predates it, an odd environment), workers are started by exec as before.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};

use cjm_proto::{FDS_PER_REQUEST, FORK_PROTOCOL, ForkReply, SpawnRequest};

use crate::deadline::Deadline;
use crate::lock::lock;
use crate::logs::StderrTail;
use crate::spec::WorkerSpec;

/// A server with no worker for this long exits; the next worker starts another
/// (one interpreter start, 40–60 ms). Idle servers would otherwise hold ~10 MB each
/// for every environment ever used.
const IDLE_EXIT: Duration = Duration::from_mins(5);
/// How long to wait before trying again to start a server that failed to start.
/// On `Instant`, not a spec's clock: servers are shared by every spec whose
/// interpreter and startup environment match, and their clocks may differ.
const RETRY_AFTER: Duration = Duration::from_mins(1);

/// A worker the server forked.
pub(crate) struct Forked {
    pub(crate) pid: u32,
    /// The child's raw wait status, once it has exited; disconnected when the
    /// server died first (and the child with it, of its parent-death signal).
    pub(crate) exit: mpsc::Receiver<i32>,
}

/// Servers are shared by every worker whose interpreter and startup environment
/// match: variables read when an interpreter starts cannot be changed after it has.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    python: PathBuf,
    env: Vec<(OsString, OsString)>,
}

impl Key {
    fn new(python: &Path, env: &[(OsString, OsString)]) -> Self {
        let mut startup: Vec<(OsString, OsString)> = env
            .iter()
            .filter(|(k, _)| read_at_startup(k))
            .cloned()
            .collect();
        startup.sort();
        Self {
            python: python.to_path_buf(),
            env: startup,
        }
    }
}

/// Whether the interpreter, the C library or the loader reads a variable before
/// any plugin code runs. `PYTHONPATH` is not one: the child sets `sys.path` itself.
fn read_at_startup(key: &OsStr) -> bool {
    let Some(key) = key.to_str() else {
        return true;
    };
    cjm_core::INHERITED_ENV.contains(&key)
        || (key.starts_with("PYTHON") && key != "PYTHONPATH")
        || key.starts_with("LD_")
        || key.starts_with("MALLOC_")
        || key.starts_with("LC_")
        || key == "GLIBC_TUNABLES"
}

/// Whether the server of one key runs.
enum ServerState {
    NotStarted,
    Running(Arc<Server>),
    /// It failed to start at this time; not tried again for [`RETRY_AFTER`].
    Unavailable(Instant),
}

fn servers() -> &'static Mutex<HashMap<Key, Arc<Mutex<ServerState>>>> {
    static SERVERS: OnceLock<Mutex<HashMap<Key, Arc<Mutex<ServerState>>>>> = OnceLock::new();
    SERVERS.get_or_init(Mutex::default)
}

/// The forkservers running now: each one's interpreter and pid. A server that
/// died since its last fork is listed until the next one finds out; one being
/// started (its state locked) is not listed yet, so this never waits on a start.
pub fn running() -> Vec<(PathBuf, u32)> {
    let states: Vec<(PathBuf, Arc<Mutex<ServerState>>)> = lock(servers())
        .iter()
        .map(|(key, state)| (key.python.clone(), Arc::clone(state)))
        .collect();
    let mut running: Vec<(PathBuf, u32)> = states
        .into_iter()
        .filter_map(|(python, state)| match &*state.try_lock().ok()? {
            ServerState::Running(server) => Some((python, server.pid)),
            _ => None,
        })
        .collect();
    running.sort();
    running
}

/// Forks a worker for `plugin` from the server of its interpreter, starting the
/// server first if needed. `None` means "exec it instead": no server could be had,
/// or this request could not go through one (the reason is logged).
pub(crate) fn fork(
    spec: &WorkerSpec,
    env: &[(OsString, OsString)],
    cwd: &Path,
    fds: [BorrowedFd<'_>; 3],
) -> Option<Forked> {
    let key = Key::new(&spec.python, env);
    // The environment (secrets included) goes straight to the child in a memfd:
    // the server's memory is inherited by every worker it forks, so no secret
    // may ever be read into it.
    let env_fd = match env_memfd(env) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(plugin = %spec.plugin, "cannot pass the environment to a forked worker ({e}); starting it with exec");
            return None;
        }
    };
    let mut request = SpawnRequest {
        id: 0,
        module: spec.module.clone(),
        class: spec.class.clone(),
        cwd: cwd.to_path_buf(),
    };
    let [channel, stdout, stderr] = fds;
    let fds = [channel, stdout, stderr, env_fd.as_fd()];
    // A server may exit (idle) just as a request reaches it: then one more try,
    // on a fresh server.
    let mut outcome = Err(ForkError::Gone);
    for _ in 0..2 {
        // Each wait (a server's start, then its answer) has the start timeout.
        let within = || Deadline::after(&spec.clock, spec.start_timeout);
        outcome = server(&key, &within())?.fork(&mut request, fds, &within());
        if !matches!(outcome, Err(ForkError::Gone)) {
            break;
        }
    }
    match outcome {
        Ok(forked) => Some(forked),
        Err(reason) => {
            tracing::warn!(
                plugin = %spec.plugin,
                python = %spec.python.display(),
                "the forkserver could not start this worker ({reason}); starting it with exec"
            );
            None
        }
    }
}

/// A memfd holding `env` as `NAME=VALUE` entries each ended by a NUL, for the
/// child alone to read.
fn env_memfd(env: &[(OsString, OsString)]) -> std::io::Result<OwnedFd> {
    let mut body = Vec::new();
    for (k, v) in env {
        body.extend_from_slice(k.as_bytes());
        body.push(b'=');
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    let fd = rustix::fs::memfd_create("cjm-worker-env", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, &body)?;
    Ok(file.into())
}

/// The running server for `key`, starting one if there is none.
fn server(key: &Key, deadline: &Deadline) -> Option<Arc<Server>> {
    let state = Arc::clone(
        lock(servers())
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mutex::new(ServerState::NotStarted))),
    );
    // One start per key at a time: concurrent first loads share one server.
    let mut state = lock(&state);
    match &*state {
        ServerState::Running(s) if !s.is_dead() => return Some(Arc::clone(s)),
        ServerState::Unavailable(since) if since.elapsed() < RETRY_AFTER => return None,
        _ => {}
    }
    match Server::start(key, deadline) {
        Ok(s) => {
            *state = ServerState::Running(Arc::clone(&s));
            Some(s)
        }
        Err(reason) => {
            tracing::warn!(
                python = %key.python.display(),
                "no forkserver for this interpreter, so its workers start with exec: {reason}"
            );
            *state = ServerState::Unavailable(Instant::now());
            None
        }
    }
}

/// Why a request did not give a worker.
enum ForkError {
    /// The server exited before answering (it may have gone idle): try another.
    Gone,
    /// It answered, or could not be asked, for this reason.
    Failed(String),
}

impl std::fmt::Display for ForkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gone => f.write_str("the forkserver exited"),
            Self::Failed(reason) => f.write_str(reason),
        }
    }
}

/// A server's requests waiting for their answer.
#[derive(Default)]
struct Requests {
    dead: bool,
    pending: HashMap<u64, mpsc::Sender<Result<Forked, ForkError>>>,
}

struct Server {
    ctl: OwnedFd,
    pid: u32,
    next: AtomicU64,
    requests: Mutex<Requests>,
}

impl Server {
    fn start(key: &Key, deadline: &Deadline) -> Result<Arc<Self>, String> {
        let (ctl, child_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        let child_fd = child_end.as_raw_fd();
        let mut cmd = Command::new(&key.python);
        cmd.args([
            "-m",
            "cjm_worker._forkserver",
            &child_fd.to_string(),
            &IDLE_EXIT.as_secs().to_string(),
        ])
        .env_clear()
        .envs(key.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Out of the host's group: a Ctrl-C meant for the host must not kill it.
        .process_group(0);
        crate::child::inherit_and_die_with_host(&mut cmd, child_fd);
        let mut child = crate::child::spawn_command(cmd)
            .map_err(|e| format!("running {} failed: {e}", key.python.display()))?;
        drop(child_end);
        let pid = child.id();
        let tail = StderrTail::default();
        let stderr_done = child
            .stderr
            .take()
            .map(|s| forward_stderr(s, &key.python, tail.clone()));
        let server = Arc::new(Self {
            ctl,
            pid,
            next: AtomicU64::new(1),
            requests: Mutex::default(),
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = Arc::clone(&server);
        std::thread::Builder::new()
            .name(format!("cjm-forkserver-{pid}"))
            .spawn(move || reader.read_loop(child, &ready_tx))
            .map_err(|e| format!("cannot start its reader thread: {e}"))?;
        match deadline.recv(&ready_rx) {
            Ok(Ok(())) => {
                tracing::debug!(python = %key.python.display(), pid, "forkserver ready");
                Ok(server)
            }
            Ok(Err(mismatch)) => {
                server.kill();
                Err(mismatch)
            }
            Err(e) => {
                server.kill();
                // Let the stderr thread collect why it failed, within reason.
                if let Some(done) = stderr_done {
                    let _ = done.recv_timeout(Duration::from_millis(500));
                }
                let tail = tail.lines().join("\n");
                let what = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("no answer within {:.1}s", deadline.limit().as_secs_f64())
                    }
                    mpsc::RecvTimeoutError::Disconnected => "it exited at once".to_owned(),
                };
                Err(if tail.is_empty() {
                    what
                } else {
                    format!("{what}:\n{tail}")
                })
            }
        }
    }

    fn is_dead(&self) -> bool {
        lock(&self.requests).dead
    }

    fn kill(&self) {
        crate::child::kill_group(self.pid, crate::child::Signal::KILL);
    }

    fn fork(
        &self,
        request: &mut SpawnRequest,
        fds: [BorrowedFd<'_>; FDS_PER_REQUEST],
        deadline: &Deadline,
    ) -> Result<Forked, ForkError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        request.id = id;
        let body = request
            .encode()
            .map_err(|e| ForkError::Failed(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        {
            let mut st = lock(&self.requests);
            if st.dead {
                return Err(ForkError::Gone);
            }
            st.pending.insert(id, tx);
        }
        let forget = || {
            lock(&self.requests).pending.remove(&id);
        };
        if let Err(e) = send(&self.ctl, &body, &fds) {
            forget();
            return Err(match e {
                rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET => ForkError::Gone,
                e => ForkError::Failed(format!("sending the request failed: {e}")),
            });
        }
        deadline.recv(&rx).unwrap_or_else(|_| {
            forget();
            Err(ForkError::Failed(format!(
                "no answer within {:.1}s",
                deadline.limit().as_secs_f64()
            )))
        })
    }

    /// Reads the server's messages until it exits, then reaps it. The greeting's
    /// protocol goes to `ready`: `Ok` when this host speaks it, else why not.
    fn read_loop(&self, mut child: Child, ready: &mpsc::Sender<Result<(), String>>) {
        // Only this thread learns of children and their exits, so it alone holds
        // the senders of their statuses: no race between a fork and its exit.
        let mut exits: HashMap<u32, mpsc::Sender<i32>> = HashMap::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(n) = recv(&self.ctl, &mut buf) {
            match ForkReply::decode(&buf[..n]) {
                Ok(ForkReply::Ready { protocol, .. }) => {
                    let _ = ready.send(check_protocol(protocol.as_deref()));
                }
                Ok(ForkReply::Spawned { id, pid }) => {
                    let (tx, rx) = mpsc::channel();
                    exits.insert(pid, tx);
                    self.answer(id, Ok(Forked { pid, exit: rx }));
                }
                Ok(ForkReply::Failed { id, reason }) => {
                    self.answer(id, Err(ForkError::Failed(reason)));
                }
                Ok(ForkReply::Exited { pid, status }) => {
                    if let Some(tx) = exits.remove(&pid) {
                        let _ = tx.send(status);
                    }
                }
                Err(e) => tracing::warn!(
                    pid = self.pid,
                    "unreadable message from the forkserver ({e}): {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            }
        }
        let pending = {
            let mut st = lock(&self.requests);
            st.dead = true;
            std::mem::take(&mut st.pending)
        };
        for (_, tx) in pending {
            let _ = tx.send(Err(ForkError::Gone));
        }
        // Dropping the senders tells each waiter its worker's status is unknown.
        drop(exits);
        let status = child.wait();
        tracing::debug!(pid = self.pid, ?status, "forkserver exited");
    }

    fn answer(&self, id: u64, outcome: Result<Forked, ForkError>) {
        let tx = lock(&self.requests).pending.remove(&id);
        // A requester that gave up has gone: its worker finds its channel closed
        // and exits.
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether this host can use a server that greets with `protocol`. A server of
/// another protocol (an environment whose cjm-worker is older or newer than the
/// host's) is not an error: its workers start with exec, which checks its own
/// protocol in the worker's greeting and works with either.
fn check_protocol(protocol: Option<&str>) -> Result<(), String> {
    match protocol {
        Some(p) if p == FORK_PROTOCOL => Ok(()),
        theirs => Err(format!(
            "it speaks {}, this host speaks {FORK_PROTOCOL} (its environment's cjm-worker does \
             not match this host's; reinstall the plugin to fork its workers again)",
            theirs.unwrap_or("an unversioned protocol, from before cjm-fork/1")
        )),
    }
}

fn send(
    ctl: &OwnedFd,
    body: &[u8],
    fds: &[BorrowedFd<'_>; FDS_PER_REQUEST],
) -> rustix::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_REQUEST))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    anc.push(SendAncillaryMessage::ScmRights(fds));
    loop {
        match rustix::net::sendmsg(ctl, &[IoSlice::new(body)], &mut anc, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// One message from the server; `None` once it has closed its end.
fn recv(ctl: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    loop {
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        match rustix::net::recvmsg(ctl.as_fd(), &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) if m.bytes == 0 => return None,
            Ok(m) => return Some(m.bytes),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
}

/// Copies the server's stderr to the host's log; keeps the last lines for a
/// start-up failure. The returned receiver is told when the stream ends.
fn forward_stderr(
    stderr: std::process::ChildStderr,
    python: &Path,
    tail: StderrTail,
) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel();
    let python = python.display().to_string();
    let _ = std::thread::Builder::new()
        .name("cjm-forkserver-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                tracing::warn!(python = %python, "forkserver: {line}");
                tail.push(line);
            }
            let _ = done_tx.send(());
        });
    done_rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_of_another_protocol_is_refused_with_both_versions_named() {
        assert_eq!(check_protocol(Some(FORK_PROTOCOL)), Ok(()));
        let other = check_protocol(Some("cjm-fork/0")).unwrap_err();
        assert!(
            other.contains("it speaks cjm-fork/0, this host speaks cjm-fork/1"),
            "{other}"
        );
        let old = check_protocol(None).unwrap_err();
        assert!(
            old.contains("unversioned") && old.contains("cjm-fork/1"),
            "{old}"
        );
    }
}
