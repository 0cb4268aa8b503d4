//! Shared-memory buffers: zero-copy delivery, mapping once, release, reuse, and
//! segments coming back to their owner.

use std::sync::Arc;

use cjm_proto::{
    Buffer, Call, Channel, Message, ProtoError, ReleaseSink, SegmentId, ShmPool, ShmSlice, Side,
    Value,
};

use crate::support::{Endpoint, mapping_of, pair, pattern, recv_frame, recv_msg, send};

const MIB: usize = 1 << 20;

/// A frozen pool buffer of `len` bytes filled with [`pattern`].
fn filled(pool: &ShmPool, len: usize) -> ShmSlice {
    let mut buf = pool.alloc(len).expect("alloc");
    buf.as_mut_slice().copy_from_slice(&pattern(len));
    buf.freeze()
}

fn shm_of(v: &Value) -> &ShmSlice {
    match v {
        Value::Bytes(Buffer::Shm(s)) => s,
        other => panic!("expected shared bytes, got {}", other.type_name()),
    }
}

/// Sends `slice` host → worker in a `Result` and returns what the worker decoded.
fn lend(host: &Channel, worker: &Channel, to: &Endpoint, slice: &ShmSlice) -> ShmSlice {
    send(
        host,
        Side::Host,
        1,
        &Message::Result(Value::Bytes(slice.clone().into())),
    );
    let (_, msg) = recv_msg(worker, to);
    let Message::Result(v) = msg else {
        panic!("not a result: {msg:?}")
    };
    shm_of(&v).clone()
}

#[test]
fn a_pool_buffer_arrives_as_a_read_only_view_of_shared_memory_without_a_copy() {
    let host_pool = ShmPool::new(Side::Host, 64 * MIB);
    let (worker_side, _sink) = Endpoint::recording(Side::Worker);
    let (host, worker) = pair();
    let sent = filled(&host_pool, 8 * MIB);

    let got = lend(&host, &worker, &worker_side, &sent);

    assert_eq!(got.segment().id(), sent.segment().id());
    assert_eq!(got.as_slice().len(), 8 * MIB);
    assert!(
        got.as_slice() == pattern(8 * MIB).as_slice(),
        "bytes differ"
    );
    // The view points into the receiver's own mapping of the segment, not a copy.
    let mapping = got.segment().as_slice().as_ptr_range();
    assert!(mapping.contains(&got.as_slice().as_ptr()));
    assert!(!Arc::ptr_eq(got.segment(), sent.segment()));
    assert_eq!(got.segment().as_mut_ptr(), None);
    let line = mapping_of(got.as_slice().as_ptr()).expect("the view is mapped");
    assert!(line.contains("/memfd:cjm-shm"), "{line}");
    assert_eq!(line.split_whitespace().nth(1), Some("r--s"), "{line}");
    let owner_line = mapping_of(sent.as_slice().as_ptr()).expect("the owner's mapping");
    assert_eq!(
        owner_line.split_whitespace().nth(1),
        Some("rw-s"),
        "{owner_line}"
    );

    // Same memory: a write by the owner shows through the receiver's view.
    let owner = sent.segment().as_mut_ptr().expect("the owner may write");
    // SAFETY: offset 12345 is inside the 8 MiB mapping; both mappings are plain
    // shared memory and nothing holds a Rust reference across this write and read.
    unsafe {
        owner.add(12345).write_volatile(0xA5);
        assert_eq!(got.as_slice().as_ptr().add(12345).read_volatile(), 0xA5);
    }
}

#[test]
fn a_segment_referenced_twice_in_one_frame_is_mapped_once_and_released_once() {
    let host_pool = ShmPool::new(Side::Host, 64 * MIB);
    let (worker_side, sink) = Endpoint::recording(Side::Worker);
    let (host, worker) = pair();
    let whole = filled(&host_pool, 3 * MIB);
    let head = ShmSlice::new(Arc::clone(whole.segment()), 0, MIB).unwrap();
    let tail = ShmSlice::new(Arc::clone(whole.segment()), MIB, 2 * MIB).unwrap();
    let msg = Message::Call(Call {
        method: "m".into(),
        args: vec![Value::Bytes(head.into())],
        kwargs: vec![("tail".into(), Value::Bytes(tail.into()))],
    });
    send(&host, Side::Host, 1, &msg);
    assert_eq!(whole.segment().outstanding(), 2);

    let mut frame = recv_frame(&worker);
    assert_eq!(frame.header.n_fds, 1, "one fd for one segment");
    let Message::Call(call) = crate::support::decode(&mut frame, &worker_side).unwrap() else {
        panic!("not a call")
    };
    let (a, b) = (shm_of(&call.args[0]), shm_of(&call.kwargs[0].1));
    assert!(Arc::ptr_eq(a.segment(), b.segment()), "mapped twice");
    assert_eq!(a.as_slice(), &pattern(3 * MIB)[..MIB]);
    assert_eq!(b.as_slice(), &pattern(3 * MIB)[MIB..]);
    assert_eq!(b.offset(), MIB);

    drop(call);
    assert_eq!(sink.calls(), [(whole.segment().id(), 2)]);
}

#[test]
fn the_receiver_releases_only_when_its_last_view_is_dropped() {
    let host_pool = ShmPool::new(Side::Host, 64 * MIB);
    let (worker_side, sink) = Endpoint::recording(Side::Worker);
    let (host, worker) = pair();
    let sent = filled(&host_pool, MIB);

    let first = lend(&host, &worker, &worker_side, &sent);
    let second = lend(&host, &worker, &worker_side, &sent);
    assert!(
        Arc::ptr_eq(first.segment(), second.segment()),
        "a segment sent again while mapped is mapped once"
    );
    let copy = first.clone();
    drop(first);
    drop(second);
    assert_eq!(sink.calls(), []);
    drop(copy);
    assert_eq!(sink.calls(), [(sent.segment().id(), 2)]);

    // Once dropped, the next frame carrying the segment maps it afresh.
    let third = lend(&host, &worker, &worker_side, &sent);
    drop(third);
    assert_eq!(
        sink.calls(),
        [(sent.segment().id(), 2), (sent.segment().id(), 1)]
    );
}

/// Reports releases the way a worker does: with a `Release` frame to the owner.
struct ChannelSink(Arc<Channel>);

impl ReleaseSink for ChannelSink {
    fn release(&self, segment: SegmentId, receipts: u32) {
        send(
            &self.0,
            Side::Worker,
            0,
            &Message::Release { segment, receipts },
        );
    }
}

#[test]
fn a_released_segment_is_reused_for_the_next_allocation_of_a_similar_size() {
    let host_pool = Arc::new(ShmPool::new(Side::Host, 64 * MIB));
    let (host, worker) = pair();
    let worker = Arc::new(worker);
    let worker_side = Endpoint::new(
        Side::Worker,
        Arc::new(ChannelSink(Arc::clone(&worker))) as Arc<dyn ReleaseSink>,
    );
    let sent = filled(&host_pool, 8 * MIB);
    let id = sent.segment().id();
    drop(lend(&host, &worker, &worker_side, &sent));
    drop(sent);

    let (header, release) = recv_msg(&host, &cjm_proto::NoSegments);
    assert_eq!(header.kind, cjm_proto::Kind::Release);
    let Message::Release { segment, receipts } = release else {
        panic!("not a release: {release:?}")
    };
    assert_eq!((segment, receipts), (id, 1));
    host_pool.released(segment, receipts);

    let again = host_pool.alloc(7 * MIB).unwrap().freeze();
    assert_eq!(again.segment().id(), id, "the released segment is reused");
    assert_eq!(again.as_slice().len(), 7 * MIB);
    assert_eq!(host_pool.mapped_bytes(), 8 * MIB);
}

#[test]
fn a_segment_is_not_reused_while_a_local_view_is_alive() {
    let pool = ShmPool::new(Side::Host, 64 * MIB);
    let view = filled(&pool, MIB);
    let other = pool.alloc(MIB).unwrap().freeze();
    assert_ne!(other.segment().id(), view.segment().id());
}

#[test]
fn a_segment_is_not_reused_while_a_send_is_outstanding() {
    let pool = ShmPool::new(Side::Host, 64 * MIB);
    let (worker_side, sink) = Endpoint::recording(Side::Worker);
    let (host, worker) = pair();
    let sent = filled(&pool, MIB);
    let id = sent.segment().id();
    // Sent twice: the worker maps it once and releases both receipts together.
    drop(lend(&host, &worker, &worker_side, &sent));
    send(
        &host,
        Side::Host,
        2,
        &Message::Result(Value::Bytes(sent.clone().into())),
    );
    drop(sent);

    let next = pool.alloc(MIB).unwrap().freeze();
    assert_ne!(next.segment().id(), id, "reused before any release");
    drop(next);

    let [(released, receipts)] = sink.calls()[..] else {
        panic!("expected one release: {:?}", sink.calls())
    };
    assert_eq!((released, receipts), (id, 1));
    pool.released(id, receipts);
    let next = pool.alloc(MIB).unwrap().freeze();
    assert_ne!(next.segment().id(), id, "reused with one send unreleased");
    drop(next);

    drop(recv_msg(&worker, &worker_side));
    assert_eq!(sink.calls().len(), 2);
    pool.released(id, sink.calls()[1].1);
    let next = pool.alloc(MIB).unwrap().freeze();
    assert_eq!(next.segment().id(), id);
}

#[test]
fn a_frame_that_fails_to_send_leaves_its_segment_reusable() {
    // A send counts when the frame leaves, not when it is encoded: a frame that
    // never reaches the peer (peer gone, too many descriptors, a writer dropped
    // unsent) lends nothing, so nothing waits for a release that cannot come.
    let pool = ShmPool::new(Side::Host, 64 * MIB);
    let (host, worker) = pair();
    drop(worker);
    let slice = filled(&pool, MIB);
    let id = slice.segment().id();
    let body = Message::Result(Value::Bytes(slice.into()))
        .encode(Side::Host)
        .expect("encode");
    assert!(host.send(cjm_proto::Kind::Result, 1, &body).is_err());
    drop(body);
    let next = pool.alloc(MIB).expect("alloc").freeze();
    assert_eq!(
        next.segment().id(),
        id,
        "the segment of a frame that failed to send is reused"
    );
    assert_eq!(next.segment().outstanding(), 0);

    // Encoded and dropped without a send: nothing counted either.
    let body = Message::Result(Value::Bytes(next.clone().into()))
        .encode(Side::Host)
        .expect("encode");
    assert_eq!(next.segment().outstanding(), 0, "encoding lends nothing");
    drop((body, next));
    let again = pool.alloc(MIB).expect("alloc").freeze();
    assert_eq!(again.segment().id(), id);
}

#[test]
fn a_frame_with_too_many_segments_fails_to_send_and_lends_none_of_them() {
    let pool = ShmPool::new(Side::Host, 64 * MIB);
    let (host, _worker) = pair();
    let slices: Vec<ShmSlice> = (0..=cjm_proto::MAX_FDS)
        .map(|_| filled(&pool, 4096))
        .collect();
    let body = Message::Result(Value::List(
        slices
            .iter()
            .cloned()
            .map(|s| Value::Bytes(s.into()))
            .collect(),
    ))
    .encode(Side::Host)
    .expect("encode");
    let err = host.send(cjm_proto::Kind::Result, 1, &body).unwrap_err();
    assert!(matches!(err, ProtoError::Unencodable(_)), "{err:?}");
    for s in &slices {
        assert_eq!(s.segment().outstanding(), 0, "{:?}", s.segment().id());
    }
}

#[test]
fn forgetting_the_peer_unmaps_the_segments_it_held_and_keeps_live_ones() {
    let pool = ShmPool::new(Side::Host, 64 * MIB);
    let (worker_side, _) = Endpoint::recording(Side::Worker);
    let (host, worker) = pair();
    let lent = filled(&pool, MIB);
    let held = lend(&host, &worker, &worker_side, &lent);
    drop(lent);
    let kept = filled(&pool, 4 * MIB);
    assert_eq!(pool.mapped_bytes(), 2 * MIB + 4 * MIB);

    pool.forget_peer();
    assert_eq!(
        pool.mapped_bytes(),
        4 * MIB,
        "only the segment viewed here stays"
    );
    // The peer's own mapping is its business: it still reads the bytes.
    assert_eq!(held.as_slice(), pattern(MIB).as_slice());
    drop(kept);
}

#[test]
fn a_segment_the_receiver_owns_comes_back_as_its_own_mapping() {
    let (host_side, _) = Endpoint::recording(Side::Host);
    let (worker_side, _) = Endpoint::recording(Side::Worker);
    let (host, worker) = pair();
    let sent = filled(&host_side.pool, MIB);

    let borrowed = lend(&host, &worker, &worker_side, &sent);
    // The worker echoes the host's bytes back: a reference without an fd.
    send(
        &worker,
        Side::Worker,
        3,
        &Message::Result(Value::Bytes(borrowed.into())),
    );
    let mut frame = recv_frame(&host);
    assert_eq!(
        frame.header.n_fds, 0,
        "the owner needs no fd for its own segment"
    );
    let Message::Result(v) = crate::support::decode(&mut frame, &host_side).unwrap() else {
        panic!("not a result")
    };
    let back = shm_of(&v);
    assert!(Arc::ptr_eq(back.segment(), sent.segment()));
    assert_eq!(back.as_slice().as_ptr(), sent.as_slice().as_ptr());
    assert!(back.segment().as_mut_ptr().is_some());
}

#[test]
fn an_echoed_segment_the_owner_no_longer_has_is_rejected() {
    let (worker_side, _) = Endpoint::recording(Side::Worker);
    let (host_side, _) = Endpoint::recording(Side::Host);
    let (host, worker) = pair();
    let other_pool = ShmPool::new(Side::Host, 64 * MIB);
    let stranger = filled(&other_pool, MIB);
    let borrowed = lend(&host, &worker, &worker_side, &stranger);
    send(
        &worker,
        Side::Worker,
        3,
        &Message::Result(Value::Bytes(borrowed.into())),
    );
    let mut frame = recv_frame(&host);
    crate::support::assert_malformed(
        crate::support::decode(&mut frame, &host_side),
        "unknown own segment",
    );
}

#[test]
fn more_shared_buffers_than_a_frame_can_carry_cannot_be_sent() {
    let pool = ShmPool::new(Side::Host, 0);
    let slices: Vec<Value> = (0..=cjm_proto::MAX_FDS)
        .map(|_| Value::Bytes(pool.alloc(1).unwrap().freeze().into()))
        .collect();
    let (host, _worker) = pair();
    let body = Message::Result(Value::List(slices))
        .encode(Side::Host)
        .unwrap();
    let err = host.send(cjm_proto::Kind::Result, 1, &body).unwrap_err();
    assert!(matches!(err, ProtoError::Unencodable(_)), "{err:?}");
}

#[test]
fn views_outside_their_segment_cannot_be_made() {
    let pool = ShmPool::new(Side::Worker, 64 * MIB);
    let seg = Arc::clone(pool.alloc(10).unwrap().freeze().segment());
    let len = seg.len();
    assert!(ShmSlice::new(Arc::clone(&seg), 0, len).is_some());
    assert!(ShmSlice::new(Arc::clone(&seg), len, 0).is_some());
    assert!(ShmSlice::new(Arc::clone(&seg), len, 1).is_none());
    assert!(ShmSlice::new(Arc::clone(&seg), 1, len).is_none());
    assert!(ShmSlice::new(seg, usize::MAX, 2).is_none());
}

#[test]
fn segment_ids_name_their_owner() {
    for n in [0, 1, u64::MAX >> 1, u64::MAX] {
        assert_eq!(SegmentId::new(Side::Host, n).owner(), Side::Host);
        assert_eq!(SegmentId::new(Side::Worker, n).owner(), Side::Worker);
    }
    let ids: Vec<SegmentId> = (0..3)
        .map(|_| {
            ShmPool::new(Side::Worker, 0)
                .alloc(1)
                .unwrap()
                .freeze()
                .segment()
                .id()
        })
        .collect();
    assert!(ids.iter().all(|id| id.owner() == Side::Worker));
}

#[test]
fn shrinking_a_pool_unmaps_idle_segments_only() {
    let pool = ShmPool::new(Side::Host, 64 * MIB);
    let kept = filled(&pool, MIB);
    drop(filled(&pool, 4 * MIB));
    assert_eq!(pool.mapped_bytes(), 2 * MIB + 4 * MIB);
    pool.shrink();
    assert_eq!(pool.mapped_bytes(), 2 * MIB);
    drop(kept);
}

#[test]
fn idle_segments_over_the_budget_are_unmapped_before_another_is_created() {
    let pool = ShmPool::new(Side::Host, 0);
    drop(pool.alloc(MIB).unwrap());
    assert_eq!(
        pool.mapped_bytes(),
        2 * MIB,
        "an idle segment stays for reuse"
    );
    let reused = pool.alloc(MIB).unwrap().freeze();
    drop(reused);
    drop(pool.alloc(16 * MIB).unwrap());
    assert_eq!(
        pool.mapped_bytes(),
        16 * MIB,
        "the idle 2 MiB segment was trimmed"
    );
}

#[test]
fn an_impossible_allocation_fails_instead_of_panicking() {
    let pool = ShmPool::new(Side::Host, 0);
    for len in [usize::MAX, usize::MAX / 2 + 1, 1 << 62] {
        assert!(pool.alloc(len).is_err(), "{len} bytes");
    }
    assert_eq!(pool.mapped_bytes(), 0);
}
