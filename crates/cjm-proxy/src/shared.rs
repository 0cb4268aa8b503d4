//! The host's side of shared memory for one worker: what resolves the segments
//! a worker's frame names, what tells the worker a segment it lent is released,
//! and the moving of large inline bytes into segments before a call is sent.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use cjm_proto::{
    Buffer, Call, Channel, Kind, Message, PeerSegments, ProtoError, ReleaseSink, Segment,
    SegmentId, Segments, ShmPool, Side, Value,
};

/// Inline bytes at least this large are moved into shared memory before sending.
const SHM_THRESHOLD: usize = 64 * 1024;

/// Sends a worker `Release` frames for the segments it lent the host.
pub(crate) struct ChannelRelease(pub(crate) Arc<Channel>);

impl ReleaseSink for ChannelRelease {
    fn release(&self, id: SegmentId, receipts: u32) {
        let msg = Message::Release {
            segment: id,
            receipts,
        };
        // A dead worker needs no release: its segments died with it.
        if let Ok(w) = msg.encode(Side::Host) {
            let _ = self.0.send(Kind::Release, 0, &w);
        }
    }
}

/// Resolves the segments a worker's frame names: its own, or the host's it was lent.
pub(crate) struct HostSegments<'a> {
    pub(crate) pool: &'a ShmPool,
    pub(crate) peers: &'a PeerSegments,
    pub(crate) release: &'a Arc<dyn ReleaseSink>,
}

impl Segments for HostSegments<'_> {
    fn resolve(&self, id: SegmentId, fd: Option<OwnedFd>) -> Result<Arc<Segment>, ProtoError> {
        match id.owner() {
            // Only segments actually lent to the worker may come back: a segment
            // the host is still filling must never be aliased by a worker's reply.
            Side::Host => {
                self.pool
                    .get(id)
                    .filter(|s| s.outstanding() > 0)
                    .ok_or(ProtoError::Malformed {
                        what: "worker referenced a host segment it was not lent",
                        offset: 0,
                    })
            }
            Side::Worker => self.peers.resolve(id, fd, self.release),
        }
    }
}

/// `call` with its large inline byte buffers moved into segments of `pool`, or
/// `None` when it has none (the usual case, which copies nothing).
pub(crate) fn with_large_bytes_shared(
    call: &Call,
    pool: &ShmPool,
) -> Result<Option<Call>, ProtoError> {
    let large = call
        .args
        .iter()
        .chain(call.kwargs.iter().map(|(_, v)| v))
        .any(has_large_inline);
    if !large {
        return Ok(None);
    }
    let mut prepared = call.clone();
    for v in &mut prepared.args {
        share_large(v, pool)?;
    }
    for (_, v) in &mut prepared.kwargs {
        share_large(v, pool)?;
    }
    Ok(Some(prepared))
}

/// Moves large inline byte buffers into shared memory.
fn share_large(v: &mut Value, pool: &ShmPool) -> Result<(), ProtoError> {
    match v {
        Value::Bytes(b) => {
            if let Buffer::Inline(bytes) = b
                && bytes.len() >= SHM_THRESHOLD
            {
                *b = copy_to_shm(bytes, pool)?;
            }
        }
        Value::Array(a) => {
            if let Buffer::Inline(bytes) = &a.data
                && bytes.len() >= SHM_THRESHOLD
            {
                a.data = copy_to_shm(bytes, pool)?;
            }
        }
        Value::List(items) => {
            for i in items {
                share_large(i, pool)?;
            }
        }
        Value::Map(pairs) => {
            for (_, i) in pairs {
                share_large(i, pool)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn copy_to_shm(bytes: &[u8], pool: &ShmPool) -> Result<Buffer, ProtoError> {
    let mut buf = pool.alloc(bytes.len())?;
    buf.as_mut_slice().copy_from_slice(bytes);
    Ok(Buffer::Shm(buf.freeze()))
}

/// Whether a value holds inline bytes large enough to move into shared memory.
fn has_large_inline(v: &Value) -> bool {
    match v {
        Value::Bytes(Buffer::Inline(b)) => b.len() >= SHM_THRESHOLD,
        Value::Array(a) => matches!(&a.data, Buffer::Inline(b) if b.len() >= SHM_THRESHOLD),
        Value::List(items) => items.iter().any(has_large_inline),
        Value::Map(pairs) => pairs.iter().any(|(_, v)| has_large_inline(v)),
        _ => false,
    }
}
