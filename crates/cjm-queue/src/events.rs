//! The event fan-out: each subscriber has its own bounded buffer, filled with
//! `try_send`, so a slow subscriber loses events (and counts them) instead of
//! slowing the runner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::model::JobEvent;

/// Which events a subscriber gets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    All,
    Job(String),
    Sequence(String),
}

impl Filter {
    fn wants(&self, e: &JobEvent) -> bool {
        match self {
            Self::All => true,
            Self::Job(id) => &e.job_id == id,
            Self::Sequence(id) => e.sequence_id.as_ref() == Some(id),
        }
    }
}

#[derive(Debug)]
struct Subscriber {
    filter: Filter,
    tx: mpsc::Sender<JobEvent>,
    dropped: Arc<AtomicU64>,
}

/// Every subscriber.
#[derive(Debug)]
pub(crate) struct Bus {
    subs: Mutex<Vec<Subscriber>>,
    buffer: usize,
}

/// A stream of events; it ends when the queue is dropped.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<JobEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventStream {
    /// The next event; `None` once the queue is gone.
    pub async fn next(&mut self) -> Option<JobEvent> {
        self.rx.recv().await
    }

    /// The next event if one is buffered, without waiting.
    pub fn try_next(&mut self) -> Option<JobEvent> {
        self.rx.try_recv().ok()
    }

    /// How many events this subscriber lost because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Bus {
    /// A bus whose subscribers each buffer `buffer` events.
    pub(crate) fn new(buffer: usize) -> Self {
        Self {
            subs: Mutex::new(Vec::new()),
            buffer: buffer.max(1),
        }
    }

    fn subscribe(&self, filter: Filter) -> EventStream {
        let (tx, rx) = mpsc::channel(self.buffer);
        let dropped = Arc::new(AtomicU64::new(0));
        crate::lock(&self.subs).push(Subscriber {
            filter,
            tx,
            dropped: Arc::clone(&dropped),
        });
        EventStream { rx, dropped }
    }

    /// Whether anyone listens (so that an event need not even be built).
    pub(crate) fn is_idle(&self) -> bool {
        crate::lock(&self.subs).is_empty()
    }

    pub(crate) fn all(&self) -> EventStream {
        self.subscribe(Filter::All)
    }

    pub(crate) fn job(&self, id: &str) -> EventStream {
        self.subscribe(Filter::Job(id.to_owned()))
    }

    pub(crate) fn sequence(&self, id: &str) -> EventStream {
        self.subscribe(Filter::Sequence(id.to_owned()))
    }

    /// Sends `e` to every subscriber that wants it, never waiting.
    pub(crate) fn publish(&self, e: &JobEvent) {
        let mut subs = crate::lock(&self.subs);
        if subs.is_empty() {
            return;
        }
        subs.retain(|s| !s.tx.is_closed());
        for s in subs.iter().filter(|s| s.filter.wants(e)) {
            if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(e.clone()) {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
