//! A peer that sends garbage gets `ProtoError::Malformed`, never a panic, a stack
//! overflow or a mapping it should not have.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use cjm_proto::{
    Call, FLAG_BODY_IN_FD, HEADER_LEN, Header, Hello, Kind, LogRecord, MAX_FDS, MAX_INLINE_BODY,
    Message, NO_FD, PROTOCOL, ProtoError, SegmentId, Side, Value, decode_frame_bytes, tag,
};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::support::{Endpoint, assert_malformed, encoded_frame, pair, raw_frame};

/// Decodes raw frame bytes and expects a malformed-frame error saying `what`.
#[track_caller]
fn check(frame: &[u8], what: &str) {
    assert_malformed(decode_frame_bytes(frame), what);
}

/// A body from concatenated parts.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn le32(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

fn str_bytes(b: &[u8]) -> Vec<u8> {
    cat(&[&[tag::STR], &le32(b.len() as u32), b])
}

const RESULT: u8 = Kind::Result as u8;

#[test]
fn bad_headers_are_rejected() {
    let ok = raw_frame(Kind::Ping as u8, 1, &[]);
    assert!(decode_frame_bytes(&ok).is_ok());
    check(&[], "frame shorter than its header");
    check(&ok[..HEADER_LEN - 1], "frame shorter than its header");
    for kind in [0, 21, 0x80, 255] {
        check(&raw_frame(kind, 1, &[]), "unknown frame kind");
    }
    for flags in [2, 0x80, 0xff] {
        let mut f = ok.clone();
        f[1] = flags;
        check(&f, "unknown frame flags");
    }
    let mut f = ok.clone();
    f[2..4].copy_from_slice(&(MAX_FDS as u16 + 1).to_le_bytes());
    check(&f, "too many fds");
    for i in 4..8 {
        let mut f = ok.clone();
        f[i] = 1;
        check(&f, "reserved bytes set");
    }
}

/// A `Result` frame with `body` must be rejected saying `what`.
#[track_caller]
fn bad_value(body: &[u8], what: &str) {
    check(&raw_frame(RESULT, 1, body), what);
}

#[test]
fn bad_values_are_rejected() {
    let shm_ref = |fd_index: [u8; 2]| cat(&[&[tag::SHM_BYTES], &[0; 8], &fd_index, &[0; 16]]);
    bad_value(&[], "truncated");
    bad_value(&[12], "unknown value tag");
    bad_value(&[0xff], "unknown value tag");
    bad_value(&[tag::INT, 1, 2, 3], "truncated");
    bad_value(&[tag::FLOAT], "truncated");
    bad_value(&cat(&[&[tag::STR], &le32(5), b"ab"]), "truncated");
    bad_value(&cat(&[&[tag::STR], &le32(u32::MAX)]), "truncated");
    bad_value(&str_bytes(&[0xff]), "invalid utf-8");
    bad_value(&str_bytes(&[0xc0, 0x80]), "invalid utf-8");
    bad_value(&str_bytes(&[0xed, 0xa0, 0x80]), "invalid utf-8");
    bad_value(&str_bytes(b"ok\xe2\x82"), "invalid utf-8");
    bad_value(&cat(&[&[tag::BYTES], &le32(9), b"short"]), "truncated");
    let too_many = "container count exceeds frame";
    bad_value(&cat(&[&[tag::LIST], &le32(u32::MAX)]), too_many);
    bad_value(&cat(&[&[tag::LIST], &le32(2), &[tag::NONE]]), too_many);
    bad_value(&cat(&[&[tag::MAP], &le32(1_000_000), &[0; 16]]), too_many);
    bad_value(
        &cat(&[&[tag::LIST], &le32(2), &[tag::NONE, 12]]),
        "unknown value tag",
    );
    let bad_key = cat(&[&[tag::MAP], &le32(1), &le32(1), &[0xff], &[tag::NONE]]);
    bad_value(&bad_key, "invalid utf-8");
    bad_value(&cat(&[&[tag::MAP], &le32(1), &le32(1)]), "truncated");
    let not_decimal = "big integer is not decimal";
    for digits in ["12a", "-", "", "+1", "1e3", " 1", "١٢"] {
        let d = digits.as_bytes();
        bad_value(
            &cat(&[&[tag::BIGINT], &le32(d.len() as u32), d]),
            not_decimal,
        );
    }
    let array = |rest: &[u8]| cat(&[&[tag::ARRAY], &le32(3), b"<f4", rest]);
    bad_value(
        &array(&[1, 0, 0, 0, 0, 0, 0, 0, 0, tag::NONE]),
        "array data must be bytes",
    );
    bad_value(&array(&[255, 0, 0, 0, 0, 0, 0, 0, 0]), "truncated");
    bad_value(&cat(&[&[tag::ARRAY], &le32(1), &[0xff]]), "invalid utf-8");
    let no_shm = "shared memory is not available here";
    bad_value(&shm_ref(NO_FD.to_le_bytes()), no_shm);
    bad_value(&shm_ref([0, 0]), "fd index out of range");
    bad_value(&shm_ref([0, 0])[..26], "truncated");
    let array_in_shm = cat(&[&[tag::ARRAY], &le32(0), &[0], &shm_ref([7, 0])]);
    bad_value(&array_in_shm, "fd index out of range");
}

#[test]
fn bad_message_bodies_are_rejected() {
    let hello = |v: Value| raw_frame(Kind::Hello as u8, 0, &crate::support::value_body(&v).buf);
    check(&hello(Value::None), "hello without protocol");
    check(
        &hello(Value::map([("protocol", Value::Int(1))])),
        "hello without protocol",
    );
    check(
        &hello(Value::map([("protocol", Value::from(PROTOCOL))])),
        "hello without pid",
    );
    for pid in [
        Value::Int(-1),
        Value::Int(1 << 32),
        Value::from("1"),
        Value::Float(1.0),
    ] {
        let v = Value::map([("protocol", Value::from(PROTOCOL)), ("pid", pid)]);
        check(&hello(v), "hello without pid");
    }

    let call = |parts: &[&[u8]]| raw_frame(Kind::Call as u8, 1, &cat(parts));
    let empty_list: &[u8] = &cat(&[&[tag::LIST], &le32(0)]);
    let empty_map: &[u8] = &cat(&[&[tag::MAP], &le32(0)]);
    check(
        &call(&[&le32(1), &[0xff], empty_list, empty_map]),
        "invalid utf-8",
    );
    check(
        &call(&[&le32(0), &[tag::NONE], empty_map]),
        "call args must be a list",
    );
    check(
        &call(&[&le32(0), empty_list, empty_list]),
        "call kwargs must be a map",
    );
    check(&call(&[&le32(0), empty_list]), "truncated");
    check(&call(&[&le32(9), b"execute"]), "truncated");

    let progress = |b: &[u8]| raw_frame(Kind::Progress as u8, 1, b);
    check(
        &progress(&cat(&[&[tag::INT], &[0; 8], &str_bytes(b"")])),
        "progress must be a float",
    );
    check(
        &progress(&cat(&[&[tag::FLOAT], &[0; 8], &[tag::NONE]])),
        "expected a string",
    );
    check(&progress(&[tag::FLOAT, 0, 0]), "truncated");

    let log = |b: &[u8]| raw_frame(Kind::Log as u8, 1, b);
    check(
        &log(&cat(&[&[tag::FLOAT], &[0; 8]])),
        "log level must be an int",
    );
    check(
        &log(&cat(&[&[tag::INT], &[0; 8], &str_bytes(b"l")])),
        "truncated",
    );
    check(
        &log(&cat(&[
            &[tag::INT],
            &[0; 8],
            &str_bytes(b"l"),
            &[tag::BYTES],
            &le32(0),
        ])),
        "expected a string",
    );

    check(&raw_frame(Kind::Release as u8, 0, &[0; 11]), "truncated");
    check(&raw_frame(Kind::CancelAck as u8, 0, &[]), "truncated");
    check(
        &raw_frame(Kind::CancelAck as u8, 0, &str_bytes(&[0x80])),
        "invalid utf-8",
    );
}

#[test]
fn trailing_bytes_after_any_body_are_rejected() {
    let messages = [
        Message::Ping,
        Message::End,
        Message::Result(Value::None),
        Message::Release {
            segment: SegmentId(1),
            receipts: 1,
        },
        Message::CancelAck { phase: "x".into() },
        Message::Call(Call {
            method: "m".into(),
            args: vec![],
            kwargs: vec![],
        }),
    ];
    for msg in &messages {
        let mut f = encoded_frame(msg, 1);
        assert!(decode_frame_bytes(&f).is_ok());
        f.push(0);
        check(&f, "trailing bytes after the body");
    }
}

#[test]
fn every_truncation_of_a_valid_frame_is_rejected() {
    let messages = [
        Message::Hello(Hello {
            protocol: PROTOCOL.into(),
            runtime: "r".into(),
            pid: 7,
            python: "3.12".into(),
        }),
        Message::Call(Call {
            method: "execute".into(),
            args: vec![Value::List(vec![Value::Int(1), Value::BigInt("99".into())])],
            kwargs: vec![("k".into(), Value::map([("é", Value::Float(0.5))]))],
        }),
        Message::Progress {
            progress: 0.5,
            message: "half".into(),
        },
        Message::Log(LogRecord {
            level: 20,
            logger: "l".into(),
            message: "m".into(),
        }),
        Message::Release {
            segment: SegmentId(3),
            receipts: 2,
        },
    ];
    for msg in &messages {
        let f = encoded_frame(msg, 9);
        assert_eq!(decode_frame_bytes(&f).unwrap().1, *msg);
        for len in 0..f.len() {
            let err = decode_frame_bytes(&f[..len]).unwrap_err();
            assert!(
                matches!(err, ProtoError::Malformed { .. }),
                "{msg:?} cut at {len}: {err:?}"
            );
        }
    }
}

#[test]
fn nesting_far_deeper_than_max_depth_errors_instead_of_overflowing_the_stack() {
    let levels = 200_000;
    let lists: Vec<u8> = [tag::LIST, 1, 0, 0, 0].repeat(levels);
    check(&raw_frame(RESULT, 1, &lists), "nesting too deep");
    // Map entries: an empty key, then the nested value.
    let maps: Vec<u8> = [tag::MAP, 1, 0, 0, 0, 0, 0, 0, 0].repeat(levels);
    check(&raw_frame(RESULT, 1, &maps), "nesting too deep");
    // Inside call arguments too.
    let call = cat(&[&le32(0), &lists]);
    check(&raw_frame(Kind::Call as u8, 1, &call), "nesting too deep");
}

#[test]
fn a_container_count_the_frame_cannot_back_reserves_no_memory_for_it() {
    // A 1 MiB frame claiming a million items, the first of which is garbage.
    let len = 1 << 20;
    for container in [tag::LIST, tag::MAP] {
        let mut body = vec![0; len];
        body[0] = container;
        body[1..5].copy_from_slice(&le32(len as u32 - 5));
        body[5..10].copy_from_slice(&[0, 0, 0, 0, 12]);
        let frame = raw_frame(RESULT, 1, &body);
        let (r, largest) = crate::support::largest_allocation(|| decode_frame_bytes(&frame));
        assert!(r.is_err());
        assert!(
            largest < len,
            "decoding a {len}-byte frame reserved {largest} bytes at once"
        );
    }
}

// Frames sent through a real channel, with descriptors.

/// A memfd of `size` bytes with `seals` applied (`None`: created without sealing).
pub(crate) fn memfd(size: u64, seals: Option<SealFlags>) -> OwnedFd {
    let flags = if seals.is_some() {
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING
    } else {
        MemfdFlags::CLOEXEC
    };
    let fd = rustix::fs::memfd_create("cjm-test", flags).expect("memfd_create");
    rustix::fs::ftruncate(&fd, size).expect("ftruncate");
    if let Some(seals) = seals.filter(|s| !s.is_empty()) {
        rustix::fs::fcntl_add_seals(&fd, seals).expect("seal");
    }
    fd
}

pub(crate) fn sealed(size: u64) -> OwnedFd {
    memfd(size, Some(SealFlags::SHRINK | SealFlags::GROW))
}

pub(crate) fn pipe() -> OwnedFd {
    rustix::pipe::pipe().expect("pipe").0
}

/// A `Result` body holding one shared-memory reference.
pub(crate) fn shm_body(id: SegmentId, fd_index: u16, offset: u64, len: u64) -> Vec<u8> {
    cat(&[
        &[tag::SHM_BYTES],
        &id.0.to_le_bytes(),
        &fd_index.to_le_bytes(),
        &offset.to_le_bytes(),
        &len.to_le_bytes(),
    ])
}

/// The worker's view of a segment the host lent it.
pub(crate) fn host_segment(n: u64) -> SegmentId {
    SegmentId::new(Side::Host, n)
}

/// Sends a hand-made frame host → worker and returns what the worker makes of it.
pub(crate) fn deliver(
    header: Header,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<Option<Message>, ProtoError> {
    let (host, worker) = pair();
    host.send_raw(&[IoSlice::new(&header.encode()), IoSlice::new(body)], fds)
        .expect("send");
    let Some(mut frame) = worker.recv()? else {
        return Ok(None);
    };
    let (worker_side, _) = Endpoint::recording(Side::Worker);
    crate::support::decode(&mut frame, &worker_side).map(Some)
}

pub(crate) fn result_header(n_fds: usize) -> Header {
    Header {
        kind: Kind::Result,
        flags: 0,
        n_fds: n_fds as u16,
        id: 1,
    }
}

#[track_caller]
fn check_delivery(body: &[u8], fds: &[BorrowedFd<'_>], what: &str) {
    assert_malformed(deliver(result_header(fds.len()), body, fds), what);
}

#[test]
fn a_hand_made_sealed_memfd_is_accepted_as_a_segment() {
    let fd = memfd(4096, Some(SealFlags::SHRINK));
    let got = deliver(
        result_header(1),
        &shm_body(host_segment(5), 0, 10, 20),
        &[fd.as_fd()],
    )
    .unwrap()
    .unwrap();
    let Message::Result(Value::Bytes(b)) = got else {
        panic!("not bytes: {got:?}")
    };
    assert!(b.is_shared());
    assert_eq!(b.as_slice(), [0; 20]);
}

#[test]
fn an_unsealed_memfd_is_rejected_as_a_segment() {
    let body = shm_body(host_segment(5), 0, 0, 16);
    let unsealed = memfd(4096, Some(SealFlags::empty()));
    check_delivery(
        &body,
        &[unsealed.as_fd()],
        "shared-memory segment is not sealed",
    );
    let unsealable = memfd(4096, None);
    check_delivery(
        &body,
        &[unsealable.as_fd()],
        "shared-memory segment is not sealed",
    );
    let grow_only = memfd(4096, Some(SealFlags::GROW));
    check_delivery(
        &body,
        &[grow_only.as_fd()],
        "shared-memory segment is not sealed",
    );
}

#[test]
fn a_descriptor_that_is_not_a_memfd_is_rejected_as_a_segment() {
    let p = pipe();
    check_delivery(
        &shm_body(host_segment(5), 0, 0, 1),
        &[p.as_fd()],
        "shared-memory segment is not a memfd",
    );
}

#[test]
fn an_empty_segment_is_rejected() {
    let fd = sealed(0);
    check_delivery(
        &shm_body(host_segment(5), 0, 0, 0),
        &[fd.as_fd()],
        "empty shared-memory segment",
    );
}

#[test]
fn shared_memory_ranges_outside_their_segment_are_rejected() {
    let fd = sealed(4096);
    for (offset, len) in [
        (4096, 1),
        (0, 4097),
        (1, 4096),
        (u64::MAX, 2),
        (2, u64::MAX),
    ] {
        check_delivery(
            &shm_body(host_segment(5), 0, offset, len),
            &[fd.as_fd()],
            "shared-memory range outside its segment",
        );
    }
}

#[test]
fn segment_references_to_missing_fds_are_rejected() {
    let fd = sealed(4096);
    check_delivery(
        &shm_body(host_segment(5), 1, 0, 1),
        &[fd.as_fd()],
        "fd index out of range",
    );
    check_delivery(
        &shm_body(host_segment(5), u16::MAX - 1, 0, 1),
        &[fd.as_fd()],
        "fd index out of range",
    );
    check_delivery(
        &shm_body(host_segment(5), NO_FD, 0, 1),
        &[],
        "segment reference without its fd",
    );
    // One fd claimed by two different segment ids.
    let two = cat(&[
        &[tag::LIST],
        &le32(2),
        &shm_body(host_segment(5), 0, 0, 1),
        &shm_body(host_segment(6), 0, 0, 1),
    ]);
    check_delivery(&two, &[fd.as_fd()], "segment reference without its fd");
}

#[test]
fn a_frame_whose_fd_count_disagrees_with_its_header_is_rejected() {
    let fd = sealed(4096);
    let body = shm_body(host_segment(5), 0, 0, 1);
    assert_malformed(
        deliver(result_header(2), &body, &[fd.as_fd()]),
        "fd count does not match the header",
    );
    assert_malformed(
        deliver(result_header(0), &body, &[fd.as_fd()]),
        "fd count does not match the header",
    );
}

pub(crate) fn spilled_header(n_fds: u16) -> Header {
    Header {
        kind: Kind::Result,
        flags: FLAG_BODY_IN_FD,
        n_fds,
        id: 1,
    }
}

/// A memfd holding `body` with `seals` applied.
pub(crate) fn body_fd(body: &[u8], seals: SealFlags) -> OwnedFd {
    let fd = memfd(0, Some(SealFlags::empty()));
    rustix::io::write(&fd, body).expect("write");
    rustix::fs::fcntl_add_seals(&fd, seals).expect("seal");
    fd
}

#[test]
fn bad_spilled_bodies_are_rejected() {
    let body = [tag::NONE];
    let all = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    let good = body_fd(&body, all);
    assert_eq!(
        deliver(spilled_header(1), &[], &[good.as_fd()]).unwrap(),
        Some(Message::Result(Value::None))
    );
    assert_malformed(
        deliver(spilled_header(1), &body, &[good.as_fd()]),
        "inline body beside an fd body",
    );
    assert_malformed(
        deliver(spilled_header(0), &[], &[]),
        "fd body without an fd",
    );
    for seals in [SealFlags::empty(), SealFlags::SHRINK, SealFlags::WRITE] {
        let fd = body_fd(&body, seals);
        assert_malformed(
            deliver(spilled_header(1), &[], &[fd.as_fd()]),
            "fd body is not sealed",
        );
    }
    let p = pipe();
    assert_malformed(
        deliver(spilled_header(1), &[], &[p.as_fd()]),
        "fd body is not a memfd",
    );
    let garbage = body_fd(&[12], all);
    assert_malformed(
        deliver(spilled_header(1), &[], &[garbage.as_fd()]),
        "unknown value tag",
    );
}

#[test]
fn a_frame_shorter_than_its_header_is_rejected_by_recv() {
    let (host, worker) = pair();
    host.send_raw(&[IoSlice::new(&[Kind::Ping as u8, 0, 0])], &[])
        .unwrap();
    assert_malformed(worker.recv(), "frame shorter than its header");
}

#[test]
fn an_empty_packet_is_rejected_rather_than_read_as_end_of_stream() {
    let (host, worker) = pair();
    host.send_raw(&[], &[]).unwrap();
    assert_malformed(worker.recv(), "empty frame");
    // The peer is still there and the channel still works.
    host.send_empty(Kind::Pong, 2).unwrap();
    assert_eq!(worker.recv().unwrap().unwrap().header.kind, Kind::Pong);
}

#[test]
fn an_oversized_frame_is_rejected_and_the_next_frame_still_arrives() {
    let (host, worker) = pair();
    let header = result_header(0).encode();
    let body = vec![tag::NONE; MAX_INLINE_BODY + 1];
    host.send_raw(&[IoSlice::new(&header), IoSlice::new(&body)], &[])
        .unwrap();
    host.send_empty(Kind::Pong, 2).unwrap();
    assert_malformed(worker.recv(), "frame larger than the receive buffer");
    let next = worker.recv().unwrap().unwrap();
    assert_eq!((next.header.kind, next.header.id), (Kind::Pong, 2));
}

#[test]
fn a_frame_with_more_fds_than_max_fds_is_rejected() {
    const N: usize = MAX_FDS + 4;
    let (host, worker) = pair();
    let fds: Vec<OwnedFd> = (0..N).map(|_| sealed(1)).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let header = result_header(N).encode();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(N))];
    let mut anc = rustix::net::SendAncillaryBuffer::new(&mut space);
    assert!(anc.push(rustix::net::SendAncillaryMessage::ScmRights(&borrowed)));
    rustix::net::sendmsg(
        &host,
        &[IoSlice::new(&header), IoSlice::new(&[tag::NONE])],
        &mut anc,
        rustix::net::SendFlags::NOSIGNAL,
    )
    .unwrap();
    assert_malformed(worker.recv(), "frame larger than the receive buffer");
}
