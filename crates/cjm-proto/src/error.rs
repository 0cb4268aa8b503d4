//! [`ProtoError`]: what goes wrong encoding, decoding or moving a frame.

use std::io;

/// Everything that can go wrong encoding, decoding or moving a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The frame or value bytes are malformed.
    #[error("malformed frame: {what} at byte {offset}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
        /// Where in the frame body it was found.
        offset: usize,
    },
    /// The peer speaks another protocol version.
    #[error("protocol mismatch: host speaks {ours}, worker speaks {theirs}")]
    VersionMismatch {
        /// Our protocol name.
        ours: String,
        /// The peer's protocol name.
        theirs: String,
    },
    /// A message arrived where another kind was expected.
    #[error("unexpected {got} message, expected {expected}")]
    Unexpected {
        /// The kind we got.
        got: &'static str,
        /// What we expected.
        expected: &'static str,
    },
    /// A value cannot be carried by the codec.
    #[error("cannot encode value: {0}")]
    Unencodable(String),
    /// The channel or a shared-memory segment failed at the OS level.
    #[error("{op} failed")]
    Io {
        /// The operation that failed (e.g. `sendmsg`, `mmap`).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ProtoError {
    pub(crate) fn malformed(what: &'static str, offset: usize) -> Self {
        Self::Malformed { what, offset }
    }

    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Io {
            op,
            source: source.into(),
        }
    }
}
