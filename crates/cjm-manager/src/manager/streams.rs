//! Streamed calls (`execute_stream`) through the manager: admitted as
//! `execute` is (the instance's turn, then the policy, the worker started on
//! demand), counted in flight and holding their reservation until the stream
//! ends or is dropped, so a worker that streams is never evicted under it.
//!
//! A stream is not tried again after an out-of-memory: its first chunks may
//! already have been taken. Its sample is recorded when it ends.

use std::sync::Arc;
use std::time::Instant;

use cjm_proto::Value;
use cjm_proxy::CallStream;
use cjm_sched::Permit;

use super::Manager;
use super::admission::Quick;
use super::calls::{call_ended, call_started, enabled, off_runtime};
use crate::error::ManagerError;
use crate::instance::Instance;

/// A streamed call on an instance: its chunks, as the plugin yields them.
///
/// Iterate it (blocking) or await [`next`](Self::next). The call counts in
/// flight until the last chunk or an error, or until it is dropped.
#[derive(Debug)]
pub struct ExecuteStream {
    chunks: CallStream,
    call: Option<Counted>,
}

/// A streamed call's place in the manager: counted in, its reservation and
/// the instance's turn held; all given back on drop.
#[derive(Debug)]
struct Counted {
    manager: Manager,
    inst: Arc<Instance>,
    permit: Option<Permit>,
    /// It holds a turn under the instance's concurrency cap.
    turn: bool,
    started: Option<Instant>,
    failed: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        call_ended(&self.manager, &self.inst, self.started, !self.failed);
        drop(self.permit.take());
        if self.turn
            && let Some(gate) = &self.inst.gate
        {
            gate.release();
        }
    }
}

impl ExecuteStream {
    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Value, ManagerError>> {
        let chunk = self.chunks.next().await;
        self.seen(chunk)
    }

    /// The next chunk, blocking; `None` at the end.
    pub fn next_blocking(&mut self) -> Option<Result<Value, ManagerError>> {
        let chunk = self.chunks.next_blocking();
        self.seen(chunk)
    }

    /// Counts the call out at its end, and marks it failed at an error.
    fn seen(
        &mut self,
        chunk: Option<Result<Value, cjm_proxy::WorkerError>>,
    ) -> Option<Result<Value, ManagerError>> {
        match chunk {
            None => {
                self.call = None;
                None
            }
            Some(Err(e)) => {
                if let Some(c) = &mut self.call {
                    c.failed = true;
                }
                Some(Err(e.into()))
            }
            Some(Ok(v)) => Some(Ok(v)),
        }
    }
}

impl Iterator for ExecuteStream {
    type Item = Result<Value, ManagerError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_blocking()
    }
}

impl Manager {
    /// `execute_stream(*args, **kwargs)` on instance `id`: admitted as
    /// [`execute`](Self::execute) is (waiting for memory with its reason,
    /// evicting idle workers), then its chunks as the plugin yields them.
    pub fn execute_stream(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<ExecuteStream, ManagerError> {
        let inst = self.instance(id)?;
        if let Some(gate) = &inst.gate {
            gate.acquire();
        }
        let turn = inst.gate.is_some();
        let admitted = match self.admit(&inst) {
            Ok(admitted) => admitted,
            Err(e) => {
                if let Some(gate) = inst.gate.as_ref().filter(|_| turn) {
                    gate.release();
                }
                return Err(e);
            }
        };
        self.stream_on(inst, &admitted.worker, admitted.permit, turn, args, kwargs)
    }

    /// [`execute_stream`](Self::execute_stream), with admission's waiting
    /// kept off the async runtime.
    pub async fn execute_stream_async(
        &self,
        id: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<ExecuteStream, ManagerError> {
        let inst = self.instance(id)?;
        if inst.gate.is_some() {
            // The cap blocks a thread while waiting; keep that off the runtime.
            let (me, id) = (self.clone(), id.to_owned());
            return off_runtime(&inst.plugin, move || me.execute_stream(&id, args, kwargs)).await;
        }
        enabled(&inst)?;
        let admitted = match self.quick(&inst) {
            Quick::Ready(admitted) => admitted,
            Quick::Later(step) => {
                let (me, waiting) = (self.clone(), Arc::clone(&inst));
                off_runtime(&inst.plugin, move || me.finish(&waiting, step)).await?
            }
        };
        self.stream_on(inst, &admitted.worker, admitted.permit, false, args, kwargs)
    }

    fn stream_on(
        &self,
        inst: Arc<Instance>,
        worker: &cjm_proxy::Worker,
        permit: Option<Permit>,
        turn: bool,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<ExecuteStream, ManagerError> {
        let mut call = Counted {
            started: call_started(self, &inst, true),
            manager: self.clone(),
            inst,
            permit,
            turn,
            failed: true,
        };
        let chunks = worker.stream(args, kwargs)?;
        call.failed = false;
        Ok(ExecuteStream {
            chunks,
            call: Some(call),
        })
    }
}
