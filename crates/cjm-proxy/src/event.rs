//! What a worker pushes without being asked ([`Event`]: progress, usage, log
//! records, output lines, cancel acknowledgements, its exit) and the hub that fans
//! it out to subscribers without ever blocking the reader thread.

use std::sync::{Arc, Mutex};

use cjm_proto::Value;

use crate::error::Death;
use crate::lock::lock;

/// Something a worker pushed (never polled).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// `report_progress` during call `call`.
    Progress {
        /// The call.
        call: u64,
        /// 0.0–1.0, or -1.0 for indeterminate.
        progress: f64,
        /// Status text.
        message: String,
    },
    /// `report_usage` during call `call`.
    Usage {
        /// The call.
        call: u64,
        /// Units measured by the plugin.
        usage: Value,
    },
    /// A `logging` record (call 0: outside any call).
    Log {
        /// The call.
        call: u64,
        /// Python logging level.
        level: i64,
        /// Logger name.
        logger: String,
        /// The message.
        message: String,
    },
    /// A line the worker printed.
    Output {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The line, without its newline.
        line: String,
    },
    /// The worker acknowledged a cancel phase.
    CancelAck {
        /// The call.
        call: u64,
        /// `cooperative` or `interrupted`.
        phase: String,
    },
    /// The worker process ended.
    Exited {
        /// How.
        death: Death,
    },
}

/// Fans events out to subscribers without ever blocking the sender.
#[derive(Clone, Default)]
pub(crate) struct EventHub {
    subs: Arc<Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Event>>>>,
}

impl EventHub {
    /// A new subscriber. Those gone are let go here too, not only at the next
    /// event: a worker that never pushes anything, subscribed to once per call,
    /// would otherwise hold a channel for every call it ever ran.
    pub(crate) fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut subs = lock(&self.subs);
        subs.retain(|s| !s.is_closed());
        subs.push(tx);
        rx
    }

    pub(crate) fn emit(&self, e: &Event) {
        let mut subs = lock(&self.subs);
        subs.retain(|s| s.send(e.clone()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_gone_are_let_go_when_another_subscribes() {
        let hub = EventHub::default();
        for _ in 0..100 {
            drop(hub.subscribe());
        }
        let mut live = hub.subscribe();
        assert_eq!(lock(&hub.subs).len(), 1);
        hub.emit(&Event::Output {
            stream: "stdout",
            line: "hi".into(),
        });
        assert!(matches!(live.try_recv(), Ok(Event::Output { .. })));
    }
}
