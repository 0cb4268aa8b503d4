//! A one-shot slot that a blocking thread or an async task can wait on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::lock::lock;

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// Threads parked on the condvar; a completion that finds none skips the
    /// wake-up syscall (the usual case: the waiter is still spinning).
    sleepers: usize,
}

/// Filled once by the reader thread, taken once by the caller.
pub(crate) struct Completion<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    filled: AtomicBool,
}

/// How long a blocking waiter spins (yielding the CPU each turn) before it parks.
/// A small call answers well within this, and a waiter that is still on the CPU
/// when the answer lands saves the wake-up of a parked thread, which costs about
/// as much as the whole round trip.
const SPIN: Duration = Duration::from_micros(60);

impl<T> Completion<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                value: None,
                waker: None,
                sleepers: 0,
            }),
            cv: Condvar::new(),
            filled: AtomicBool::new(false),
        }
    }

    /// Fills the slot; a second fill is ignored (the first outcome wins).
    pub(crate) fn complete(&self, value: T) {
        let waker = {
            let mut s = lock(&self.state);
            if s.value.is_some() {
                return;
            }
            s.value = Some(value);
            self.filled.store(true, Ordering::Release);
            (s.waker.take(), s.sleepers > 0)
        };
        let (waker, sleepers) = waker;
        if sleepers {
            self.cv.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits up to `timeout` (forever if `None`).
    ///
    /// On [`Instant`] rather than the spec's injected clock: every call waits
    /// here, spinning first, and the spin reads the time on each turn; a
    /// `SharedClock` behind a trait object (a lock, in a `ManualClock`) would cost
    /// a measurable part of a round trip of about 15 µs. Waits that have a
    /// deadline on the spec's clock (stop, cancel) call this in short slices and
    /// read that clock between them (`deadline.rs`).
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<T> {
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        let spin_until = started + timeout.map_or(SPIN, |t| t.min(SPIN));
        while !self.filled.load(Ordering::Acquire) && Instant::now() < spin_until {
            // Yield rather than busy-wait: on a small machine the thread that will
            // fill the slot may need this very CPU.
            std::thread::yield_now();
        }
        let mut s = lock(&self.state);
        loop {
            if let Some(v) = s.value.take() {
                return Some(v);
            }
            let left = match deadline {
                None => None,
                Some(d) => Some(d.checked_duration_since(Instant::now())?),
            };
            s.sleepers += 1;
            s = match left {
                None => self.cv.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(left) => {
                    self.cv
                        .wait_timeout(s, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            s.sleepers -= 1;
        }
    }
}

/// Awaits a [`Completion`].
pub(crate) struct Wait<'a, T>(pub(crate) &'a Completion<T>);

impl<T> Future for Wait<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = lock(&self.0.state);
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
