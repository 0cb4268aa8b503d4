//! The value codec: a small tagged binary format.
//!
//! Every value starts with a one-byte tag. Integers and floats are little-endian,
//! lengths and counts are `u32`. Bytes above a threshold are not copied into the
//! frame: they are named by a shared-memory reference (segment id, offset, length)
//! and the segment's fd rides along with the frame. Decoding checks every length
//! against the bytes actually present and bounds nesting, so a hostile frame yields
//! an error, never a panic, a huge allocation or code to run.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::error::ProtoError;
use crate::shm::{Segment, SegmentId, ShmSlice};
use crate::value::{Array, Buffer, Value};

/// Tags of the value codec.
pub mod tag {
    /// `None`.
    pub const NONE: u8 = 0;
    /// `False`.
    pub const FALSE: u8 = 1;
    /// `True`.
    pub const TRUE: u8 = 2;
    /// `i64`.
    pub const INT: u8 = 3;
    /// `f64`.
    pub const FLOAT: u8 = 4;
    /// UTF-8 string.
    pub const STR: u8 = 5;
    /// Inline bytes.
    pub const BYTES: u8 = 6;
    /// List: count, then values.
    pub const LIST: u8 = 7;
    /// Map: count, then (string, value) pairs.
    pub const MAP: u8 = 8;
    /// Big integer as decimal text.
    pub const BIGINT: u8 = 9;
    /// Bytes in shared memory.
    pub const SHM_BYTES: u8 = 10;
    /// Array: dtype string, ndim, shape, then a bytes value (inline or shm).
    pub const ARRAY: u8 = 11;
}

/// No fd is attached for this segment reference (the receiver owns the segment).
pub const NO_FD: u16 = u16::MAX;

/// Deepest nesting a decoder accepts.
pub const MAX_DEPTH: usize = 128;

/// Most items a decoded container reserves room for before they are read. A count is
/// only checked against the bytes left (one per item) and a `Value` is 72 bytes, so
/// trusting it would let a large spilled frame ask for 72 times its size up front.
const MAX_PREALLOC: usize = 1024;

/// Appends wire primitives to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    /// The encoded bytes.
    pub buf: Vec<u8>,
    /// Segments whose fds must be attached to the frame, in fd-index order.
    pub segments: Vec<Arc<Segment>>,
    /// One entry per reference to one of our own segments: the sends that
    /// [`Channel::send`](crate::Channel::send) counts once the frame has left,
    /// so a frame that never leaves lends nothing.
    lent: Vec<Arc<Segment>>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tag or other byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length-prefixed byte run.
    pub fn len_bytes(&mut self, b: &[u8]) -> Result<(), ProtoError> {
        let n = u32::try_from(b.len())
            .map_err(|_| ProtoError::Unencodable(format!("{} bytes inline", b.len())))?;
        self.u32(n);
        self.buf.extend_from_slice(b);
        Ok(())
    }

    /// A tagged string.
    pub fn str(&mut self, s: &str) -> Result<(), ProtoError> {
        self.u8(tag::STR);
        self.len_bytes(s.as_bytes())
    }

    /// A tagged integer.
    pub fn int(&mut self, i: i64) {
        self.u8(tag::INT);
        self.buf.extend_from_slice(&i.to_le_bytes());
    }

    /// A tagged float.
    pub fn float(&mut self, f: f64) {
        self.u8(tag::FLOAT);
        self.buf.extend_from_slice(&f.to_le_bytes());
    }

    /// A list or map header.
    pub fn header(&mut self, t: u8, count: usize) -> Result<(), ProtoError> {
        let n = u32::try_from(count)
            .map_err(|_| ProtoError::Unencodable(format!("{count} items in one container")))?;
        self.u8(t);
        self.u32(n);
        Ok(())
    }

    /// A tagged reference to `len` bytes at `offset` in one of our own segments,
    /// lent to the peer: its fd rides along, and the send is counted (so the
    /// segment stays out of the pool until the peer releases it) only once the
    /// frame has left, by [`Channel::send`](crate::Channel::send).
    pub fn lend_own(&mut self, segment: &Arc<Segment>, offset: usize, len: usize) {
        self.u8(tag::SHM_BYTES);
        self.shm_ref(segment, offset, len, true);
        self.lent.push(Arc::clone(segment));
    }

    /// Owner side: counts the sends this frame makes, just before it goes; the
    /// peer can only release what it received, so no release comes before this.
    pub(crate) fn count_lent(&self) {
        for s in &self.lent {
            s.note_sent();
        }
    }

    /// Owner side: takes back what [`Writer::count_lent`] counted, for a frame
    /// that did not leave.
    pub(crate) fn uncount_lent(&self) {
        for s in &self.lent {
            s.note_released(1);
        }
    }

    /// A shared-memory reference body (without the tag), attaching the segment's fd
    /// unless `attach` is false (when the receiver owns the segment). It counts no
    /// send: for a segment of our own, [`Writer::lend_own`] does.
    pub fn shm_ref(&mut self, segment: &Arc<Segment>, offset: usize, len: usize, attach: bool) {
        let fd_index = if attach {
            let i = self
                .segments
                .iter()
                .position(|s| Arc::ptr_eq(s, segment))
                .unwrap_or_else(|| {
                    self.segments.push(Arc::clone(segment));
                    self.segments.len() - 1
                });
            u16::try_from(i).unwrap_or(NO_FD)
        } else {
            NO_FD
        };
        self.u64(segment.id().0);
        self.u16(fd_index);
        self.u64(offset as u64);
        self.u64(len as u64);
    }

    /// Encodes a [`Value`].
    pub fn value(&mut self, v: &Value, me: crate::Side) -> Result<(), ProtoError> {
        match v {
            Value::None => self.u8(tag::NONE),
            Value::Bool(false) => self.u8(tag::FALSE),
            Value::Bool(true) => self.u8(tag::TRUE),
            Value::Int(i) => self.int(*i),
            Value::BigInt(s) => {
                self.u8(tag::BIGINT);
                self.len_bytes(s.as_bytes())?;
            }
            Value::Float(f) => self.float(*f),
            Value::Str(s) => self.str(s)?,
            Value::Bytes(b) => self.buffer(b, me)?,
            Value::List(items) => {
                self.header(tag::LIST, items.len())?;
                for item in items {
                    self.value(item, me)?;
                }
            }
            Value::Map(pairs) => {
                self.header(tag::MAP, pairs.len())?;
                for (k, item) in pairs {
                    self.len_bytes(k.as_bytes())?;
                    self.value(item, me)?;
                }
            }
            Value::Array(a) => {
                self.u8(tag::ARRAY);
                self.len_bytes(a.dtype.as_bytes())?;
                let ndim = u8::try_from(a.shape.len()).map_err(|_| {
                    ProtoError::Unencodable("array with over 255 dimensions".into())
                })?;
                self.u8(ndim);
                for d in &a.shape {
                    self.u64(*d);
                }
                self.buffer(&a.data, me)?;
            }
        }
        Ok(())
    }

    /// Encodes bytes inline or as a shared-memory reference.
    pub fn buffer(&mut self, b: &Buffer, me: crate::Side) -> Result<(), ProtoError> {
        match b {
            Buffer::Inline(bytes) => {
                self.u8(tag::BYTES);
                self.len_bytes(bytes)
            }
            Buffer::Shm(s) => {
                let len = s.as_slice().len();
                if s.segment().id().owner() == me {
                    self.lend_own(s.segment(), s.offset(), len);
                } else {
                    // The peer's own segment, going back: it needs no fd and
                    // counts no send.
                    self.u8(tag::SHM_BYTES);
                    self.shm_ref(s.segment(), s.offset(), len, false);
                }
                Ok(())
            }
        }
    }
}

/// Resolves shared-memory references while decoding.
pub trait Segments {
    /// The segment `id`, given the fd that came with the frame (if any).
    fn resolve(&self, id: SegmentId, fd: Option<OwnedFd>) -> Result<Arc<Segment>, ProtoError>;
}

/// A resolver for contexts where shared memory is not allowed (fuzzing, tests).
#[derive(Debug, Default)]
pub struct NoSegments;

impl Segments for NoSegments {
    fn resolve(&self, _: SegmentId, _: Option<OwnedFd>) -> Result<Arc<Segment>, ProtoError> {
        Err(ProtoError::malformed(
            "shared memory is not available here",
            0,
        ))
    }
}

/// A shared-memory reference as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmRef {
    /// The segment.
    pub id: SegmentId,
    /// Index into the frame's fds, or [`NO_FD`].
    pub fd_index: u16,
    /// Offset of the bytes in the segment.
    pub offset: u64,
    /// Length of the bytes.
    pub len: u64,
}

/// Reads wire primitives from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// An error at the current offset.
    pub fn err(&self, what: &'static str) -> ProtoError {
        ProtoError::malformed(what, self.pos)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if n > self.remaining() {
            return Err(self.err("truncated"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }

    /// A `u16`.
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An `i64` (after its tag).
    pub fn i64(&mut self) -> Result<i64, ProtoError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// An `f64` (after its tag).
    pub fn f64(&mut self) -> Result<f64, ProtoError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed byte run.
    pub fn len_bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string.
    pub fn len_str(&mut self) -> Result<&'a str, ProtoError> {
        let at = self.pos;
        let b = self.len_bytes()?;
        std::str::from_utf8(b).map_err(|_| ProtoError::malformed("invalid utf-8", at))
    }

    /// A container count, checked against the bytes left (each item takes ≥ 1 byte).
    pub fn count(&mut self) -> Result<usize, ProtoError> {
        let n = self.u32()? as usize;
        if n > self.remaining() {
            return Err(self.err("container count exceeds frame"));
        }
        Ok(n)
    }

    /// A shared-memory reference body (after its tag).
    pub fn shm_ref(&mut self) -> Result<ShmRef, ProtoError> {
        Ok(ShmRef {
            id: SegmentId(self.u64()?),
            fd_index: self.u16()?,
            offset: self.u64()?,
            len: self.u64()?,
        })
    }

    /// A tagged string value.
    pub fn str_value(&mut self) -> Result<&'a str, ProtoError> {
        if self.u8()? != tag::STR {
            return Err(self.err("expected a string"));
        }
        self.len_str()
    }

    /// Decodes one [`Value`].
    pub fn value(&mut self, ctx: &mut DecodeCtx<'_>) -> Result<Value, ProtoError> {
        self.value_at(ctx, 0)
    }

    fn value_at(&mut self, ctx: &mut DecodeCtx<'_>, depth: usize) -> Result<Value, ProtoError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let t = self.u8()?;
        Ok(match t {
            tag::NONE => Value::None,
            tag::FALSE => Value::Bool(false),
            tag::TRUE => Value::Bool(true),
            tag::INT => Value::Int(self.i64()?),
            tag::FLOAT => Value::Float(self.f64()?),
            tag::STR => Value::Str(self.len_str()?.to_owned()),
            tag::BIGINT => {
                let s = self.len_str()?;
                let digits = s.strip_prefix('-').unwrap_or(s);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(self.err("big integer is not decimal"));
                }
                Value::BigInt(s.to_owned())
            }
            tag::BYTES | tag::SHM_BYTES => Value::Bytes(self.buffer_after_tag(t, ctx)?),
            tag::LIST => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n.min(MAX_PREALLOC));
                for _ in 0..n {
                    items.push(self.value_at(ctx, depth + 1)?);
                }
                Value::List(items)
            }
            tag::MAP => {
                let n = self.count()?;
                let mut pairs = Vec::with_capacity(n.min(MAX_PREALLOC));
                for _ in 0..n {
                    let k = self.len_str()?.to_owned();
                    pairs.push((k, self.value_at(ctx, depth + 1)?));
                }
                Value::Map(pairs)
            }
            tag::ARRAY => {
                let dtype = self.len_str()?.to_owned();
                let ndim = self.u8()? as usize;
                let mut shape = Vec::with_capacity(ndim);
                for _ in 0..ndim {
                    shape.push(self.u64()?);
                }
                let t = self.u8()?;
                if t != tag::BYTES && t != tag::SHM_BYTES {
                    return Err(self.err("array data must be bytes"));
                }
                let data = self.buffer_after_tag(t, ctx)?;
                Value::Array(Array { dtype, shape, data })
            }
            _ => return Err(self.err("unknown value tag")),
        })
    }

    fn buffer_after_tag(&mut self, t: u8, ctx: &mut DecodeCtx<'_>) -> Result<Buffer, ProtoError> {
        if t == tag::BYTES {
            return Ok(Buffer::Inline(self.len_bytes()?.into()));
        }
        let at = self.pos;
        let r = self.shm_ref()?;
        let segment = ctx.segment(&r).map_err(|e| match e {
            ProtoError::Malformed { what, .. } => ProtoError::malformed(what, at),
            other => other,
        })?;
        let (offset, len) = (
            usize::try_from(r.offset).map_err(|_| ProtoError::malformed("offset", at))?,
            usize::try_from(r.len).map_err(|_| ProtoError::malformed("length", at))?,
        );
        ShmSlice::new(segment, offset, len)
            .map(Buffer::Shm)
            .ok_or_else(|| ProtoError::malformed("shared-memory range outside its segment", at))
    }
}

/// What decoding needs beyond the bytes: the frame's fds and a segment resolver.
pub struct DecodeCtx<'a> {
    /// The fds that came with the frame; each may be taken once.
    pub fds: &'a mut [Option<OwnedFd>],
    /// Resolves segment ids to mappings.
    pub segments: &'a dyn Segments,
}

impl std::fmt::Debug for DecodeCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeCtx")
            .field("fds", &self.fds.len())
            .finish_non_exhaustive()
    }
}

impl DecodeCtx<'_> {
    /// Resolves a reference, taking its fd from the frame.
    pub fn segment(&mut self, r: &ShmRef) -> Result<Arc<Segment>, ProtoError> {
        let fd = if r.fd_index == NO_FD {
            None
        } else {
            let slot = self
                .fds
                .get_mut(usize::from(r.fd_index))
                .ok_or_else(|| ProtoError::malformed("fd index out of range", 0))?;
            // A segment referenced twice in one frame shares one fd: later references
            // find the mapping the first one made.
            slot.take()
        };
        self.segments.resolve(r.id, fd)
    }
}
