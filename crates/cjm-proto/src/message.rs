//! Typed messages and their bodies.

use crate::codec::{DecodeCtx, Reader, Writer, tag};
use crate::error::ProtoError;
use crate::frame::Kind;
use crate::shm::{SegmentId, Side};
use crate::value::Value;

/// The protocol this build speaks; the handshake rejects any other.
pub const PROTOCOL: &str = "cjm/1";

/// The worker's first frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Protocol name and version, e.g. `cjm/1`.
    pub protocol: String,
    /// The worker runtime's version.
    pub runtime: String,
    /// The worker's pid.
    pub pid: u32,
    /// The interpreter's version string.
    pub python: String,
}

/// A method call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Method name (`execute`, `execute_stream`, `initialize`, …).
    pub method: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Vec<(String, Value)>,
}

impl Call {
    /// Encodes the call's body, as sent by `me`.
    pub fn encode(&self, me: Side) -> Result<Writer, ProtoError> {
        let mut w = Writer::new();
        self.encode_into(&mut w, me)?;
        Ok(w)
    }

    fn encode_into(&self, w: &mut Writer, me: Side) -> Result<(), ProtoError> {
        w.len_bytes(self.method.as_bytes())?;
        w.header(tag::LIST, self.args.len())?;
        for a in &self.args {
            w.value(a, me)?;
        }
        w.header(tag::MAP, self.kwargs.len())?;
        for (k, v) in &self.kwargs {
            w.len_bytes(k.as_bytes())?;
            w.value(v, me)?;
        }
        Ok(())
    }
}

/// A log record from the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Python logging level (10 debug … 50 critical).
    pub level: i64,
    /// Logger name.
    pub logger: String,
    /// The formatted message.
    pub message: String,
}

/// Every message, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// See [`Kind::Hello`].
    Hello(Hello),
    /// See [`Kind::Ready`]: plugin identity (`name`, `version`, …).
    Ready(Value),
    /// See [`Kind::LoadFailed`]: the raised exception.
    LoadFailed(Value),
    /// See [`Kind::Call`].
    Call(Call),
    /// See [`Kind::Result`].
    Result(Value),
    /// See [`Kind::Error`]: the raised exception.
    Error(Value),
    /// See [`Kind::Chunk`].
    Chunk(Value),
    /// See [`Kind::End`].
    End,
    /// See [`Kind::Progress`].
    Progress {
        /// 0.0–1.0, or -1.0 for indeterminate.
        progress: f64,
        /// Status text.
        message: String,
    },
    /// See [`Kind::Usage`].
    Usage(Value),
    /// See [`Kind::Log`].
    Log(LogRecord),
    /// See [`Kind::Cancel`].
    Cancel,
    /// See [`Kind::Interrupt`].
    Interrupt,
    /// See [`Kind::Ping`].
    Ping,
    /// See [`Kind::Pong`].
    Pong,
    /// See [`Kind::StatsRequest`].
    StatsRequest,
    /// See [`Kind::Stats`].
    Stats(Value),
    /// See [`Kind::Release`].
    Release {
        /// The receiver's segment.
        segment: SegmentId,
        /// Frames that carried it to the sender.
        receipts: u32,
    },
    /// See [`Kind::Shutdown`].
    Shutdown,
    /// See [`Kind::CancelAck`].
    CancelAck {
        /// `cooperative` or `interrupted`.
        phase: String,
    },
}

impl Message {
    /// The frame kind that carries this message.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Hello(_) => Kind::Hello,
            Self::Ready(_) => Kind::Ready,
            Self::LoadFailed(_) => Kind::LoadFailed,
            Self::Call(_) => Kind::Call,
            Self::Result(_) => Kind::Result,
            Self::Error(_) => Kind::Error,
            Self::Chunk(_) => Kind::Chunk,
            Self::End => Kind::End,
            Self::Progress { .. } => Kind::Progress,
            Self::Usage(_) => Kind::Usage,
            Self::Log(_) => Kind::Log,
            Self::Cancel => Kind::Cancel,
            Self::Interrupt => Kind::Interrupt,
            Self::Ping => Kind::Ping,
            Self::Pong => Kind::Pong,
            Self::StatsRequest => Kind::StatsRequest,
            Self::Stats(_) => Kind::Stats,
            Self::Release { .. } => Kind::Release,
            Self::Shutdown => Kind::Shutdown,
            Self::CancelAck { .. } => Kind::CancelAck,
        }
    }

    /// Encodes the body, as sent by `me`.
    pub fn encode(&self, me: Side) -> Result<Writer, ProtoError> {
        let mut w = Writer::new();
        match self {
            Self::Hello(h) => w.value(
                &Value::map([
                    ("protocol", Value::from(h.protocol.as_str())),
                    ("runtime", Value::from(h.runtime.as_str())),
                    ("pid", Value::from(h.pid)),
                    ("python", Value::from(h.python.as_str())),
                ]),
                me,
            )?,
            Self::Call(c) => c.encode_into(&mut w, me)?,
            Self::Ready(v)
            | Self::LoadFailed(v)
            | Self::Result(v)
            | Self::Error(v)
            | Self::Chunk(v)
            | Self::Usage(v)
            | Self::Stats(v) => w.value(v, me)?,
            Self::Progress { progress, message } => {
                w.float(*progress);
                w.str(message)?;
            }
            Self::Log(r) => {
                w.int(r.level);
                w.str(&r.logger)?;
                w.str(&r.message)?;
            }
            Self::Release { segment, receipts } => {
                w.u64(segment.0);
                w.u32(*receipts);
            }
            Self::CancelAck { phase } => w.str(phase)?,
            Self::End
            | Self::Cancel
            | Self::Interrupt
            | Self::Ping
            | Self::Pong
            | Self::StatsRequest
            | Self::Shutdown => {}
        }
        Ok(w)
    }

    /// Decodes the body of a frame of `kind`.
    pub fn decode(kind: Kind, body: &[u8], ctx: &mut DecodeCtx<'_>) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let msg = match kind {
            Kind::Hello => {
                let v = r.value(ctx)?;
                let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
                Self::Hello(Hello {
                    protocol: s("protocol").ok_or(r.err("hello without protocol"))?,
                    runtime: s("runtime").unwrap_or_default(),
                    pid: v
                        .get("pid")
                        .and_then(Value::as_i64)
                        .and_then(|p| u32::try_from(p).ok())
                        .ok_or(r.err("hello without pid"))?,
                    python: s("python").unwrap_or_default(),
                })
            }
            Kind::Call => {
                let method = r.len_str()?.to_owned();
                let Value::List(args) = r.value(ctx)? else {
                    return Err(r.err("call args must be a list"));
                };
                let Value::Map(kwargs) = r.value(ctx)? else {
                    return Err(r.err("call kwargs must be a map"));
                };
                Self::Call(Call {
                    method,
                    args,
                    kwargs,
                })
            }
            Kind::Ready => Self::Ready(r.value(ctx)?),
            Kind::LoadFailed => Self::LoadFailed(r.value(ctx)?),
            Kind::Result => Self::Result(r.value(ctx)?),
            Kind::Error => Self::Error(r.value(ctx)?),
            Kind::Chunk => Self::Chunk(r.value(ctx)?),
            Kind::Usage => Self::Usage(r.value(ctx)?),
            Kind::Stats => Self::Stats(r.value(ctx)?),
            Kind::Progress => {
                if r.u8()? != tag::FLOAT {
                    return Err(r.err("progress must be a float"));
                }
                let progress = r.f64()?;
                let message = r.str_value()?.to_owned();
                Self::Progress { progress, message }
            }
            Kind::Log => {
                if r.u8()? != tag::INT {
                    return Err(r.err("log level must be an int"));
                }
                let level = r.i64()?;
                let logger = r.str_value()?.to_owned();
                let message = r.str_value()?.to_owned();
                Self::Log(LogRecord {
                    level,
                    logger,
                    message,
                })
            }
            Kind::Release => Self::Release {
                segment: SegmentId(r.u64()?),
                receipts: r.u32()?,
            },
            Kind::CancelAck => Self::CancelAck {
                phase: r.str_value()?.to_owned(),
            },
            Kind::End => Self::End,
            Kind::Cancel => Self::Cancel,
            Kind::Interrupt => Self::Interrupt,
            Kind::Ping => Self::Ping,
            Kind::Pong => Self::Pong,
            Kind::StatsRequest => Self::StatsRequest,
            Kind::Shutdown => Self::Shutdown,
        };
        if r.remaining() != 0 {
            return Err(r.err("trailing bytes after the body"));
        }
        Ok(msg)
    }
}

/// Decodes a whole frame (header and body) from raw bytes, with no descriptors and no
/// shared memory: what the fuzz target drives.
pub fn decode_frame_bytes(frame: &[u8]) -> Result<(crate::frame::Header, Message), ProtoError> {
    let header = crate::frame::Header::decode(frame)?;
    let mut fds: Vec<Option<std::os::fd::OwnedFd>> = Vec::new();
    let mut ctx = DecodeCtx {
        fds: &mut fds,
        segments: &crate::codec::NoSegments,
    };
    let msg = Message::decode(header.kind, &frame[crate::frame::HEADER_LEN..], &mut ctx)?;
    Ok((header, msg))
}
