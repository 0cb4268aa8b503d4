//! Supervision: a thread per running worker that answers a death the host did not
//! cause with a restart after a backoff, or quarantine; and the reaper that stops
//! idle workers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cjm_proto::Value;
use cjm_proxy::{CallOptions, Event, WorkerError};

use super::threads::Shutdown;
use super::{Inner, Manager};
use crate::instance::{Instance, lock};
use crate::state::{CrashRecord, InstanceState, ManagerEvent, Verdict};

impl Manager {
    /// Stops the workers of instances idle longer than their `idle_ttl`; the next
    /// call starts them again. Runs on its own every `reap_interval`.
    pub fn reap_idle(&self) -> Vec<String> {
        let now = self.inner.clock.now();
        let all: Vec<Arc<Instance>> = self
            .inner
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut stopped = Vec::new();
        for inst in all {
            let Some(ttl) = inst.idle_ttl.filter(|_| !inst.kept.load(Ordering::Acquire)) else {
                continue;
            };
            let idle = now.saturating_sub(lock(&inst.status).last_used);
            if idle >= ttl && inst.in_flight.load(Ordering::Acquire) == 0 && inst.worker().is_some()
            {
                self.stop_instance(&inst);
                stopped.push(inst.id.clone());
            }
        }
        stopped
    }
}

/// Watches one instance's worker: a death the host did not cause is a crash,
/// answered with a restart after a backoff, or quarantine. It holds the manager
/// only while it acts on a crash, never while it waits.
pub(super) fn supervise(
    inner: &Weak<Inner>,
    shutdown: &Shutdown,
    inst: &Weak<Instance>,
    generation: u64,
) {
    let current = |i: &Instance| i.generation.load(Ordering::Acquire) == generation;
    loop {
        let Some(worker) = inst
            .upgrade()
            .filter(|i| current(i))
            .and_then(|i| i.worker())
        else {
            return;
        };
        let mut events = worker.events();
        let pid = worker.pid();
        // Subscribed after the fact: a worker that already died is handled now.
        let death = if let Some(d) = worker.death() {
            Some(d)
        } else {
            drop(worker);
            wait_for_exit(&mut events)
        };
        let Some(death) = death else {
            // The process was replaced (a reload or a cancel's restart): watch the
            // new one, if the instance still has one.
            continue;
        };
        if death.killed_by_host {
            // Stopped on purpose; a replacement, if any, is watched next time round.
            let Some(i) = inst.upgrade() else { return };
            if !current(&i) || i.worker().is_none_or(|w| w.pid() == pid) {
                return;
            }
            continue;
        }
        let Some(i) = inst.upgrade() else { return };
        if !current(&i) {
            return;
        }
        if !crashed(inner, shutdown, &i, pid, &death) {
            return;
        }
    }
}

/// The next `Exited` event's death; `None` when the stream ends first.
fn wait_for_exit(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Option<cjm_proxy::Death> {
    while let Some(e) = events.blocking_recv() {
        if let Event::Exited { death } = e {
            return Some(death);
        }
    }
    None
}

/// Records a crash and restarts or quarantines. `true`: a new worker runs.
///
/// The manager is let go during the backoff: a manager dropped meanwhile is
/// dropped then (its drop wakes this wait), not when the backoff ends. Letting
/// go can itself drop the last handle, here, on this thread; the wait then sees
/// the shutdown at once.
fn crashed(
    inner: &Weak<Inner>,
    shutdown: &Shutdown,
    inst: &Arc<Instance>,
    pid: u32,
    death: &cjm_proxy::Death,
) -> bool {
    let Some(clock) = inner.upgrade().map(|i| Arc::clone(&i.clock)) else {
        return false;
    };
    let mut record = CrashRecord {
        plugin: inst.plugin.clone(),
        instance_id: inst.id.clone(),
        pid,
        exit: death.exit,
        cause: cause(death),
        stderr_tail: death.stderr_tail.clone(),
        at: clock.now(),
    };
    tracing::warn!("{record}");
    loop {
        let Some(delay) = inner
            .upgrade()
            .and_then(|inner| Manager { inner }.record_crash(inst, &record))
        else {
            return false;
        };
        if !shutdown.backoff(&*clock, delay) {
            return false;
        }
        let Some(inner) = inner.upgrade() else {
            return false;
        };
        match (Manager { inner }).restart(inst, record.pid) {
            Restart::Running => return true,
            Restart::Gone => return false,
            // A restart that fails is one more crash.
            Restart::Failed(next) => record = next,
        }
    }
}

impl Manager {
    /// Records `record` against `inst` and reports it; the backoff before a
    /// restart, or `None` when the instance is quarantined now.
    fn record_crash(&self, inst: &Instance, record: &CrashRecord) -> Option<Duration> {
        let policy = &self.inner.policy;
        let (verdict, recent) = {
            let mut status = lock(&inst.status);
            status.last_crash = Some(record.clone());
            status.crashes.crashed(record.at, policy)
        };
        self.emit(&ManagerEvent::Crashed(record.clone()));
        self.set_state(inst, InstanceState::Crashed);
        match verdict {
            Verdict::Quarantine => {
                let reason = format!(
                    "{recent} crashes within {:.0} s, the last: {}",
                    policy.window.as_secs_f64(),
                    record.cause
                );
                lock(&inst.status).quarantine = Some(reason.clone());
                let _ = lock(&inst.worker).take();
                self.set_state(inst, InstanceState::CrashLooping);
                self.emit(&ManagerEvent::CrashLooping {
                    instance_id: inst.id.clone(),
                    reason,
                });
                None
            }
            Verdict::Restart(delay) => {
                self.emit(&ManagerEvent::RestartScheduled {
                    instance_id: inst.id.clone(),
                    delay,
                    recent_crashes: recent,
                });
                Some(delay)
            }
        }
    }

    /// Restarts `inst`'s worker (process `pid`), killed by a cancel, in place
    /// and initializes it again; a restart that fails is a crash, supervised
    /// as one.
    pub(super) fn restart_after_kill(&self, inst: &Instance, pid: u32) {
        if let Restart::Failed(record) = self.restart(inst, pid) {
            tracing::warn!("{record}");
            if self.record_crash(inst, &record).is_some() {
                // The next call starts the worker again.
                let _ = lock(&inst.worker).take();
                self.set_state(inst, InstanceState::Stopped);
            }
        }
    }

    /// Restarts `inst`'s crashed worker (process `pid`) in place and initializes
    /// it again. A worker started meanwhile in its place (a retry after an
    /// out-of-memory, a reload) is left alone: its own supervisor watches it.
    fn restart(&self, inst: &Instance, pid: u32) -> Restart {
        let _lifecycle = lock(&inst.lifecycle);
        let Some(worker) = inst.worker().filter(|w| w.pid() == pid) else {
            return Restart::Gone;
        };
        self.set_state(inst, InstanceState::Starting);
        let config = serde_json::Value::Object(lock(&inst.config).clone());
        let restarted = worker.restart_blocking().and_then(|()| {
            worker
                .call_blocking(
                    "initialize",
                    vec![Value::from(config)],
                    vec![],
                    CallOptions::default(),
                )
                .map(drop)
        });
        match restarted {
            Ok(()) => {
                let state = if inst.enabled.load(Ordering::Acquire) {
                    InstanceState::Ready
                } else {
                    InstanceState::Disabled
                };
                self.set_state(inst, state);
                Restart::Running
            }
            Err(e) => {
                let death = match &e {
                    WorkerError::Died { death, .. } => death.clone(),
                    _ => cjm_proxy::Death::default(),
                };
                Restart::Failed(CrashRecord {
                    plugin: inst.plugin.clone(),
                    instance_id: inst.id.clone(),
                    pid: worker.pid(),
                    exit: death.exit,
                    cause: format!("failed to restart: {e}"),
                    stderr_tail: death.stderr_tail,
                    at: self.inner.clock.now(),
                })
            }
        }
    }
}

/// How a restart went.
enum Restart {
    /// A new worker runs.
    Running,
    /// Nothing to restart: the worker was stopped or unloaded during the backoff.
    Gone,
    /// It failed, which is one more crash.
    Failed(CrashRecord),
}

/// A crash's cause in words: the death's own, without its stderr lines (the
/// record keeps those apart).
fn cause(death: &cjm_proxy::Death) -> String {
    cjm_proxy::Death {
        stderr_tail: Vec::new(),
        ..death.clone()
    }
    .to_string()
}

/// Stops idle workers every `every`, until the manager goes. It holds the manager
/// only while it reaps; dropping that handle can drop the manager here, and the
/// next wait then returns at once.
pub(super) fn reaper(inner: &Weak<Inner>, shutdown: &Shutdown, every: Duration) {
    while !shutdown.wait(every) {
        let Some(inner) = inner.upgrade() else { return };
        Manager { inner }.reap_idle();
    }
}
