//! The event fan-out: every subscriber gets every manager event; those that asked
//! also get each call's ready⇄busy transitions, which cost nothing when nobody did.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Manager;
use crate::instance::{Instance, lock};
use crate::state::{InstanceState, ManagerEvent};

/// Subscribers to manager events.
#[derive(Default)]
pub(super) struct Hub {
    subs: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<ManagerEvent>>>,
    /// Subscribers that also want each call's ready⇄busy transitions.
    call_subs: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<ManagerEvent>>>,
    /// How many there are, read on the call path without a lock.
    call_sub_count: AtomicUsize,
}

impl Hub {
    pub(super) fn emit(&self, e: &ManagerEvent) {
        lock(&self.subs).retain(|s| s.send(e.clone()).is_ok());
        if self.call_sub_count.load(Ordering::Acquire) > 0 {
            self.emit_calls(e);
        }
    }

    pub(super) fn emit_calls(&self, e: &ManagerEvent) {
        let mut subs = lock(&self.call_subs);
        subs.retain(|s| s.send(e.clone()).is_ok());
        self.call_sub_count.store(subs.len(), Ordering::Release);
    }

    /// A call made an instance busy (`busy`) or ready again; only for the
    /// subscribers that asked, so calls cost nothing when nobody did.
    pub(super) fn call_transition(&self, inst: &Instance, busy: bool) {
        if self.call_sub_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let (from, to) = if busy {
            (InstanceState::Ready, InstanceState::Busy)
        } else {
            (InstanceState::Busy, InstanceState::Ready)
        };
        self.emit_calls(&ManagerEvent::State {
            instance_id: inst.id.clone(),
            plugin: inst.plugin.clone(),
            from,
            to,
        });
    }
}

impl Manager {
    /// Subscribes to state changes, crashes, restarts and drift warnings.
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<ManagerEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        lock(&self.inner.hub.subs).push(tx);
        rx
    }

    /// [`subscribe`](Self::subscribe), plus every call's `ready → busy` and
    /// `busy → ready` transitions (one pair per call that finds an instance idle).
    /// Without such a subscriber, calls emit nothing.
    pub fn subscribe_with_calls(&self) -> tokio::sync::mpsc::UnboundedReceiver<ManagerEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let hub = &self.inner.hub;
        let mut subs = lock(&hub.call_subs);
        subs.push(tx);
        hub.call_sub_count.store(subs.len(), Ordering::Release);
        rx
    }
}
