//! The worker's greeting: `Hello` with a protocol this host speaks, then `Ready` or
//! `LoadFailed`, within the start timeout.

use cjm_proto::{Channel, DecodeCtx, Hello, Message, PROTOCOL, Value};
use std::sync::{Arc, mpsc};

use crate::deadline::Deadline;

/// How a greeting ended.
pub(crate) enum Handshake {
    /// The plugin loaded; what it said about itself.
    Ready(Hello, Value),
    /// Importing or constructing the plugin raised: the exception.
    LoadFailed(Value),
}

/// Why a worker did not greet the host as it should.
pub(crate) struct Failure {
    pub(crate) reason: String,
    /// It closed its channel before greeting: it is on its way out, and its own
    /// exit status says why (`sys.exit(2)` in the plugin's `__init__`).
    pub(crate) exited: bool,
}

/// The handshake's reason when the worker closed its channel before greeting.
const EXITED_BEFORE_GREETING: &str = "it exited before greeting the host";

/// Reads the greeting before `deadline` (the start timeout). The reader thread is
/// not running yet, so frames are read here directly, on a helper thread that is
/// abandoned when the deadline passes (it ends once the caller shuts the channel
/// down).
pub(crate) fn run(channel: &Arc<Channel>, deadline: &Deadline) -> Result<Handshake, Failure> {
    let (tx, rx) = mpsc::channel();
    let ch = Arc::clone(channel);
    let _ = std::thread::Builder::new()
        .name("cjm-handshake".into())
        .spawn(move || {
            let _ = tx.send(greeting(&ch));
        });
    deadline.recv(&rx).unwrap_or_else(|_| {
        Err(Failure {
            reason: format!("no answer within {:.1}s", deadline.limit().as_secs_f64()),
            exited: false,
        })
    })
}

fn greeting(ch: &Channel) -> Result<Handshake, Failure> {
    let failed = |reason: String| Failure {
        exited: reason == EXITED_BEFORE_GREETING,
        reason,
    };
    let next = || -> Result<Message, Failure> {
        let frame = ch
            .recv()
            .map_err(|e| failed(format!("reading its greeting failed: {e}")))?
            .ok_or_else(|| failed(EXITED_BEFORE_GREETING.to_owned()))?;
        let mut fds = frame.fds;
        let mut ctx = DecodeCtx {
            fds: &mut fds,
            segments: &cjm_proto::NoSegments,
        };
        Message::decode(frame.header.kind, &frame.body, &mut ctx)
            .map_err(|e| failed(format!("its greeting was malformed: {e}")))
    };
    let hello = match next()? {
        Message::Hello(h) => h,
        other => {
            return Err(failed(format!(
                "it sent {} before its greeting",
                other.kind().name()
            )));
        }
    };
    if hello.protocol != PROTOCOL {
        return Err(failed(format!(
            "protocol mismatch: this host speaks {PROTOCOL}, the worker's cjm-worker {} speaks {}",
            hello.runtime, hello.protocol
        )));
    }
    match next()? {
        Message::Ready(info) => Ok(Handshake::Ready(hello, info)),
        Message::LoadFailed(v) => Ok(Handshake::LoadFailed(v)),
        other => Err(failed(format!(
            "it sent {} instead of ready",
            other.kind().name()
        ))),
    }
}
