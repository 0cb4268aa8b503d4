//! Nothing outlives its owner: no descriptor and no shared mapping is left behind,
//! whether frames were good or hostile.
//!
//! These tests count the whole process's descriptors and mappings, so each runs
//! [`alone`] in its process.

use std::os::fd::AsFd;

use cjm_proto::{Buffer, Call, Message, ShmSlice, Side, Value};
use rustix::fs::SealFlags;

use crate::hostile::{
    body_fd, deliver, host_segment, memfd, pipe, result_header, sealed, shm_body, spilled_header,
};
use crate::support::{
    Endpoint, alone, decode, open_fds, pair, pattern, recv_frame, recv_msg, send, shm_mappings,
};

const MIB: usize = 1 << 20;

#[test]
fn dropping_everything_leaves_no_descriptors_or_mappings() {
    alone(
        "leaks::dropping_everything_leaves_no_descriptors_or_mappings",
        || {
            let fds_before = open_fds();
            assert_eq!(shm_mappings(), Vec::<String>::new());
            {
                let (host_side, _) = Endpoint::recording(Side::Host);
                let (worker_side, worker_sink) = Endpoint::recording(Side::Worker);
                let (host, worker) = pair();
                let mut buf = host_side.pool.alloc(8 * MIB).unwrap();
                buf.as_mut_slice().copy_from_slice(&pattern(8 * MIB));
                let sent = buf.freeze();
                let half = ShmSlice::new(sent.segment().clone(), 0, 4 * MIB).unwrap();

                // Lent twice in one frame, with a body big enough to spill.
                let call = Message::Call(Call {
                    method: "execute".into(),
                    args: vec![
                        Value::Bytes(sent.clone().into()),
                        Value::Str("z".repeat(MIB)),
                    ],
                    kwargs: vec![("half".into(), Value::Bytes(half.into()))],
                });
                send(&host, Side::Host, 1, &call);
                let (_, got) = recv_msg(&worker, &worker_side);
                assert_eq!(
                    shm_mappings().len(),
                    2,
                    "owner and receiver map it once each"
                );

                // Echoed back to its owner.
                let Message::Call(c) = got else {
                    panic!("not a call")
                };
                send(
                    &worker,
                    Side::Worker,
                    1,
                    &Message::Result(c.args[0].clone()),
                );
                let (_, back) = recv_msg(&host, &host_side);
                drop((c, back));
                assert_eq!(worker_sink.calls(), [(sent.segment().id(), 2)]);
                assert_eq!(shm_mappings().len(), 1, "the receiver unmapped its view");
            }
            assert_eq!(shm_mappings(), Vec::<String>::new());
            assert_eq!(open_fds(), fds_before);
        },
    );
}

#[test]
fn a_pool_unmaps_its_segments_when_dropped() {
    alone("leaks::a_pool_unmaps_its_segments_when_dropped", || {
        let fds_before = open_fds();
        let pool = cjm_proto::ShmPool::new(Side::Worker, 64 * MIB);
        let kept: Vec<ShmSlice> = (0..5)
            .map(|i| pool.alloc(i * MIB).unwrap().freeze())
            .collect();
        drop(pool.alloc(MIB).unwrap());
        assert_eq!(shm_mappings().len(), 6);
        assert_eq!(open_fds(), fds_before + 6);
        drop(pool);
        assert_eq!(shm_mappings().len(), 5, "views keep their segment alive");
        drop(kept);
        assert_eq!(shm_mappings(), Vec::<String>::new());
        assert_eq!(open_fds(), fds_before);
    });
}

#[test]
fn hostile_frames_leave_no_descriptors_or_mappings_behind() {
    alone(
        "leaks::hostile_frames_leave_no_descriptors_or_mappings_behind",
        || {
            let fds_before = open_fds();
            {
                let unsealed = memfd(4096, Some(SealFlags::empty()));
                let good = sealed(4096);
                let p = pipe();
                let body = shm_body(host_segment(5), 0, 0, 1);
                let out_of_range = shm_body(host_segment(5), 0, 4096, 1);
                let bad_fd_index = shm_body(host_segment(5), 1, 0, 1);
                let unread_tail = [&body[..], &[0]].concat();
                let spilled_bad = body_fd(
                    &[12],
                    SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
                );
                let cases = [
                    deliver(result_header(1), &body, &[unsealed.as_fd()]).map(drop),
                    deliver(result_header(1), &body, &[p.as_fd()]).map(drop),
                    deliver(result_header(1), &out_of_range, &[good.as_fd()]).map(drop),
                    deliver(result_header(1), &bad_fd_index, &[good.as_fd()]).map(drop),
                    deliver(result_header(1), &unread_tail, &[good.as_fd()]).map(drop),
                    deliver(result_header(2), &body, &[good.as_fd()]).map(drop),
                    deliver(spilled_header(1), &[], &[spilled_bad.as_fd()]).map(drop),
                    deliver(spilled_header(1), &[], &[p.as_fd()]).map(drop),
                    deliver(spilled_header(1), &[0], &[good.as_fd()]).map(drop),
                ];
                for (i, r) in cases.into_iter().enumerate() {
                    assert!(r.is_err(), "case {i} was accepted");
                }
            }
            assert_eq!(shm_mappings(), Vec::<String>::new());
            assert_eq!(open_fds(), fds_before);
        },
    );
}

#[test]
fn fds_of_a_frame_that_is_never_decoded_are_closed_with_it() {
    alone(
        "leaks::fds_of_a_frame_that_is_never_decoded_are_closed_with_it",
        || {
            let fds_before = open_fds();
            {
                let pool = cjm_proto::ShmPool::new(Side::Host, 64 * MIB);
                let (host, worker) = pair();
                let shared = Value::Bytes(Buffer::Shm(pool.alloc(MIB).unwrap().freeze()));
                send(&host, Side::Host, 1, &Message::Result(shared));
                let frame = recv_frame(&worker);
                assert_eq!(frame.fds.len(), 1);
                drop(frame);
                let (worker_side, sink) = Endpoint::recording(Side::Worker);
                send(
                    &host,
                    Side::Host,
                    1,
                    &Message::Result(Value::Str("x".repeat(MIB))),
                );
                let mut frame = recv_frame(&worker);
                drop(decode(&mut frame, &worker_side).unwrap());
                assert_eq!(sink.calls(), []);
            }
            assert_eq!(shm_mappings(), Vec::<String>::new());
            assert_eq!(open_fds(), fds_before);
        },
    );
}
