//! Supervision: a thread per running worker that answers a death the host did not
//! cause with a restart after a backoff, or quarantine; and the reaper that stops
//! idle workers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cjm_proto::Value;
use cjm_proxy::{CallOptions, Event, WorkerError};

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
            let Some(ttl) = inst.idle_ttl else { continue };
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
/// answered with a restart after a backoff, or quarantine.
pub(super) fn supervise(inner: &Weak<Inner>, inst: &Weak<Instance>, generation: u64) {
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
        let (Some(inner), Some(i)) = (inner.upgrade(), inst.upgrade()) else {
            return;
        };
        if !current(&i) {
            return;
        }
        if !crashed(&Manager { inner }, &i, pid, &death) {
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
fn crashed(manager: &Manager, inst: &Arc<Instance>, pid: u32, death: &cjm_proxy::Death) -> bool {
    let inner = &manager.inner;
    let now = inner.clock.now();
    let record = CrashRecord {
        plugin: inst.plugin.clone(),
        instance_id: inst.id.clone(),
        pid,
        exit: death.exit,
        cause: cause(death),
        stderr_tail: death.stderr_tail.clone(),
        at: now,
    };
    tracing::warn!("{record}");
    let mut record = record;
    loop {
        let (verdict, recent) = {
            let mut status = lock(&inst.status);
            status.last_crash = Some(record.clone());
            status.crashes.crashed(record.at, &inner.policy)
        };
        manager.emit(&ManagerEvent::Crashed(record.clone()));
        manager.set_state(inst, InstanceState::Crashed);
        match verdict {
            Verdict::Quarantine => {
                let reason = format!(
                    "{recent} crashes within {:.0} s, the last: {}",
                    inner.policy.window.as_secs_f64(),
                    record.cause
                );
                lock(&inst.status).quarantine = Some(reason.clone());
                let _ = lock(&inst.worker).take();
                manager.set_state(inst, InstanceState::CrashLooping);
                manager.emit(&ManagerEvent::CrashLooping {
                    instance_id: inst.id.clone(),
                    reason,
                });
                return false;
            }
            Verdict::Restart(delay) => {
                manager.emit(&ManagerEvent::RestartScheduled {
                    instance_id: inst.id.clone(),
                    delay,
                    recent_crashes: recent,
                });
                inner.clock.sleep(delay);
            }
        }
        if inner.closed.load(Ordering::Acquire) || inst.worker().is_none() {
            return false;
        }
        let _lifecycle = lock(&inst.lifecycle);
        let Some(worker) = inst.worker() else {
            return false;
        };
        manager.set_state(inst, InstanceState::Starting);
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
                manager.set_state(inst, state);
                return true;
            }
            Err(e) => {
                // A restart that fails is one more crash.
                let death = match &e {
                    WorkerError::Died { death, .. } => death.clone(),
                    _ => cjm_proxy::Death::default(),
                };
                record = CrashRecord {
                    plugin: inst.plugin.clone(),
                    instance_id: inst.id.clone(),
                    pid: worker.pid(),
                    exit: death.exit,
                    cause: format!("failed to restart: {e}"),
                    stderr_tail: death.stderr_tail,
                    at: inner.clock.now(),
                };
            }
        }
    }
}

/// A crash's cause in words: the death's own, without its stderr lines.
fn cause(death: &cjm_proxy::Death) -> String {
    cjm_proxy::Death {
        stderr_tail: Vec::new(),
        ..death.clone()
    }
    .to_string()
}

pub(super) fn reaper(inner: &Weak<Inner>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        Manager { inner }.reap_idle();
    }
}
