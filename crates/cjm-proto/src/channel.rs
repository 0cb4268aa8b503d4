//! The channel: one end of a `SOCK_SEQPACKET` socketpair.
//!
//! Sequenced packets keep message boundaries, so each `sendmsg` is one whole frame
//! and several threads may send on one channel without a lock: the kernel never
//! interleaves two frames. There is no listening socket and no address: the only
//! way in is the descriptor the host handed to its worker.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::codec::Writer;
use crate::error::ProtoError;
use crate::frame::{FLAG_BODY_IN_FD, HEADER_LEN, Header, Kind, MAX_FDS, MAX_INLINE_BODY};

/// One received frame.
#[derive(Debug)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The body bytes.
    pub body: Vec<u8>,
    /// Descriptors that came with the frame, in order; decoding takes them.
    pub fds: Vec<Option<OwnedFd>>,
}

/// One end of a private, already-connected channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

const RECV_BUF: usize = HEADER_LEN + MAX_INLINE_BODY;

impl Channel {
    /// A connected pair: `(host end, worker end)`. Both are close-on-exec; the
    /// spawner clears the flag on the worker end for exactly one child.
    pub fn pair() -> Result<(Self, OwnedFd), ProtoError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| ProtoError::io("socketpair", e))?;
        Ok((Self { fd: a }, b))
    }

    /// Wraps an inherited descriptor (the worker's end).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The raw descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Shuts both directions down, waking a thread blocked in [`Channel::recv`].
    pub fn shutdown(&self) {
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
    }

    /// Sends a frame whose body is in `body` (with the segments it references).
    /// The segments it lends count as sent only if the frame leaves.
    pub fn send(&self, kind: Kind, id: u64, body: &Writer) -> Result<(), ProtoError> {
        let mut fds: Vec<BorrowedFd<'_>> = body.segments.iter().map(|s| s.fd()).collect();
        let spill;
        let mut flags = 0;
        let inline: &[u8] = if body.buf.len() > MAX_INLINE_BODY {
            spill = spill_body(&body.buf)?;
            fds.push(spill.as_fd());
            flags |= FLAG_BODY_IN_FD;
            &[]
        } else {
            &body.buf
        };
        if fds.len() > MAX_FDS {
            return Err(ProtoError::Unencodable(format!(
                "{} shared buffers in one message (at most {MAX_FDS})",
                fds.len()
            )));
        }
        let header = Header {
            kind,
            flags,
            n_fds: fds.len() as u16,
            id,
        }
        .encode();
        body.count_lent();
        let sent = self.send_raw(&[IoSlice::new(&header), IoSlice::new(inline)], &fds);
        if sent.is_err() {
            body.uncount_lent();
        }
        sent
    }

    /// Sends a frame with an empty body.
    pub fn send_empty(&self, kind: Kind, id: u64) -> Result<(), ProtoError> {
        let header = Header {
            kind,
            flags: 0,
            n_fds: 0,
            id,
        }
        .encode();
        self.send_raw(&[IoSlice::new(&header)], &[])
    }

    /// Sends raw bytes as one frame (tests use it to send garbage).
    pub fn send_raw(&self, iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> Result<(), ProtoError> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(ProtoError::Unencodable("too many descriptors".into()));
        }
        loop {
            match rustix::net::sendmsg(&self.fd, iov, &mut anc, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ProtoError::io("sendmsg", e)),
            }
        }
    }

    /// Receives one frame; `Ok(None)` when the peer has closed its end.
    pub fn recv(&self) -> Result<Option<Frame>, ProtoError> {
        thread_local! {
            // One receive buffer per receiving thread: zeroing a fresh 60 KiB buffer
            // for every frame cost more than the frame itself.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; RECV_BUF]);
        }
        SCRATCH.with_borrow_mut(|buf| self.recv_into(buf))
    }

    fn recv_into(&self, buf: &mut [u8]) -> Result<Option<Frame>, ProtoError> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let msg = loop {
            let mut iov = [IoSliceMut::new(&mut *buf)];
            match rustix::net::recvmsg(&self.fd, &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC) {
                Ok(m) => break m,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ProtoError::io("recvmsg", e)),
            }
        };
        let mut fds: Vec<Option<OwnedFd>> = Vec::new();
        for m in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights.map(Some));
            }
        }
        if msg.bytes == 0 {
            // A closed peer and an empty packet both read as zero bytes; only a hung-up
            // socket is the end of the stream.
            return if self.hung_up() {
                Ok(None)
            } else {
                Err(ProtoError::malformed("empty frame", 0))
            };
        }
        if msg.flags.contains(rustix::net::ReturnFlags::TRUNC)
            || msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
        {
            return Err(ProtoError::malformed(
                "frame larger than the receive buffer",
                RECV_BUF,
            ));
        }
        let buf = &buf[..msg.bytes];
        let header = Header::decode(buf)?;
        if usize::from(header.n_fds) != fds.len() {
            return Err(ProtoError::malformed(
                "fd count does not match the header",
                2,
            ));
        }
        let body = if header.flags & FLAG_BODY_IN_FD != 0 {
            if buf.len() != HEADER_LEN {
                return Err(ProtoError::malformed(
                    "inline body beside an fd body",
                    HEADER_LEN,
                ));
            }
            let fd = fds
                .pop()
                .flatten()
                .ok_or(ProtoError::malformed("fd body without an fd", 2))?;
            read_spilled(&fd)?
        } else {
            buf[HEADER_LEN..].to_vec()
        };
        Ok(Some(Frame { header, body, fds }))
    }
}

impl Channel {
    /// Whether the peer closed its end or we shut ours down. An error counts as yes:
    /// treating a zero-byte read as the end is the safe default.
    fn hung_up(&self) -> bool {
        let mut fds = [PollFd::new(&self.fd, PollFlags::RDHUP)];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&now)).map_or(true, |_| {
            fds[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP)
        })
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Largest body accepted through a memfd. Bulk bytes travel as shared-memory
/// references, so a body this large is already a very large JSON-like value; the
/// bound keeps a hostile peer from making the host allocate without limit.
const MAX_SPILLED_BODY: u64 = 256 << 20;

fn spill_body(body: &[u8]) -> Result<OwnedFd, ProtoError> {
    let fd = rustix::fs::memfd_create(
        c"cjm-frame",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| ProtoError::io("memfd_create", e))?;
    let mut written = 0;
    while written < body.len() {
        let n = rustix::io::pwrite(&fd, &body[written..], written as u64)
            .map_err(|e| ProtoError::io("pwrite", e))?;
        written += n;
    }
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE)
        .map_err(|e| ProtoError::io("fcntl(F_ADD_SEALS)", e))?;
    Ok(fd)
}

fn read_spilled(fd: &OwnedFd) -> Result<Vec<u8>, ProtoError> {
    let seals = match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) => seals,
        // Only memfds (and other shmem files) have seals: the peer sent something else.
        Err(rustix::io::Errno::INVAL) => {
            return Err(ProtoError::malformed("fd body is not a memfd", 0));
        }
        Err(e) => return Err(ProtoError::io("fcntl(F_GET_SEALS)", e)),
    };
    if !seals.contains(SealFlags::WRITE | SealFlags::SHRINK) {
        return Err(ProtoError::malformed("fd body is not sealed", 0));
    }
    let size = rustix::fs::fstat(fd)
        .map_err(|e| ProtoError::io("fstat", e))?
        .st_size;
    let size = u64::try_from(size).map_err(|_| ProtoError::malformed("fd body size", 0))?;
    if size > MAX_SPILLED_BODY {
        return Err(ProtoError::malformed("fd body too large", 0));
    }
    let mut out = vec![0u8; size as usize];
    let mut read = 0;
    while read < out.len() {
        let n = rustix::io::pread(fd, &mut out[read..], read as u64)
            .map_err(|e| ProtoError::io("pread", e))?;
        if n == 0 {
            return Err(ProtoError::malformed("fd body shorter than its size", read));
        }
        read += n;
    }
    Ok(out)
}
