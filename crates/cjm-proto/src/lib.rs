//! The host⇄worker wire protocol of cjm.
//!
//! It owns the frame layout, the message kinds, the value codec, shared-memory
//! segments and the channel (a `SOCK_SEQPACKET` socketpair), and the forkserver's
//! requests and replies (their bytes; the processes they name are the caller's). It is synchronous and
//! knows nothing about processes, async runtimes or Python, so the host and the
//! worker runtime share it. Nothing decoded from a peer ever becomes code: values are
//! data, lengths are checked, nesting is bounded.

mod channel;
mod codec;
mod error;
mod forkserver;
mod frame;
mod message;
mod shm;
mod value;

pub use channel::{Channel, Frame};
pub use codec::{DecodeCtx, MAX_DEPTH, NO_FD, NoSegments, Reader, Segments, ShmRef, Writer, tag};
pub use error::ProtoError;
pub use forkserver::{FDS_PER_REQUEST, FORK_PROTOCOL, ForkReply, MAX_REQUEST, SpawnRequest};
pub use frame::{FLAG_BODY_IN_FD, HEADER_LEN, Header, Kind, MAX_FDS, MAX_INLINE_BODY};
pub use message::{Call, Hello, LogRecord, Message, PROTOCOL, decode_frame_bytes};
pub use shm::{
    PeerSegments, ReleaseSink, Segment, SegmentId, ShmBufferMut, ShmPool, ShmSlice, Side,
};
pub use value::{Array, Buffer, Value};
