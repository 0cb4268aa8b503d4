//! One running worker process: its channel, its threads, its pending calls.
//!
//! Threads per process, each owned and joined or detached deliberately:
//! - the **reader** receives frames and completes calls; it exits on EOF;
//! - the **waiter** reaps the child; its exit is the single source of truth for
//!   death, recorded once, and every pending call fails with it;
//! - two **log** threads copy stdout and stderr to the log file and to events.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use cjm_core::{CancelPhase, JobErrorContext, PluginError, PluginRef, RaisedException, WorkerExit};
use cjm_proto::{
    Buffer, Call, Channel, DecodeCtx, Frame, Hello, Kind, Message, PROTOCOL, PeerSegments,
    ReleaseSink, Segment, SegmentId, Segments, ShmPool, Side, Value,
};

use crate::cgroup::WorkerCgroup;
use crate::completion::Completion;
use crate::error::{Death, WorkerError};
use crate::event::{Event, EventHub};
use crate::forkserver::{self, Forked};
use crate::spec::{StartMethod, WorkerSpec};

/// Inline bytes at least this large are moved into shared memory before sending.
pub(crate) const SHM_THRESHOLD: usize = 64 * 1024;

const STDERR_TAIL: usize = 20;

pub(crate) type Outcome = Result<Value, WorkerError>;

pub(crate) enum Slot {
    Call(Arc<Completion<Outcome>>),
    Stream(tokio::sync::mpsc::UnboundedSender<Result<Value, WorkerError>>),
}

#[derive(Default)]
struct Pending {
    slots: HashMap<u64, Slot>,
    /// Set once the worker is dead; later calls fail at once with it.
    dead: Option<Death>,
    /// A call whose cancellation killed the worker: it fails as cancelled.
    killed_for_cancel: Option<u64>,
}

struct ChannelRelease(Arc<Channel>);

impl ReleaseSink for ChannelRelease {
    fn release(&self, id: SegmentId, receipts: u32) {
        let msg = Message::Release {
            segment: id,
            receipts,
        };
        // A dead worker needs no release: its segments died with it.
        if let Ok(w) = msg.encode(Side::Host) {
            let _ = self.0.send(Kind::Release, 0, &w);
        }
    }
}

struct HostSegments<'a> {
    pool: &'a ShmPool,
    peers: &'a PeerSegments,
    release: &'a Arc<dyn ReleaseSink>,
}

impl Segments for HostSegments<'_> {
    fn resolve(
        &self,
        id: SegmentId,
        fd: Option<std::os::fd::OwnedFd>,
    ) -> Result<Arc<Segment>, cjm_proto::ProtoError> {
        match id.owner() {
            // Only segments actually lent to the worker may come back: a segment
            // the host is still filling must never be aliased by a worker's reply.
            Side::Host => self.pool.get(id).filter(|s| s.outstanding() > 0).ok_or(
                cjm_proto::ProtoError::Malformed {
                    what: "worker referenced a host segment it was not lent",
                    offset: 0,
                },
            ),
            Side::Worker => self.peers.resolve(id, fd, self.release),
        }
    }
}

/// One live (or dead) worker process.
pub(crate) struct Process {
    pub(crate) plugin: String,
    pub(crate) pid: u32,
    pub(crate) hello: Hello,
    pub(crate) info: Value,
    channel: Arc<Channel>,
    next_id: AtomicU64,
    pending: Mutex<Pending>,
    gone: Condvar,
    /// Threads in `wait_settled`; `take_slot` notifies `gone` only when there are some.
    settle_waiters: std::sync::atomic::AtomicUsize,
    pub(crate) pool: ShmPool,
    peers: PeerSegments,
    release: Arc<dyn ReleaseSink>,
    killing: AtomicBool,
    exited: Completion<Death>,
    death: OnceLock<Death>,
    /// The memory cgroup's OOM-kill count when the worker started.
    oom_kills_at_start: Option<u64>,
    /// Where the worker's output is logged.
    log_file: Option<std::path::PathBuf>,
    /// The worker's own cgroup, where the machine gives cjm one.
    cgroup: Option<WorkerCgroup>,
    pub(crate) events: EventHub,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

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
    spawner()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(job)
        .map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// The worker's whole environment: the allow-list, then what cjm sets, then the
/// spec's variables; a later value of a name replaces an earlier one.
pub(crate) fn worker_env(spec: &WorkerSpec) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: &str, v: OsString| {
        let k = OsString::from(k);
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for key in cjm_core::INHERITED_ENV {
        if let Some(v) = std::env::var_os(key) {
            set(key, v);
        }
    }
    // Prints must reach the log as they happen, not when a buffer fills.
    set("PYTHONUNBUFFERED", "1".into());
    if !spec.python_path.is_empty() {
        set(
            "PYTHONPATH",
            std::env::join_paths(&spec.python_path).unwrap_or_default(),
        );
    }
    if let Some(d) = &spec.data_dir {
        set("CJM_DATA_DIR", d.into());
    }
    if let Some(d) = &spec.models_dir {
        set("CJM_MODELS_DIR", d.into());
    }
    for (k, v) in &spec.env {
        set(k, v.into());
    }
    env
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

/// A started worker process, whoever its parent is.
enum ChildProc {
    /// Executed by this host, which reaps it.
    Exec(Child),
    /// Forked by a forkserver, which reaps it and reports its status.
    Forked(Forked),
}

type Stream = Box<dyn std::io::Read + Send>;

impl ChildProc {
    fn id(&self) -> u32 {
        match self {
            Self::Exec(c) => c.id(),
            Self::Forked(f) => f.pid,
        }
    }

    /// The exit, if it comes within `limit` (a worker that closed its channel is
    /// usually exiting); `None` when it does not, or cannot be known.
    fn wait_for(&mut self, limit: Duration) -> Option<WorkerExit> {
        let deadline = Instant::now() + limit;
        let status = match self {
            Self::Exec(c) => loop {
                match c.try_wait() {
                    Ok(Some(s)) => break s,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Ok(None) | Err(_) => return None,
                }
            },
            Self::Forked(f) => std::process::ExitStatus::from_raw(
                f.exit
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok()?,
            ),
        };
        Some(match status.signal() {
            Some(sig) => WorkerExit::Signal(sig),
            None => WorkerExit::Code(status.code().unwrap_or(-1)),
        })
    }

    /// Waits for the exit; `None` when its status cannot be known.
    fn wait(&mut self) -> Option<WorkerExit> {
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
        Some(match status.signal() {
            Some(sig) => WorkerExit::Signal(sig),
            None => WorkerExit::Code(status.code().unwrap_or(-1)),
        })
    }
}

/// Starts the worker's process: forked by its interpreter's forkserver when the
/// spec asks for one and one can be had, executed otherwise.
fn start_child(
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

impl Process {
    #[expect(
        clippy::too_many_lines,
        reason = "spawn, handshake and thread start-up read best as one sequence"
    )]
    pub(crate) fn spawn(spec: &WorkerSpec) -> Result<Arc<Self>, WorkerError> {
        let plugin = spec.plugin.clone();
        let (host_end, child_end) = Channel::pair().map_err(|e| WorkerError::Protocol {
            plugin: plugin.clone(),
            source: e,
        })?;
        let oom_kills_at_start = crate::oom::cgroup_oom_kills();
        let cgroup = WorkerCgroup::create();
        let spawned = start_child(spec, &child_end, cgroup.as_ref());
        drop(child_end);
        let (mut child, streams) = spawned.map_err(|source| WorkerError::Spawn {
            plugin: plugin.clone(),
            python: spec.python.clone(),
            source,
        })?;
        let pid = child.id();
        let channel = Arc::new(host_end);
        let events = EventHub::default();
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let log = open_log(spec);
        let logs_done = start_log_threads(streams, log, &events, &stderr_tail, &plugin);

        // Handshake: Hello, then Ready or LoadFailed, within the start timeout. The
        // reader is not running yet, so frames are read here directly, on a helper
        // thread that we can abandon when the timeout fires.
        let (htx, hrx) = mpsc::channel();
        let hch = Arc::clone(&channel);
        let _ = std::thread::Builder::new()
            .name("cjm-handshake".into())
            .spawn(move || {
                let _ = htx.send(handshake(&hch));
            });
        let fail = |reason: String, child: &mut ChildProc, exiting: bool| {
            // A worker that closed its channel is on its way out: its own status
            // says why (`sys.exit(2)` in the plugin's `__init__`), not our kill.
            let own = if exiting {
                child.wait_for(Duration::from_secs(2))
            } else {
                None
            };
            // SAFETY: signalling the process group we created (its leader may be
            // reaped already; the rest of the group still goes).
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            channel.shutdown();
            let exit = match own {
                Some(exit) => Some(exit),
                None => child.wait(),
            }
            .filter(|_| exiting);
            drain_logs(&logs_done);
            let tail = stderr_tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect();
            WorkerError::Handshake {
                plugin: plugin.clone(),
                reason,
                exit,
                stderr_tail: tail,
            }
        };
        let Ok(outcome) = hrx.recv_timeout(spec.start_timeout) else {
            return Err(fail(
                format!("no answer within {:.1}s", spec.start_timeout.as_secs_f64()),
                &mut child,
                false,
            ));
        };
        let (hello, info) = match outcome {
            Ok(Handshake::Ready(h, info)) => (h, info),
            Ok(Handshake::LoadFailed(v)) => {
                let raised = raised_from_value(&v);
                let job_error = raised.to_job_error(
                    &JobErrorContext::new(std::time::SystemTime::now()).with_plugin(plugin.clone()),
                );
                let _ = fail(String::new(), &mut child, false);
                return Err(WorkerError::Load {
                    plugin,
                    error: Box::new(job_error),
                });
            }
            Err(reason) => {
                let exiting = reason == EXITED_BEFORE_GREETING;
                return Err(fail(reason, &mut child, exiting));
            }
        };
        let release: Arc<dyn ReleaseSink> = Arc::new(ChannelRelease(Arc::clone(&channel)));
        let proc = Arc::new(Self {
            plugin: plugin.clone(),
            pid,
            hello,
            info,
            channel,
            next_id: AtomicU64::new(1),
            pending: Mutex::default(),
            gone: Condvar::new(),
            settle_waiters: std::sync::atomic::AtomicUsize::new(0),
            pool: ShmPool::new(Side::Host, 1 << 30),
            peers: PeerSegments::default(),
            release,
            killing: AtomicBool::new(false),
            exited: Completion::new(),
            death: OnceLock::new(),
            oom_kills_at_start,
            log_file: spec.log_file.clone(),
            cgroup,
            events,
            threads: Mutex::default(),
        });
        // Share the tail the log thread fills.
        let tail_src = stderr_tail;
        let reader = Arc::clone(&proc);
        let reader_handle = std::thread::Builder::new()
            .name(format!("cjm-reader-{pid}"))
            .spawn(move || reader.read_loop())
            .map_err(|source| WorkerError::Spawn {
                plugin: plugin.clone(),
                python: spec.python.clone(),
                source,
            })?;
        let waiter = Arc::clone(&proc);
        let waiter_handle = std::thread::Builder::new()
            .name(format!("cjm-waiter-{pid}"))
            .spawn(move || waiter.wait_loop(child, &tail_src, &logs_done))
            .map_err(|source| WorkerError::Spawn {
                plugin,
                python: spec.python.clone(),
                source,
            })?;
        proc.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([reader_handle, waiter_handle]);
        Ok(proc)
    }

    fn plugin_ref(&self) -> PluginRef {
        PluginRef::new(self.plugin.clone())
    }

    /// Registers a slot and sends the call.
    pub(crate) fn start(&self, call: &Call, slot: Slot) -> Result<u64, WorkerError> {
        let large = call
            .args
            .iter()
            .chain(call.kwargs.iter().map(|(_, v)| v))
            .any(has_large_inline);
        let body = if large {
            let mut prepared = call.clone();
            for v in &mut prepared.args {
                self.share_large(v)?;
            }
            for (_, v) in &mut prepared.kwargs {
                self.share_large(v)?;
            }
            prepared.encode(Side::Host)
        } else {
            call.encode(Side::Host)
        }
        .map_err(|e| self.proto(e))?;
        let id = self.register(slot)?;
        if let Err(e) = self.channel.send(Kind::Call, id, &body) {
            self.take_slot(id);
            return Err(self.dead_or(e));
        }
        Ok(id)
    }

    /// Moves large inline byte buffers into shared memory.
    fn share_large(&self, v: &mut Value) -> Result<(), WorkerError> {
        match v {
            Value::Bytes(b) => {
                if let Buffer::Inline(bytes) = b
                    && bytes.len() >= SHM_THRESHOLD
                {
                    *b = self.copy_to_shm(bytes)?;
                }
            }
            Value::Array(a) => {
                if let Buffer::Inline(bytes) = &a.data
                    && bytes.len() >= SHM_THRESHOLD
                {
                    a.data = self.copy_to_shm(bytes)?;
                }
            }
            Value::List(items) => {
                for i in items {
                    self.share_large(i)?;
                }
            }
            Value::Map(pairs) => {
                for (_, i) in pairs {
                    self.share_large(i)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn copy_to_shm(&self, bytes: &[u8]) -> Result<Buffer, WorkerError> {
        let mut buf = self.pool.alloc(bytes.len()).map_err(|e| self.proto(e))?;
        buf.as_mut_slice().copy_from_slice(bytes);
        Ok(Buffer::Shm(buf.freeze()))
    }

    fn proto(&self, source: cjm_proto::ProtoError) -> WorkerError {
        WorkerError::Protocol {
            plugin: self.plugin.clone(),
            source,
        }
    }

    fn dead_or(&self, e: cjm_proto::ProtoError) -> WorkerError {
        match self.exited.wait(Some(Duration::from_secs(1))) {
            Some(death) => {
                self.exited.complete(death.clone());
                WorkerError::Died {
                    plugin: self.plugin.clone(),
                    death,
                }
            }
            None => self.proto(e),
        }
    }

    pub(crate) fn send_control(&self, kind: Kind, id: u64) -> Result<(), WorkerError> {
        self.channel
            .send_empty(kind, id)
            .map_err(|e| self.dead_or(e))
    }

    fn take_slot(&self, id: u64) -> Option<Slot> {
        let slot = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .remove(&id);
        if slot.is_some() && self.settle_waiters.load(Ordering::Acquire) > 0 {
            self.gone.notify_all();
        }
        slot
    }

    /// Whether call `id` is still waiting for its outcome.
    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .contains_key(&id)
    }

    /// Waits until call `id` has its outcome, or `timeout` passes; true if it has.
    pub(crate) fn wait_settled(&self, id: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted under the lock, so `take_slot` (which removes under the same lock)
        // either sees this waiter or ran before the check below.
        self.settle_waiters.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.settle_waiters);
        while p.slots.contains_key(&id) {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                return false;
            };
            p = self
                .gone
                .wait_timeout(p, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn read_loop(&self) {
        let segs = HostSegments {
            pool: &self.pool,
            peers: &self.peers,
            release: &self.release,
        };
        loop {
            let frame = match self.channel.recv() {
                Ok(Some(f)) => f,
                Ok(None) | Err(cjm_proto::ProtoError::Io { .. }) => return,
                Err(e) => {
                    tracing::warn!(plugin = %self.plugin, error = %e, "dropped a malformed frame from the worker");
                    continue;
                }
            };
            self.handle(frame, &segs);
        }
    }

    fn handle(&self, frame: Frame, segs: &HostSegments<'_>) {
        let Frame {
            header,
            body,
            mut fds,
        } = frame;
        let id = header.id;
        let mut ctx = DecodeCtx {
            fds: &mut fds,
            segments: segs,
        };
        let msg = match Message::decode(header.kind, &body, &mut ctx) {
            Ok(m) => m,
            Err(e) => {
                // The call this frame answers fails; other calls go on.
                if let Some(slot) = self.take_slot(id) {
                    complete(slot, Err(self.proto(e)));
                }
                return;
            }
        };
        match msg {
            Message::Result(v) | Message::Stats(v) => {
                if let Some(slot) = self.take_slot(id) {
                    complete(slot, Ok(v));
                }
            }
            Message::Pong => {
                if let Some(slot) = self.take_slot(id) {
                    complete(slot, Ok(Value::None));
                }
            }
            Message::Error(v) => {
                if let Some(slot) = self.take_slot(id) {
                    complete(slot, Err(self.raised(&v)));
                }
            }
            Message::Chunk(v) => {
                let p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(Slot::Stream(tx)) = p.slots.get(&id) {
                    let _ = tx.send(Ok(v));
                }
            }
            Message::End => {
                // Dropping the sender ends the stream.
                self.take_slot(id);
            }
            Message::Progress { progress, message } => self.events.emit(&Event::Progress {
                call: id,
                progress,
                message,
            }),
            Message::Usage(v) => self.events.emit(&Event::Usage { call: id, usage: v }),
            Message::Log(r) => {
                tracing::info!(plugin = %self.plugin, logger = %r.logger, level = r.level, "{}", r.message);
                self.events.emit(&Event::Log {
                    call: id,
                    level: r.level,
                    logger: r.logger,
                    message: r.message,
                });
            }
            Message::CancelAck { phase } => self.events.emit(&Event::CancelAck { call: id, phase }),
            Message::Release { segment, receipts } => self.pool.released(segment, receipts),
            other => {
                tracing::warn!(plugin = %self.plugin, kind = other.kind().name(), "unexpected frame from the worker");
            }
        }
    }

    /// A worker's `Error` body as a typed error.
    fn raised(&self, v: &Value) -> WorkerError {
        let raised = raised_from_value(v);
        let phase = v.get("cancel_phase").and_then(Value::as_str);
        let job_error = raised.to_job_error(
            &JobErrorContext::new(std::time::SystemTime::now()).with_plugin(self.plugin.clone()),
        );
        let cancelled_class = raised
            .mro
            .iter()
            .any(|c| c.ends_with("PluginCancelledError"));
        if job_error.is_cancellation() || (phase.is_some() && cancelled_class) {
            let phase = match phase {
                Some("interrupted") => CancelPhase::Interrupted,
                _ => CancelPhase::Cooperative,
            };
            return WorkerError::Plugin(PluginError::Cancelled {
                plugin: self.plugin_ref(),
                phase,
            });
        }
        WorkerError::Plugin(PluginError::Raised(Box::new(job_error)))
    }

    fn wait_loop(
        &self,
        mut child: ChildProc,
        tail: &Mutex<VecDeque<String>>,
        logs_done: &mpsc::Receiver<()>,
    ) {
        let exit = child.wait();
        // What the worker started and left behind (a `setsid` grandchild) goes too.
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        let killed_by_host = self.killing.load(Ordering::Acquire);
        drain_logs(logs_done);
        let oom_evidence = (!killed_by_host && exit == Some(WorkerExit::Signal(libc::SIGKILL)))
            .then(|| crate::oom::evidence(self.pid, self.oom_kills_at_start))
            .flatten();
        let death = Death {
            exit,
            probable_oom: oom_evidence.is_some(),
            oom_evidence,
            log_file: self.log_file.clone(),
            killed_by_host,
            stderr_tail: tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
        };
        let _ = self.death.set(death.clone());
        let (slots, killed_for_cancel) = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            p.dead = Some(death.clone());
            (std::mem::take(&mut p.slots), p.killed_for_cancel)
        };
        self.gone.notify_all();
        for (id, slot) in slots {
            let err = if killed_for_cancel == Some(id) {
                WorkerError::Plugin(PluginError::Cancelled {
                    plugin: self.plugin_ref(),
                    phase: CancelPhase::Killed,
                })
            } else {
                WorkerError::Died {
                    plugin: self.plugin.clone(),
                    death: death.clone(),
                }
            };
            complete(slot, Err(err));
        }
        // Wake the reader if a leaked descendant keeps the worker's end open.
        self.channel.shutdown();
        self.pool.forget_peer();
        self.events.emit(&Event::Exited {
            death: death.clone(),
        });
        self.exited.complete(death);
    }

    /// Marks the coming exit as the host's doing.
    pub(crate) fn expect_exit(&self) {
        self.killing.store(true, Ordering::Release);
    }

    /// Kills the worker's process group (the worker and everything it started).
    pub(crate) fn kill(&self) {
        self.killing.store(true, Ordering::Release);
        if self.death.get().is_none() {
            // SAFETY: signalling the process group this host created; if it is
            // already gone the call fails harmlessly.
            unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        }
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
    }

    /// Kills the worker because cancelling call `id` needed it.
    pub(crate) fn kill_for_cancel(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .killed_for_cancel = Some(id);
        self.kill();
    }

    pub(crate) fn terminate(&self) {
        self.killing.store(true, Ordering::Release);
        if self.death.get().is_none() {
            // SAFETY: as in `kill`.
            unsafe { libc::kill(-(self.pid as i32), libc::SIGTERM) };
        }
    }

    /// Waits for the process to exit.
    pub(crate) fn wait_exit(&self, timeout: Option<Duration>) -> Option<Death> {
        if let Some(d) = self.death.get() {
            return Some(d.clone());
        }
        let d = self.exited.wait(timeout)?;
        // Put it back for other waiters.
        self.exited.complete(d.clone());
        Some(d)
    }

    /// Joins the reader and waiter once the worker is dead, so that everything they
    /// hold (the channel, mappings) is released by the time a stop returns.
    pub(crate) fn join_threads(&self) {
        if self.death.get().is_none() {
            return;
        }
        let handles =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let me = std::thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }

    /// The death, if the worker is dead.
    pub(crate) fn death(&self) -> Option<Death> {
        self.death.get().cloned()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Nothing outlives its owner: a dropped handle takes its worker down.
        self.kill();
    }
}

/// Whether a value holds inline bytes large enough to move into shared memory.
fn has_large_inline(v: &Value) -> bool {
    match v {
        Value::Bytes(Buffer::Inline(b)) => b.len() >= SHM_THRESHOLD,
        Value::Array(a) => matches!(&a.data, Buffer::Inline(b) if b.len() >= SHM_THRESHOLD),
        Value::List(items) => items.iter().any(has_large_inline),
        Value::Map(pairs) => pairs.iter().any(|(_, v)| has_large_inline(v)),
        _ => false,
    }
}

/// Decrements a waiter count when a wait ends, however it ends.
struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn complete(slot: Slot, outcome: Outcome) {
    match slot {
        Slot::Call(c) => c.complete(outcome),
        Slot::Stream(tx) => {
            if let Err(e) = outcome {
                let _ = tx.send(Err(e));
            }
        }
    }
}

pub(crate) fn raised_from_value(v: &Value) -> RaisedException {
    serde_json::from_value::<RaisedException>(v.to_json()).unwrap_or_else(|e| {
        RaisedException::new(
            "builtins.RuntimeError",
            format!("the worker reported an exception the host could not read: {e}"),
            "RuntimeError()",
        )
    })
}

enum Handshake {
    Ready(Hello, Value),
    LoadFailed(Value),
}

/// The handshake's reason when the worker closed its channel before greeting.
const EXITED_BEFORE_GREETING: &str = "it exited before greeting the host";

fn handshake(ch: &Channel) -> Result<Handshake, String> {
    let next = || -> Result<Message, String> {
        let frame = ch
            .recv()
            .map_err(|e| format!("reading its greeting failed: {e}"))?
            .ok_or_else(|| EXITED_BEFORE_GREETING.to_owned())?;
        let mut fds = frame.fds;
        let mut ctx = DecodeCtx {
            fds: &mut fds,
            segments: &cjm_proto::NoSegments,
        };
        Message::decode(frame.header.kind, &frame.body, &mut ctx)
            .map_err(|e| format!("its greeting was malformed: {e}"))
    };
    let hello = match next()? {
        Message::Hello(h) => h,
        other => {
            return Err(format!(
                "it sent {} before its greeting",
                other.kind().name()
            ));
        }
    };
    if hello.protocol != PROTOCOL {
        return Err(format!(
            "protocol mismatch: this host speaks {PROTOCOL}, the worker's cjm-worker {} speaks {}",
            hello.runtime, hello.protocol
        ));
    }
    match next()? {
        Message::Ready(info) => Ok(Handshake::Ready(hello, info)),
        Message::LoadFailed(v) => Ok(Handshake::LoadFailed(v)),
        other => Err(format!("it sent {} instead of ready", other.kind().name())),
    }
}

fn open_log(spec: &WorkerSpec) -> Option<LogFile> {
    let path = spec.log_file.as_ref()?;
    if let Some(dir) = path.parent() {
        let _ = fs_err::create_dir_all(dir);
    }
    let mut log = LogFile::open(path.clone())
        .map_err(|e| tracing::warn!(error = %e, "cannot open the worker's log file"))
        .ok()?;
    log.write(format!("\n--- Starting {} at {} ---\n", spec.plugin, ctime_now()).as_bytes());
    Some(log)
}

/// A worker's log past this size is rotated: renamed to `<name>.log.1`
/// (replacing the one before) and started afresh, so one plugin's log takes at
/// most about twice this on disk and the newest output is always kept.
pub const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// How often (in bytes written) the file's real size is looked at: several
/// workers of one plugin append to the same file.
const LOG_CHECK_EVERY: u64 = 64 * 1024;

/// The longest piece of one line handled at once; a longer line is written in
/// pieces, so a worker that prints without newlines cannot make the host buffer
/// without bound.
const LOG_LINE_PIECE: u64 = 64 * 1024;

/// An appended log file that rotates by size.
struct LogFile {
    path: PathBuf,
    file: fs_err::File,
    since_check: u64,
}

impl LogFile {
    fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = Self::append(&path)?;
        let mut log = Self {
            path,
            file,
            // Look at the size before the first write.
            since_check: LOG_CHECK_EVERY,
        };
        log.check();
        Ok(log)
    }

    fn append(path: &Path) -> std::io::Result<fs_err::File> {
        fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    fn write(&mut self, bytes: &[u8]) {
        let _ = self.file.write_all(bytes);
        self.since_check += bytes.len() as u64;
        if self.since_check >= LOG_CHECK_EVERY {
            self.check();
        }
    }

    /// Rotates the file when it is too large, and follows a rotation another
    /// worker of the plugin did.
    fn check(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.since_check = 0;
        let (Ok(mine), at_path) = (self.file.metadata(), fs_err::metadata(&self.path)) else {
            return;
        };
        let rotated_by_another =
            at_path.is_ok_and(|m| m.ino() != mine.ino() || m.dev() != mine.dev());
        if rotated_by_another {
            if let Ok(f) = Self::append(&self.path) {
                self.file = f;
            }
            return;
        }
        if mine.len() <= LOG_ROTATE_BYTES {
            return;
        }
        let mut old = self.path.as_os_str().to_owned();
        old.push(".1");
        if fs_err::rename(&self.path, PathBuf::from(&old)).is_ok()
            && let Ok(mut f) = Self::append(&self.path)
        {
            let _ = writeln!(
                f,
                "--- log rotated at {} after {} bytes; the part before is in {} ---",
                ctime_now(),
                mine.len(),
                Path::new(&old).display()
            );
            self.file = f;
        }
    }
}

/// The reference's header timestamp (`time.ctime()`), in UTC.
fn ctime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cjm_core::isoformat_utc(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

fn start_log_threads(
    streams: [Option<Stream>; 2],
    log: Option<LogFile>,
    events: &EventHub,
    tail: &Arc<Mutex<VecDeque<String>>>,
    plugin: &str,
) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel();
    let log = log.map(|f| Arc::new(Mutex::new(f)));
    let [stdout, stderr] = streams;
    for (stream, name) in [(stdout, "stdout"), (stderr, "stderr")] {
        let Some(stream) = stream else { continue };
        let log = log.clone();
        let events = events.clone();
        let tail = Arc::clone(tail);
        let plugin = plugin.to_owned();
        let done = done_tx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("cjm-{name}"))
            .spawn(move || {
                let _done = Finished(done);
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match (&mut reader)
                        .take(LOG_LINE_PIECE)
                        .read_until(b'\n', &mut line)
                    {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if let Some(log) = &log {
                        let mut f = log.lock().unwrap_or_else(PoisonError::into_inner);
                        f.write(&line);
                    }
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if name == "stderr" {
                        let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
                        if t.len() == STDERR_TAIL {
                            t.pop_front();
                        }
                        t.push_back(text.clone());
                    }
                    tracing::debug!(plugin = %plugin, stream = name, "{text}");
                    events.emit(&Event::Output {
                        stream: name,
                        line: text,
                    });
                }
            });
    }
    done_rx
}

/// Lets the log threads drain what the worker wrote before it died, so the stderr
/// tail explains the death. A descendant that keeps the pipes open would hold them
/// forever, so the wait is bounded.
fn drain_logs(logs_done: &mpsc::Receiver<()>) {
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if logs_done.recv_timeout(left).is_err() {
            break;
        }
    }
}

/// Tells the waiter a log thread has drained its pipe, however the thread ends.
struct Finished(mpsc::Sender<()>);

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Process {
    /// Registers a slot for a control request (ping, stats) and sends it.
    pub(crate) fn start_control(&self, kind: Kind, slot: Slot) -> Result<u64, WorkerError> {
        let id = self.register(slot)?;
        if let Err(e) = self.send_control(kind, id) {
            self.take_slot(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Gives a request its id and slot, unless the worker is already dead.
    fn register(&self, slot: Slot) -> Result<u64, WorkerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(death) = &p.dead {
            return Err(WorkerError::Died {
                plugin: self.plugin.clone(),
                death: death.clone(),
            });
        }
        p.slots.insert(id, slot);
        Ok(id)
    }

    /// Drops the slot of a request nobody waits for any more.
    pub(crate) fn forget(&self, id: u64) {
        self.take_slot(id);
    }
}
