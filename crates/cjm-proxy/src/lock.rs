//! Taking a lock whose last holder panicked.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m` even when a thread panicked while holding it. Every mutex in this
/// crate guards state that is whole between statements (a map of pending calls,
/// a list of subscribers, a log file), so one panicked thread is no reason for
/// every later call to fail too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
