//! Cancellation: the channel thread's routing of a cancel, and the cancel thread.
//!
//! A `Cancel` for a call still queued is answered on the channel thread, without
//! plugin code. One for the running call, and every `Interrupt`, goes to the
//! **cancel thread** (`cjm-cancel`), the only one of cjm's threads besides the main
//! thread that takes the GIL: it calls `plugin.cancel()` (so the plugin's `check_cancel()` raises), or
//! raises `CancelInterrupt` asynchronously in the main thread, and acknowledges the
//! phase to the host. A plugin that holds the GIL can so delay a cancel, but never a
//! ping.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, mpsc};

use cjm_proto::Message;
use pyo3::prelude::*;

use crate::raised::cancelled_error;
use crate::runtime::Runtime;

/// What the channel thread asks the cancel thread to do about a running call.
pub(crate) enum CancelJob {
    /// Call `plugin.cancel()`: the cooperative phase.
    Cancel(u64),
    /// Raise `CancelInterrupt` in the main thread: the interrupted phase.
    Interrupt(u64),
}

impl Runtime {
    /// The host cancels call `id` (on the channel thread).
    pub(crate) fn cancel(&self, id: u64) {
        if self.unqueue(id) {
            // Never started: it ends here, cooperatively, without plugin code.
            let err = cancelled_error(&self.plugin_name, "cooperative");
            self.send(&Message::Error(err), id);
            return;
        }
        self.cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        if self.current.load(Ordering::Acquire) == id {
            self.to_cancel_thread(CancelJob::Cancel(id));
        }
    }

    /// Hands `job` to the cancel thread.
    pub(crate) fn to_cancel_thread(&self, job: CancelJob) {
        let tx = self
            .cancel_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = tx.send(job);
    }

    /// The cancel thread's loop, for the life of the process.
    pub(crate) fn cancel_loop(self: &Arc<Self>, rx: &mpsc::Receiver<CancelJob>) {
        while let Ok(job) = rx.recv() {
            Python::attach(|py| match job {
                CancelJob::Cancel(id) => {
                    if self.current.load(Ordering::Acquire) != id {
                        return;
                    }
                    let plugin = self.plugin.bind(py);
                    if plugin.hasattr("cancel").unwrap_or(false)
                        && let Err(e) = plugin.call_method0("cancel")
                    {
                        eprintln!("cjm-worker: plugin cancel() raised: {e}");
                    }
                    self.send(
                        &Message::CancelAck {
                            phase: "cooperative".into(),
                        },
                        id,
                    );
                }
                CancelJob::Interrupt(id) => {
                    if self.current.load(Ordering::Acquire) != id {
                        return;
                    }
                    match py
                        .import("cjm_worker._interrupt")
                        .and_then(|m| m.getattr("CancelInterrupt"))
                    {
                        Ok(exc) => {
                            if let Ok(m) = py.import("cjm_worker._interrupt") {
                                let _ = m.setattr("PLUGIN_NAME", self.plugin_name.as_str());
                            }
                            self.interrupted.store(id, Ordering::Release);
                            // SAFETY: GIL held; the main thread id was read from
                            // `_thread.get_ident()` on that thread; `exc` is a live
                            // exception class, borrowed for the call.
                            unsafe {
                                pyo3::ffi::PyThreadState_SetAsyncExc(
                                    self.main_thread as std::ffi::c_long,
                                    exc.as_ptr(),
                                );
                            }
                            self.send(
                                &Message::CancelAck {
                                    phase: "interrupted".into(),
                                },
                                id,
                            );
                        }
                        Err(e) => eprintln!("cjm-worker: cannot interrupt: {e}"),
                    }
                }
            });
        }
    }
}
