//! Frames: one `SOCK_SEQPACKET` message each, a fixed header then a body.
//!
//! ```text
//! 0      1       2         4          8               16
//! | kind | flags | n_fds   | reserved | request id    | body …
//! ```
//! All integers little-endian. `n_fds` counts the descriptors that came with the
//! frame (`SCM_RIGHTS`); when [`FLAG_BODY_IN_FD`] is set the body is the content of
//! the last of them (a sealed memfd), for bodies too large to send inline.

use crate::error::ProtoError;

/// Header size in bytes.
pub const HEADER_LEN: usize = 16;

/// Largest body sent inline; larger bodies travel in a memfd.
pub const MAX_INLINE_BODY: usize = 60 * 1024;

/// Most descriptors one frame may carry (the kernel allows 253).
pub const MAX_FDS: usize = 64;

/// The body is the content of the frame's last fd.
pub const FLAG_BODY_IN_FD: u8 = 1;

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $n:literal,)*) => {
        /// What a frame carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Kind { $($(#[$doc])* $name = $n,)* }

        impl Kind {
            /// The kind for a header byte.
            pub fn from_u8(b: u8) -> Option<Self> {
                match b { $($n => Some(Self::$name),)* _ => None }
            }

            /// Its name, for messages.
            pub fn name(self) -> &'static str {
                match self { $(Self::$name => stringify!($name),)* }
            }
        }
    };
}

kinds! {
    /// Worker → host, first frame: protocol version and identity.
    Hello = 1,
    /// Worker → host: the plugin is loaded.
    Ready = 2,
    /// Worker → host: the plugin could not be loaded.
    LoadFailed = 3,
    /// Host → worker: call a method.
    Call = 4,
    /// Worker → host: a call's result.
    Result = 5,
    /// Worker → host: a call raised.
    Error = 6,
    /// Worker → host: one item of a streamed result.
    Chunk = 7,
    /// Worker → host: a stream finished.
    End = 8,
    /// Worker → host: progress of a running call.
    Progress = 9,
    /// Worker → host: usage the plugin measured for a call.
    Usage = 10,
    /// Worker → host: a log record.
    Log = 11,
    /// Host → worker: ask the running call to stop (cooperative).
    Cancel = 12,
    /// Host → worker: raise an exception in the running call's thread.
    Interrupt = 13,
    /// Host → worker: are you there?
    Ping = 14,
    /// Worker → host: answer to a ping.
    Pong = 15,
    /// Host → worker: report your state.
    StatsRequest = 16,
    /// Worker → host: the worker's state.
    Stats = 17,
    /// Either way: the sender dropped every view of one of the receiver's segments.
    Release = 18,
    /// Host → worker: exit now.
    Shutdown = 19,
    /// Worker → host: acknowledges a cancel or interrupt, naming the phase reached.
    CancelAck = 20,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub kind: Kind,
    /// Flag bits.
    pub flags: u8,
    /// Number of descriptors attached.
    pub n_fds: u16,
    /// The request this frame belongs to (0: none).
    pub id: u64,
}

impl Header {
    /// Serialises the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0] = self.kind as u8;
        out[1] = self.flags;
        out[2..4].copy_from_slice(&self.n_fds.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out
    }

    /// Parses the header at the start of `frame`.
    pub fn decode(frame: &[u8]) -> Result<Self, ProtoError> {
        if frame.len() < HEADER_LEN {
            return Err(ProtoError::malformed(
                "frame shorter than its header",
                frame.len(),
            ));
        }
        let kind = Kind::from_u8(frame[0]).ok_or(ProtoError::malformed("unknown frame kind", 0))?;
        let flags = frame[1];
        if flags & !FLAG_BODY_IN_FD != 0 {
            return Err(ProtoError::malformed("unknown frame flags", 1));
        }
        let n_fds = u16::from_le_bytes([frame[2], frame[3]]);
        if usize::from(n_fds) > MAX_FDS {
            return Err(ProtoError::malformed("too many fds", 2));
        }
        if frame[4..8] != [0; 4] {
            return Err(ProtoError::malformed("reserved bytes set", 4));
        }
        let mut id = [0; 8];
        id.copy_from_slice(&frame[8..16]);
        Ok(Self {
            kind,
            flags,
            n_fds,
            id: u64::from_le_bytes(id),
        })
    }
}
