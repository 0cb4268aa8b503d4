//! Bodies too large for one packet travel in a sealed memfd.

use cjm_proto::{
    Buffer, Call, FLAG_BODY_IN_FD, MAX_INLINE_BODY, Message, NoSegments, ShmPool, Side, Value,
};

use crate::support::{Endpoint, assert_same, decode, pair, pattern, recv_frame, send};

/// Sends `msg`, checks whether its body was spilled, and that it decodes intact.
#[track_caller]
fn check(msg: &Message, spilled: bool) {
    let (host, worker) = pair();
    send(&host, Side::Host, 5, msg);
    let mut frame = recv_frame(&worker);
    assert_eq!(frame.header.flags & FLAG_BODY_IN_FD != 0, spilled);
    assert_eq!(frame.header.n_fds, u16::from(spilled));
    assert!(frame.fds.is_empty(), "the body fd is consumed by recv");
    let got = decode(&mut frame, &NoSegments).expect("decode");
    assert_same(&got, msg);
}

/// A `Result` carrying a string whose body encodes to exactly `body_len` bytes.
fn result_of_body_len(body_len: usize) -> Message {
    // One tag byte and a u32 length precede the string.
    Message::Result(Value::Str("x".repeat(body_len - 5)))
}

#[test]
fn a_one_mebibyte_string_travels_in_a_memfd_and_decodes_intact() {
    let s: String = (0..(1 << 20))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    check(&Message::Result(Value::Str(s)), true);
}

#[test]
fn a_body_of_exactly_max_inline_body_stays_inline() {
    check(&result_of_body_len(MAX_INLINE_BODY), false);
}

#[test]
fn a_body_one_byte_over_max_inline_body_is_spilled() {
    check(&result_of_body_len(MAX_INLINE_BODY + 1), true);
}

#[test]
fn a_spilled_call_with_many_big_arguments_decodes_intact() {
    let args = (0..8)
        .map(|i| Value::Bytes(Buffer::from(pattern(100_000 + i))))
        .collect();
    check(
        &Message::Call(Call {
            method: "execute".into(),
            args,
            kwargs: vec![("ü".into(), Value::Str("ß".repeat(50_000)))],
        }),
        true,
    );
}

#[test]
fn a_spilled_body_and_shared_buffers_travel_in_one_frame() {
    let pool = ShmPool::new(Side::Host, 64 << 20);
    let mut buf = pool.alloc(3 << 20).unwrap();
    buf.as_mut_slice().copy_from_slice(&pattern(3 << 20));
    let shared = buf.freeze();
    let (worker_side, _) = Endpoint::recording(Side::Worker);
    let (host, worker) = pair();
    let msg = Message::Result(Value::List(vec![
        Value::Str("y".repeat(200_000)),
        Value::Bytes(shared.into()),
    ]));
    send(&host, Side::Host, 1, &msg);
    let mut frame = recv_frame(&worker);
    assert_ne!(frame.header.flags & FLAG_BODY_IN_FD, 0);
    assert_eq!((frame.header.n_fds, frame.fds.len()), (2, 1));
    let Message::Result(Value::List(items)) = decode(&mut frame, &worker_side).unwrap() else {
        panic!("not a result list")
    };
    assert_eq!(items[0].as_str().map(str::len), Some(200_000));
    let bytes = items[1].as_bytes().unwrap();
    assert!(bytes.is_shared());
    assert!(bytes.as_slice() == pattern(3 << 20).as_slice());
}
