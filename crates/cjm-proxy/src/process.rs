//! One running worker process: its channel, its threads, its pending calls.
//!
//! Threads per process, each owned and joined or detached deliberately:
//! - the **reader** receives frames and completes calls; it exits on EOF;
//! - the **waiter** reaps the child; its exit is the single source of truth for
//!   death, recorded once, and every pending call fails with it;
//! - two **log** threads copy stdout and stderr to the log file and to events
//!   (`logs.rs`).
//!
//! How the child is started and signalled is in `child.rs`, its environment in
//! `env.rs`, its greeting in `handshake.rs`, and the table of requests it owes an
//! answer in `pending.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use cjm_core::{
    CancelPhase, JobErrorContext, PluginError, PluginRef, RaisedException, SharedClock, WorkerExit,
};
use cjm_proto::{
    Call, Channel, DecodeCtx, Frame, Hello, Kind, Message, PeerSegments, ReleaseSink, ShmPool,
    Side, Value,
};

use crate::cgroup::WorkerCgroup;
use crate::child::{self, ChildProc, Signal};
use crate::completion::Completion;
use crate::deadline::Deadline;
use crate::error::{Death, WorkerError};
use crate::event::{Event, EventHub};
use crate::handshake::{self, Handshake};
use crate::lock::lock;
use crate::logs::{self, StderrTail};
use crate::pending::{Pending, ReplyTo};
use crate::shared::{self, ChannelRelease, HostSegments};
use crate::spec::WorkerSpec;

/// One live (or dead) worker process.
pub(crate) struct Process {
    pub(crate) plugin: String,
    pub(crate) pid: u32,
    pub(crate) hello: Hello,
    pub(crate) info: Value,
    channel: Arc<Channel>,
    pending: Pending,
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
    /// The spec's clock: wall stamps and the deadlines of starting, stopping and
    /// cancelling.
    clock: SharedClock,
}

impl Process {
    /// Starts the worker, waits for its greeting within the start timeout, then
    /// starts its reader and waiter threads.
    pub(crate) fn spawn(spec: &WorkerSpec) -> Result<Arc<Self>, WorkerError> {
        let plugin = spec.plugin.clone();
        let (host_end, child_end) = Channel::pair().map_err(|e| WorkerError::Protocol {
            plugin: plugin.clone(),
            source: e,
        })?;
        let oom_kills_at_start = crate::oom::cgroup_oom_kills();
        let cgroup = WorkerCgroup::create(&spec.plugin, spec.memory_limit_bytes);
        let spawned = child::start_child(spec, &child_end, cgroup.as_ref());
        drop(child_end);
        let (mut child, streams) = spawned.map_err(|source| WorkerError::Spawn {
            plugin: plugin.clone(),
            python: spec.python.clone(),
            source,
        })?;
        let pid = child.id();
        let channel = Arc::new(host_end);
        let events = EventHub::default();
        let stderr_tail = StderrTail::default();
        let log = logs::open_log(spec);
        let logs_done = logs::start_log_threads(streams, log, &events, &stderr_tail, &plugin);
        let start_deadline = Deadline::after(&spec.clock, spec.start_timeout);
        let (hello, info) = match handshake::run(&channel, &start_deadline) {
            Ok(Handshake::Ready(h, info)) => (h, info),
            Ok(Handshake::LoadFailed(v)) => {
                let raised = raised_from_value(&v);
                let job_error = raised.to_job_error(
                    &JobErrorContext::new(spec.clock.wall()).with_plugin(plugin.clone()),
                );
                let failure = handshake::Failure {
                    reason: String::new(),
                    exited: false,
                };
                let _ = abandon(
                    spec,
                    failure,
                    &mut child,
                    &channel,
                    &logs_done,
                    &stderr_tail,
                );
                return Err(WorkerError::Load {
                    plugin,
                    error: Box::new(job_error),
                });
            }
            Err(failure) => {
                return Err(abandon(
                    spec,
                    failure,
                    &mut child,
                    &channel,
                    &logs_done,
                    &stderr_tail,
                ));
            }
        };
        let release: Arc<dyn ReleaseSink> = Arc::new(ChannelRelease(Arc::clone(&channel)));
        let proc = Arc::new(Self {
            plugin: plugin.clone(),
            pid,
            hello,
            info,
            channel,
            pending: Pending::new(),
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
            clock: SharedClock::clone(&spec.clock),
        });

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
            .spawn(move || waiter.wait_loop(child, &stderr_tail, &logs_done))
            .map_err(|source| WorkerError::Spawn {
                plugin,
                python: spec.python.clone(),
                source,
            })?;
        lock(&proc.threads).extend([reader_handle, waiter_handle]);
        Ok(proc)
    }

    fn plugin_ref(&self) -> PluginRef {
        PluginRef::new(self.plugin.clone())
    }

    /// Registers the call and sends it.
    pub(crate) fn start(&self, call: &Call, reply: ReplyTo) -> Result<u64, WorkerError> {
        let body = match shared::with_large_bytes_shared(call, &self.pool) {
            Ok(Some(prepared)) => prepared.encode(Side::Host),
            Ok(None) => call.encode(Side::Host),
            Err(e) => Err(e),
        }
        .map_err(|e| self.proto(e))?;
        let id = self.register(reply)?;
        if let Err(e) = self.channel.send(Kind::Call, id, &body) {
            self.pending.take(id);
            return Err(self.dead_or(e));
        }
        Ok(id)
    }

    /// Registers a control request (ping, stats) and sends it.
    pub(crate) fn start_control(&self, kind: Kind, reply: ReplyTo) -> Result<u64, WorkerError> {
        let id = self.register(reply)?;
        if let Err(e) = self.send_control(kind, id) {
            self.pending.take(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Gives a request its id, unless the worker is already dead.
    fn register(&self, reply: ReplyTo) -> Result<u64, WorkerError> {
        self.pending
            .register(reply)
            .map_err(|death| WorkerError::Died {
                plugin: self.plugin.clone(),
                death,
            })
    }

    /// Drops a request nobody waits for any more.
    pub(crate) fn forget(&self, id: u64) {
        self.pending.take(id);
    }

    fn proto(&self, source: cjm_proto::ProtoError) -> WorkerError {
        WorkerError::Protocol {
            plugin: self.plugin.clone(),
            source,
        }
    }

    /// A failed send as the worker's death, when it is dying; as `e` otherwise.
    fn dead_or(&self, e: cjm_proto::ProtoError) -> WorkerError {
        match self.wait_exit(Some(&Deadline::real(Duration::from_secs(1)))) {
            Some(death) => WorkerError::Died {
                plugin: self.plugin.clone(),
                death,
            },
            None => self.proto(e),
        }
    }

    pub(crate) fn send_control(&self, kind: Kind, id: u64) -> Result<(), WorkerError> {
        self.channel
            .send_empty(kind, id)
            .map_err(|e| self.dead_or(e))
    }

    /// Whether call `id` is still waiting for its outcome.
    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.pending.is_pending(id)
    }

    /// Waits until call `id` has its outcome, or `deadline` passes; true if it has.
    pub(crate) fn wait_settled(&self, id: u64, deadline: &Deadline) -> bool {
        self.pending.wait_settled(id, deadline)
    }

    /// `limit` from now on the worker's clock.
    pub(crate) fn deadline(&self, limit: Duration) -> Deadline {
        Deadline::after(&self.clock, limit)
    }

    /// The reader thread: receives frames until the channel closes.
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

    /// One frame from the worker: an answer settles its request; anything else
    /// becomes an event or shared-memory bookkeeping.
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
                if let Some(reply) = self.pending.take(id) {
                    reply.settle(Err(self.proto(e)));
                }
                return;
            }
        };
        match msg {
            Message::Result(v) | Message::Stats(v) => {
                if let Some(reply) = self.pending.take(id) {
                    reply.settle(Ok(v));
                }
            }
            Message::Pong => {
                if let Some(reply) = self.pending.take(id) {
                    reply.settle(Ok(Value::None));
                }
            }
            Message::Error(v) => {
                if let Some(reply) = self.pending.take(id) {
                    reply.settle(Err(self.raised(&v)));
                }
            }
            Message::Chunk(v) => {
                self.pending.chunk(id, v);
            }
            Message::End => {
                // Dropping the sender ends the stream.
                self.pending.take(id);
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
            &JobErrorContext::new(self.clock.wall()).with_plugin(self.plugin.clone()),
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

    /// The waiter thread: reaps the child, then records how it ended once and
    /// fails every request still pending with it.
    fn wait_loop(&self, mut child: ChildProc, tail: &StderrTail, logs_done: &mpsc::Receiver<()>) {
        let exit = child.wait();
        // What the worker started and left behind (a `setsid` grandchild) goes too.
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        let killed_by_host = self.killing.load(Ordering::Acquire);
        logs::drain_logs(logs_done);
        let oom_evidence = (!killed_by_host && exit == Some(WorkerExit::Signal(libc::SIGKILL)))
            .then(|| {
                self.cgroup
                    .as_ref()
                    .and_then(WorkerCgroup::memory)
                    .filter(|m| m.oom_kills > 0)
                    .map(|m| {
                        let limit = m
                            .max_bytes
                            .map(|b| format!(" (its memory.max is {} MB)", b >> 20))
                            .unwrap_or_default();
                        format!("its own cgroup counted {} OOM kill(s){limit}", m.oom_kills)
                    })
                    .or_else(|| crate::oom::evidence(self.pid, self.oom_kills_at_start))
            })
            .flatten();
        let death = Death {
            exit,
            probable_oom: oom_evidence.is_some(),
            oom_evidence,
            log_file: self.log_file.clone(),
            killed_by_host,
            stderr_tail: tail.lines(),
        };
        let _ = self.death.set(death.clone());
        let (replies, killed_for_cancel) = self.pending.fail_all(&death);
        for (id, reply) in replies {
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
            reply.settle(Err(err));
        }
        // Wake the reader if a leaked descendant keeps the worker's end open.
        self.channel.shutdown();
        self.pool.forget_peer();
        self.events.emit(&Event::Exited {
            death: death.clone(),
        });
        self.exited.complete(death);
    }

    /// What the worker's own cgroup counts, where it has one with the memory
    /// controller.
    pub(crate) fn cgroup_memory(&self) -> Option<crate::CgroupMemory> {
        self.cgroup.as_ref().and_then(WorkerCgroup::memory)
    }

    /// Marks the coming exit as the host's doing.
    pub(crate) fn expect_exit(&self) {
        self.killing.store(true, Ordering::Release);
    }

    /// Kills the worker's process group (the worker and everything it started).
    pub(crate) fn kill(&self) {
        self.killing.store(true, Ordering::Release);
        if self.death.get().is_none() {
            child::kill_group(self.pid, Signal::KILL);
        }
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
    }

    /// Kills the worker because cancelling call `id` needed it.
    pub(crate) fn kill_for_cancel(&self, id: u64) {
        self.pending.killed_for_cancel(id);
        self.kill();
    }

    pub(crate) fn terminate(&self) {
        self.killing.store(true, Ordering::Release);
        if self.death.get().is_none() {
            child::kill_group(self.pid, Signal::TERM);
        }
    }

    /// Waits for the process to exit, until `deadline` if one is given.
    pub(crate) fn wait_exit(&self, deadline: Option<&Deadline>) -> Option<Death> {
        if let Some(d) = self.death.get() {
            return Some(d.clone());
        }
        let d = match deadline {
            None => self.exited.wait(None)?,
            Some(deadline) => loop {
                if let Some(d) = self.exited.wait(Some(deadline.next_wait()?)) {
                    break d;
                }
            },
        };
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
        let handles = std::mem::take(&mut *lock(&self.threads));
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

/// Ends a worker that did not greet the host as it should, and says why.
fn abandon(
    spec: &WorkerSpec,
    failure: handshake::Failure,
    child: &mut ChildProc,
    channel: &Channel,
    logs_done: &mpsc::Receiver<()>,
    stderr_tail: &StderrTail,
) -> WorkerError {
    // A worker that closed its channel is on its way out: its own status says
    // why (`sys.exit(2)` in the plugin's `__init__`), not our kill.
    let own = if failure.exited {
        child.wait_until(&Deadline::real(Duration::from_secs(2)))
    } else {
        None
    };
    // Its leader may be reaped already; the rest of the group still goes.
    child::kill_group(child.id(), Signal::KILL);
    channel.shutdown();
    let exit = match own {
        Some(exit) => Some(exit),
        None => child.wait(),
    }
    .filter(|_| failure.exited);
    logs::drain_logs(logs_done);
    WorkerError::Handshake {
        plugin: spec.plugin.clone(),
        reason: failure.reason,
        exit,
        stderr_tail: stderr_tail.lines(),
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
