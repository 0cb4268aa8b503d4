//! A one-shot slot that a blocking thread or an async task can wait on.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// Filled once by the reader thread, taken once by the caller.
pub(crate) struct Completion<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
}

impl<T> Completion<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                value: None,
                waker: None,
            }),
            cv: Condvar::new(),
        }
    }

    /// Fills the slot; a second fill is ignored (the first outcome wins).
    pub(crate) fn complete(&self, value: T) {
        let waker = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if s.value.is_some() {
                return;
            }
            s.value = Some(value);
            s.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits up to `timeout` (forever if `None`).
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(v) = s.value.take() {
                return Some(v);
            }
            match deadline {
                None => s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    s = self
                        .cv
                        .wait_timeout(s, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

/// Awaits a [`Completion`].
pub(crate) struct Wait<'a, T>(pub(crate) &'a Completion<T>);

impl<T> Future for Wait<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = s.value.take() {
            return Poll::Ready(v);
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
