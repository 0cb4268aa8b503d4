//! Shared-memory segments: anonymous memory files (`memfd`) mapped by both sides.
//!
//! A segment has one owner (the side that created it). The owner maps it read-write
//! and may lend it to the peer by sending its file descriptor with a frame; the peer
//! maps it read-only. When the peer drops its last view it tells the owner how many
//! times it received the segment, and the owner may reuse the segment once every
//! send has been accounted for and no local view is alive.
//!
//! Nothing here ever names a file: a memfd lives exactly as long as some process
//! holds its descriptor or a mapping of it, so a crash, a cancel or the death of the
//! host can never leave shared memory behind (there is nothing in `/dev/shm`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::error::ProtoError;

/// Which side created a segment; recorded in the top bit of its [`SegmentId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The host process.
    Host,
    /// The worker process.
    Worker,
}

/// A segment's name on the channel: unique per owner, with the owner in the top bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u64);

const WORKER_BIT: u64 = 1 << 63;

impl SegmentId {
    /// Builds the id of the `n`th segment created by `owner`.
    pub fn new(owner: Side, n: u64) -> Self {
        match owner {
            Side::Host => Self(n & !WORKER_BIT),
            Side::Worker => Self(n | WORKER_BIT),
        }
    }

    /// The side that created the segment.
    pub fn owner(self) -> Side {
        if self.0 & WORKER_BIT == 0 {
            Side::Host
        } else {
            Side::Worker
        }
    }
}

/// Receives the notice that the peer dropped every view of one of its segments.
pub trait ReleaseSink: Send + Sync {
    /// `receipts` is how many frames carrying the segment the receiver had decoded.
    fn release(&self, id: SegmentId, receipts: u32);
}

/// One mapped memfd.
pub struct Segment {
    id: SegmentId,
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    /// Owner side: sends not yet released by the peer.
    outstanding: AtomicU32,
    /// Receiver side: frames that carried this segment to us.
    receipts: AtomicU32,
    /// Receiver side: where to report that we dropped it.
    release: Option<Arc<dyn ReleaseSink>>,
}

// SAFETY: the mapping is plain memory owned by this struct; all mutation of shared
// bookkeeping goes through atomics, and writable access is handed out only through
// `&mut`-free raw slices whose aliasing rules are documented on `as_mut_ptr`.
unsafe impl Send for Segment {}
// SAFETY: see `Send`.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

/// Page-aligned sizes keep mappings of reused segments interchangeable.
/// `None` when the rounded size does not fit a `usize`.
fn round_up(len: usize) -> Option<usize> {
    const ALIGN: usize = 2 << 20;
    len.max(1).div_ceil(ALIGN).checked_mul(ALIGN)
}

impl Segment {
    /// Creates a fresh owned segment of at least `len` bytes, mapped read-write.
    pub fn create(id: SegmentId, len: usize) -> Result<Self, ProtoError> {
        let size = round_up(len).ok_or(ProtoError::io("ftruncate", rustix::io::Errno::FBIG))?;
        let fd =
            rustix::fs::memfd_create(c"cjm-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(|e| ProtoError::io("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, size as u64).map_err(|e| ProtoError::io("ftruncate", e))?;
        // The size is fixed from here on: a peer can never shrink it under our mapping
        // (which would turn reads into SIGBUS).
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)
            .map_err(|e| ProtoError::io("fcntl(F_ADD_SEALS)", e))?;
        let ptr = map(&fd, size, true)?;
        Ok(Self {
            id,
            fd,
            ptr,
            len: size,
            writable: true,
            outstanding: AtomicU32::new(0),
            receipts: AtomicU32::new(0),
            release: None,
        })
    }

    /// Maps a segment the peer lent us, read-only.
    pub fn open_peer(
        id: SegmentId,
        fd: OwnedFd,
        release: Arc<dyn ReleaseSink>,
    ) -> Result<Self, ProtoError> {
        let seals = match rustix::fs::fcntl_get_seals(&fd) {
            Ok(seals) => seals,
            // Only memfds (and other shmem files) have seals; a peer that sends a pipe
            // or a socket is misbehaving, not our OS failing.
            Err(rustix::io::Errno::INVAL) => {
                return Err(ProtoError::malformed(
                    "shared-memory segment is not a memfd",
                    0,
                ));
            }
            Err(e) => return Err(ProtoError::io("fcntl(F_GET_SEALS)", e)),
        };
        if !seals.contains(SealFlags::SHRINK) {
            // An unsealed file could be truncated by the peer while we read it.
            return Err(ProtoError::malformed(
                "shared-memory segment is not sealed",
                0,
            ));
        }
        let stat = rustix::fs::fstat(&fd).map_err(|e| ProtoError::io("fstat", e))?;
        let len =
            usize::try_from(stat.st_size).map_err(|_| ProtoError::malformed("segment size", 0))?;
        let ptr = map(&fd, len, false)?;
        Ok(Self {
            id,
            fd,
            ptr,
            len,
            writable: false,
            outstanding: AtomicU32::new(0),
            receipts: AtomicU32::new(1),
            release: Some(release),
        })
    }

    /// The segment's id.
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a created segment).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd, to attach to a frame.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The whole mapping.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// A raw pointer for writing; only the owner may write, and only while no view of
    /// the written range has been lent (see [`ShmPool`]).
    pub fn as_mut_ptr(&self) -> Option<*mut u8> {
        self.writable.then_some(self.ptr.as_ptr())
    }

    /// Owner side: one more frame lent this segment to the peer. A frame encoded
    /// with [`Writer::lend_own`](crate::Writer::lend_own) (or
    /// [`Writer::buffer`](crate::Writer::buffer)) is counted by
    /// [`Channel::send`](crate::Channel::send) once it has left; call this only
    /// for a reference written some other way, and only for a frame that goes: a
    /// send counted for a frame that never leaves keeps the segment out of the
    /// pool until [`ShmPool::forget_peer`].
    pub fn note_sent(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn note_received(&self) {
        self.receipts.fetch_add(1, Ordering::AcqRel);
    }

    /// Owner side: the peer released `receipts` of our sends.
    pub fn note_released(&self, receipts: u32) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(receipts))
            });
    }

    /// Owner side: sends the peer has not released yet.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Acquire)
    }
}

fn map(fd: &OwnedFd, len: usize, writable: bool) -> Result<NonNull<u8>, ProtoError> {
    if len == 0 {
        return Err(ProtoError::malformed("empty shared-memory segment", 0));
    }
    let prot = if writable {
        ProtFlags::READ | ProtFlags::WRITE
    } else {
        ProtFlags::READ
    };
    // SAFETY: a fresh shared mapping of a file we hold; nothing else aliases the
    // returned range in this process.
    let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0) }
        .map_err(|e| ProtoError::io("mmap", e))?;
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| ProtoError::malformed("mmap returned null", 0))
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `map` and nothing borrows it any more
        // (every view holds an `Arc<Segment>`).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        if let Some(sink) = &self.release {
            sink.release(self.id, self.receipts.load(Ordering::Acquire));
        }
    }
}

/// A zero-copy, read-only view of part of a segment.
#[derive(Clone, Debug)]
pub struct ShmSlice {
    segment: Arc<Segment>,
    offset: usize,
    len: usize,
}

impl ShmSlice {
    /// A view of `len` bytes at `offset`; `None` if out of range.
    pub fn new(segment: Arc<Segment>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= segment.len()).then_some(Self {
            segment,
            offset,
            len,
        })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.segment.as_slice()[self.offset..self.offset + self.len]
    }

    /// The segment behind the view.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Offset into the segment.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// The owner's reusable segments.
///
/// Allocation picks the smallest idle segment that fits (and is not more than twice
/// the request), else creates one. A segment is idle when the pool holds the only
/// reference and the peer has released every send of it.
#[derive(Debug)]
pub struct ShmPool {
    side: Side,
    next: AtomicU32,
    segments: Mutex<Vec<Arc<Segment>>>,
    max_idle_bytes: usize,
}

impl ShmPool {
    /// An empty pool for segments owned by `side`, keeping at most `max_idle_bytes`
    /// of idle segments for reuse.
    pub fn new(side: Side, max_idle_bytes: usize) -> Self {
        Self {
            side,
            next: AtomicU32::new(1),
            segments: Mutex::new(Vec::new()),
            max_idle_bytes,
        }
    }

    /// A writable buffer of exactly `len` bytes.
    pub fn alloc(&self, len: usize) -> Result<ShmBufferMut, ProtoError> {
        let mut segments = self
            .segments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = |s: &Arc<Segment>| Arc::strong_count(s) == 1 && s.outstanding() == 0;
        let best = segments
            .iter()
            .filter(|s| {
                idle(s)
                    && s.len() >= len
                    && s.len() <= round_up(len).map_or(usize::MAX, |r| r.saturating_mul(2))
            })
            .min_by_key(|s| s.len())
            .cloned();
        let segment = if let Some(s) = best {
            s
        } else {
            self.trim(&mut segments, len);
            let n = u64::from(self.next.fetch_add(1, Ordering::Relaxed));
            let s = Arc::new(Segment::create(SegmentId::new(self.side, n), len)?);
            segments.push(Arc::clone(&s));
            s
        };
        Ok(ShmBufferMut { segment, len })
    }

    /// Frees idle segments until the idle total plus `incoming` fits the budget.
    fn trim(&self, segments: &mut Vec<Arc<Segment>>, incoming: usize) {
        let idle_total: usize = segments
            .iter()
            .filter(|s| Arc::strong_count(s) == 1 && s.outstanding() == 0)
            .map(|s| s.len())
            .sum();
        let mut excess = (idle_total + incoming).saturating_sub(self.max_idle_bytes);
        segments.retain(|s| {
            if excess > 0 && Arc::strong_count(s) == 1 && s.outstanding() == 0 {
                excess = excess.saturating_sub(s.len());
                false
            } else {
                true
            }
        });
    }

    /// Looks up one of our own segments that the peer sent back to us.
    pub fn get(&self, id: SegmentId) -> Option<Arc<Segment>> {
        let segments = self
            .segments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        segments.iter().find(|s| s.id() == id).cloned()
    }

    /// The peer released `receipts` sends of segment `id`.
    pub fn released(&self, id: SegmentId, receipts: u32) {
        if let Some(s) = self.get(id) {
            s.note_released(receipts);
        }
    }

    /// Bytes mapped by the pool, idle or lent.
    pub fn mapped_bytes(&self) -> usize {
        let segments = self
            .segments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        segments.iter().map(|s| s.len()).sum()
    }

    /// The peer is gone: nothing it held counts any more. Drops every segment no
    /// local view still uses.
    pub fn forget_peer(&self) {
        let mut segments = self
            .segments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in segments.iter() {
            s.outstanding.store(0, Ordering::Release);
        }
        segments.retain(|s| Arc::strong_count(s) > 1);
    }

    /// Drops every idle segment.
    pub fn shrink(&self) {
        let mut segments = self
            .segments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        segments.retain(|s| !(Arc::strong_count(s) == 1 && s.outstanding() == 0));
    }
}

/// A writable buffer from a [`ShmPool`]; freeze it to send it.
#[derive(Debug)]
pub struct ShmBufferMut {
    segment: Arc<Segment>,
    len: usize,
}

impl ShmBufferMut {
    /// The writable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let ptr = self
            .segment
            .as_mut_ptr()
            // Invariant: pools only ever hold segments created by `Segment::create`.
            .expect("pool segments are writable");
        // SAFETY: the pool hands a segment out only when nothing else references it
        // (strong count 1, nothing outstanding), and `self` holds it exclusively until
        // frozen, so this is the only live reference to the range.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.len) }
    }

    /// The segment behind the buffer.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Makes the buffer read-only and shareable.
    pub fn freeze(self) -> ShmSlice {
        ShmSlice {
            segment: self.segment,
            offset: 0,
            len: self.len,
        }
    }
}

/// Segments the peer lent us that are still mapped, so a segment sent again is mapped
/// once.
#[derive(Default)]
pub struct PeerSegments {
    live: Mutex<std::collections::HashMap<SegmentId, Weak<Segment>>>,
}

impl std::fmt::Debug for PeerSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSegments").finish_non_exhaustive()
    }
}

impl PeerSegments {
    /// The mapping for `id`, reusing a live one (and closing `fd`) or mapping `fd`.
    pub fn resolve(
        &self,
        id: SegmentId,
        fd: Option<OwnedFd>,
        release: &Arc<dyn ReleaseSink>,
    ) -> Result<Arc<Segment>, ProtoError> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(seg) = live.get(&id).and_then(Weak::upgrade) {
            seg.note_received();
            return Ok(seg);
        }
        let fd = fd.ok_or_else(|| ProtoError::malformed("segment reference without its fd", 0))?;
        let seg = Arc::new(Segment::open_peer(id, fd, Arc::clone(release))?);
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(id, Arc::downgrade(&seg));
        Ok(seg)
    }
}
