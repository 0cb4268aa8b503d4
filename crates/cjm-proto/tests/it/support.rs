//! Helpers shared by the test modules: channel pairs, a segment resolver that plays
//! either side, a release sink that records, raw frame builders and `/proc` probes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cjm_proto::{
    Channel, DecodeCtx, Frame, HEADER_LEN, Header, Message, PeerSegments, ProtoError, ReleaseSink,
    Segment, SegmentId, Segments, ShmPool, Side, Writer,
};
use rustix::net::sockopt::{Timeout, set_socket_timeout};

/// How long a test waits for another thread or process before it fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A connected pair of channels: `(host end, worker end)`.
///
/// Both ends time out after [`PATIENCE`], so a frame that never comes fails the test
/// with an I/O error instead of hanging it.
pub(crate) fn pair() -> (Channel, Channel) {
    let (host, worker) = Channel::pair().expect("socketpair");
    for fd in [host.as_fd(), worker.as_fd()] {
        for dir in [Timeout::Recv, Timeout::Send] {
            set_socket_timeout(fd, dir, Some(PATIENCE)).expect("SO_RCVTIMEO/SO_SNDTIMEO");
        }
    }
    (host, Channel::from_fd(worker))
}

/// Records every release notice.
#[derive(Debug, Default)]
pub(crate) struct RecordingSink {
    calls: Mutex<Vec<(SegmentId, u32)>>,
}

impl RecordingSink {
    /// The notices so far, in order.
    pub(crate) fn calls(&self) -> Vec<(SegmentId, u32)> {
        self.calls.lock().expect("sink lock").clone()
    }
}

impl ReleaseSink for RecordingSink {
    fn release(&self, id: SegmentId, receipts: u32) {
        self.calls.lock().expect("sink lock").push((id, receipts));
    }
}

/// One side of a conversation, resolving segment references the way a real endpoint
/// does: its own segments come from its pool (no fd needed), the peer's are mapped
/// from the fd that came with the frame.
pub(crate) struct Endpoint {
    /// Which side this is.
    pub(crate) me: Side,
    /// Segments this side owns.
    pub(crate) pool: Arc<ShmPool>,
    /// Segments the peer lent this side.
    pub(crate) peers: PeerSegments,
    /// Where dropped peer segments are reported.
    pub(crate) sink: Arc<dyn ReleaseSink>,
}

impl Endpoint {
    /// An endpoint for `me` whose release notices go to `sink`.
    pub(crate) fn new(me: Side, sink: Arc<dyn ReleaseSink>) -> Self {
        Self {
            me,
            pool: Arc::new(ShmPool::new(me, 64 << 20)),
            peers: PeerSegments::default(),
            sink,
        }
    }

    /// An endpoint with a recording sink, and that sink.
    pub(crate) fn recording(me: Side) -> (Self, Arc<RecordingSink>) {
        let sink = Arc::new(RecordingSink::default());
        (
            Self::new(me, Arc::clone(&sink) as Arc<dyn ReleaseSink>),
            sink,
        )
    }
}

impl Segments for Endpoint {
    fn resolve(&self, id: SegmentId, fd: Option<OwnedFd>) -> Result<Arc<Segment>, ProtoError> {
        if id.owner() == self.me {
            // Our own segment coming back: whatever fd came with it is not needed.
            drop(fd);
            self.pool.get(id).ok_or(ProtoError::Malformed {
                what: "unknown own segment",
                offset: 0,
            })
        } else {
            self.peers.resolve(id, fd, &self.sink)
        }
    }
}

/// Encodes `msg` as `me` and sends it with request id `id`.
#[track_caller]
pub(crate) fn send(ch: &Channel, me: Side, id: u64, msg: &Message) {
    let body = msg.encode(me).expect("encode");
    ch.send(msg.kind(), id, &body).expect("send");
}

/// Receives one frame, failing the test on EOF.
#[track_caller]
pub(crate) fn recv_frame(ch: &Channel) -> Frame {
    ch.recv()
        .expect("recv")
        .expect("a frame, not end of stream")
}

/// Decodes a received frame with `segments`.
pub(crate) fn decode(frame: &mut Frame, segments: &dyn Segments) -> Result<Message, ProtoError> {
    let mut ctx = DecodeCtx {
        fds: &mut frame.fds,
        segments,
    };
    Message::decode(frame.header.kind, &frame.body, &mut ctx)
}

/// Receives and decodes one message.
#[track_caller]
pub(crate) fn recv_msg(ch: &Channel, segments: &dyn Segments) -> (Header, Message) {
    let mut frame = recv_frame(ch);
    let msg = decode(&mut frame, segments).expect("decode");
    (frame.header, msg)
}

/// A whole frame (header and body) as raw bytes, for `decode_frame_bytes`.
pub(crate) fn raw_frame(kind: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN];
    out[0] = kind;
    out[8..16].copy_from_slice(&id.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The frame `decode_frame_bytes` would accept for `msg` (no shared memory).
pub(crate) fn encoded_frame(msg: &Message, id: u64) -> Vec<u8> {
    let body = msg.encode(Side::Host).expect("encode");
    assert!(
        body.segments.is_empty(),
        "encoded_frame is for messages without shm"
    );
    raw_frame(msg.kind() as u8, id, &body.buf)
}

/// The canonical encoding of `msg`, to compare messages bit for bit (floats included:
/// `NaN != NaN` and `-0.0 == 0.0` make `PartialEq` useless for that).
pub(crate) fn canonical(msg: &Message) -> Vec<u8> {
    msg.encode(Side::Worker).expect("encode").buf
}

/// Asserts `got` is the same message as `want`, bit for bit.
#[track_caller]
pub(crate) fn assert_same(got: &Message, want: &Message) {
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    assert_eq!(canonical(got), canonical(want), "encodings differ");
}

/// A body writer holding one value, for hand-built frames.
pub(crate) fn value_body(v: &cjm_proto::Value) -> Writer {
    let mut w = Writer::new();
    w.value(v, Side::Host).expect("encode");
    w
}

/// Asserts `r` failed with [`ProtoError::Malformed`] saying `what`.
#[track_caller]
pub(crate) fn assert_malformed<T: std::fmt::Debug>(r: Result<T, ProtoError>, what: &str) {
    match r {
        Err(ProtoError::Malformed { what: got, .. }) => assert_eq!(got, what),
        other => panic!("expected a malformed-frame error ({what}), got {other:?}"),
    }
}

/// The text of a `/proc` file, if it can be read.
#[expect(
    clippy::disallowed_methods,
    reason = "a /proc path needs no fs-err context, and fs-err is not a dependency here"
)]
pub(crate) fn try_read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_proc(path: &str) -> String {
    try_read_proc(path).expect(path)
}

/// The process's memory mappings, one line each.
pub(crate) fn maps() -> Vec<String> {
    read_proc("/proc/self/maps")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `/proc/self/maps` line of the mapping that contains `addr`.
pub(crate) fn mapping_of(addr: *const u8) -> Option<String> {
    let addr = addr as usize;
    maps().into_iter().find(|line| {
        let range = line.split_whitespace().next().unwrap_or_default();
        let (lo, hi) = range.split_once('-').expect("address range");
        let lo = usize::from_str_radix(lo, 16).expect("hex");
        let hi = usize::from_str_radix(hi, 16).expect("hex");
        (lo..hi).contains(&addr)
    })
}

/// Mappings of cjm shared-memory segments.
pub(crate) fn shm_mappings() -> Vec<String> {
    maps()
        .into_iter()
        .filter(|l| l.contains("/memfd:cjm-"))
        .collect()
}

/// Open descriptors of this process.
pub(crate) fn open_fds() -> usize {
    // The directory handle itself is counted too, the same way every time.
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A run of `len` bytes that differs from any shifted copy of itself.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// Waits for a value from another thread, failing the test after [`PATIENCE`].
#[track_caller]
pub(crate) fn wait<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|e| panic!("{what}: nothing after {PATIENCE:?} ({e})"))
}

const ISOLATED_ENV: &str = "CJM_PROTO_TEST_ISOLATED";

/// Runs `body` where it is the only test in its process, so counting the process's
/// descriptors and mappings measures `body` alone.
///
/// nextest already runs each test in a process of its own. Under `cargo test`, whose
/// tests share a process as threads, the test binary is re-run for this one test.
#[track_caller]
pub(crate) fn alone(test: &str, body: impl FnOnce()) {
    let per_process = std::env::var_os("NEXTEST_EXECUTION_MODE")
        .is_some_and(|m| m == "process-per-test")
        || std::env::var_os(ISOLATED_ENV).is_some();
    if per_process {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let child = std::process::Command::new(exe)
        .args([test, "--exact", "--test-threads=1"])
        .env(ISOLATED_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the test binary");
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(PATIENCE) else {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        panic!("{test} did not finish within {PATIENCE:?} in its own process");
    };
    let out = out.expect("wait for the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The global allocator of this test binary: `System`, noting the largest single
/// request each thread makes.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: nothing to note once the thread's locals are gone.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's guarantees are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result and the largest single allocation it made on this
/// thread.
pub(crate) fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}
