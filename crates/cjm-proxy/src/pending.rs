//! The requests a worker owes an answer: each has an id and a [`ReplyTo`] (a
//! call's completion or a stream's sender) until its answer, its cancellation or
//! the worker's death settles it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use cjm_proto::Value;

use crate::completion::Completion;
use crate::deadline::Deadline;
use crate::error::{Death, WorkerError};
use crate::lock::lock;

pub(crate) type Outcome = Result<Value, WorkerError>;

/// Where the answer to a request goes.
pub(crate) enum ReplyTo {
    Call(Arc<Completion<Outcome>>),
    Stream(tokio::sync::mpsc::UnboundedSender<Result<Value, WorkerError>>),
}

impl ReplyTo {
    /// Hands `outcome` to whoever waits. A stream hears only of a failure: its
    /// chunks went out as they came, and dropping its sender ends it.
    pub(crate) fn settle(self, outcome: Outcome) {
        match self {
            Self::Call(c) => c.complete(outcome),
            Self::Stream(tx) => {
                if let Err(e) = outcome {
                    let _ = tx.send(Err(e));
                }
            }
        }
    }
}

#[derive(Default)]
struct Table {
    replies: HashMap<u64, ReplyTo>,
    /// Set once the worker is dead; later calls fail at once with it.
    dead: Option<Death>,
    /// A call whose cancellation killed the worker: it fails as cancelled.
    killed_for_cancel: Option<u64>,
}

/// The pending requests of one worker process.
pub(crate) struct Pending {
    next_id: AtomicU64,
    table: Mutex<Table>,
    gone: Condvar,
    /// Threads in `wait_settled`; `take` notifies `gone` only when there are some.
    settle_waiters: AtomicUsize,
}

impl Pending {
    pub(crate) fn new() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            table: Mutex::default(),
            gone: Condvar::new(),
            settle_waiters: AtomicUsize::new(0),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Gives a request its id, unless the worker is already dead.
    pub(crate) fn register(&self, reply: ReplyTo) -> Result<u64, Death> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut t = self.table();
        if let Some(death) = &t.dead {
            return Err(death.clone());
        }
        t.replies.insert(id, reply);
        Ok(id)
    }

    /// Takes where the answer to request `id` goes; the request is settled.
    pub(crate) fn take(&self, id: u64) -> Option<ReplyTo> {
        let reply = self.table().replies.remove(&id);
        if reply.is_some() && self.settle_waiters.load(Ordering::Acquire) > 0 {
            self.gone.notify_all();
        }
        reply
    }

    /// Whether request `id` is still waiting for its outcome.
    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.table().replies.contains_key(&id)
    }

    /// Passes a chunk to stream `id`, if it is still open.
    pub(crate) fn chunk(&self, id: u64, v: Value) {
        if let Some(ReplyTo::Stream(tx)) = self.table().replies.get(&id) {
            let _ = tx.send(Ok(v));
        }
    }

    /// Waits until request `id` has its outcome, or `deadline` passes; true if it has.
    pub(crate) fn wait_settled(&self, id: u64, deadline: &Deadline) -> bool {
        let mut t = self.table();
        // Counted under the lock, so `take` (which removes under the same lock)
        // either sees this waiter or ran before the check below.
        self.settle_waiters.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.settle_waiters);
        while t.replies.contains_key(&id) {
            let Some(wait) = deadline.next_wait() else {
                return false;
            };
            t = self
                .gone
                .wait_timeout(t, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Marks call `id` as the one whose cancellation is killing the worker.
    pub(crate) fn killed_for_cancel(&self, id: u64) {
        self.table().killed_for_cancel = Some(id);
    }

    /// Records the death, so later requests fail at once, and takes every request
    /// still waiting, with the call (if any) whose cancellation killed the worker.
    pub(crate) fn fail_all(&self, death: &Death) -> (HashMap<u64, ReplyTo>, Option<u64>) {
        let taken = {
            let mut t = self.table();
            t.dead = Some(death.clone());
            (std::mem::take(&mut t.replies), t.killed_for_cancel)
        };
        self.gone.notify_all();
        taken
    }
}

/// Decrements a waiter count when a wait ends, however it ends.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
