//! Every message kind crosses a real channel and decodes to what was sent.

use cjm_proto::{
    Array, Buffer, Call, Hello, Kind, LogRecord, Message, NoSegments, PROTOCOL, SegmentId, Side,
    Value,
};

use crate::support::{assert_same, pair, recv_msg, send};

/// Sends `msg` host → worker with request id `id`, then worker → host, and checks
/// both ends decode the same message, kind and id.
#[track_caller]
fn check(msg: &Message, id: u64) {
    let (host, worker) = pair();
    for (from, to, me) in [(&host, &worker, Side::Host), (&worker, &host, Side::Worker)] {
        send(from, me, id, msg);
        let (header, got) = recv_msg(to, &NoSegments);
        assert_eq!(header.kind, msg.kind());
        assert_eq!(header.id, id);
        assert_eq!(header.n_fds, 0);
        assert_same(&got, msg);
    }
}

fn awkward_values() -> Vec<Value> {
    vec![
        Value::None,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(0),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::BigInt("123456789012345678901234567890123456789".into()),
        Value::BigInt("-98765432109876543210".into()),
        Value::Float(f64::NAN),
        Value::Float(-0.0),
        Value::Float(f64::INFINITY),
        Value::Float(f64::NEG_INFINITY),
        Value::Float(f64::MIN_POSITIVE / 2.0),
        Value::Str(String::new()),
        Value::Str("héllo wörld ✓ 日本語 🦀\u{0}\u{feff}".into()),
        Value::Bytes(Buffer::from(vec![0, 255, 1, 254])),
        Value::Bytes(Buffer::from(Vec::new())),
        Value::Array(Array {
            dtype: "<f4".into(),
            shape: vec![2, 3],
            data: Buffer::from(vec![7; 24]),
        }),
        Value::Array(Array {
            dtype: "|u1".into(),
            shape: vec![],
            data: Buffer::from(vec![9]),
        }),
    ]
}

fn nested() -> Value {
    Value::map([
        ("list", Value::List(awkward_values())),
        (
            "deeper",
            Value::map([("ключ", Value::List(vec![Value::map([("", Value::None)])]))]),
        ),
        ("empty list", Value::List(vec![])),
        ("empty map", Value::Map(vec![])),
    ])
}

#[test]
fn a_call_with_nested_args_and_kwargs_round_trips() {
    let mut kwargs: Vec<(String, Value)> = awkward_values()
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("kw{i}"), v))
        .collect();
    kwargs.push(("nested ✓".into(), nested()));
    let mut args = awkward_values();
    args.push(nested());
    args.push(Value::List(vec![nested(), nested()]));
    check(
        &Message::Call(Call {
            method: "execute_stream".into(),
            args,
            kwargs,
        }),
        7,
    );
}

#[test]
fn a_call_without_arguments_round_trips() {
    check(
        &Message::Call(Call {
            method: String::new(),
            args: vec![],
            kwargs: vec![],
        }),
        1,
    );
}

#[test]
fn every_message_kind_round_trips_through_a_channel() {
    let cases = [
        Message::Hello(Hello {
            protocol: PROTOCOL.into(),
            runtime: "0.1.0".into(),
            pid: u32::MAX,
            python: "3.12.1 (main) [GCC 13]".into(),
        }),
        Message::Ready(Value::map([
            ("name", Value::from("échos")),
            ("version", Value::from("1.0")),
        ])),
        Message::LoadFailed(Value::map([("type", Value::from("ImportError"))])),
        Message::Call(Call {
            method: "execute".into(),
            args: vec![Value::from(1)],
            kwargs: vec![("x".into(), Value::Float(f64::NAN))],
        }),
        Message::Result(nested()),
        Message::Error(Value::map([
            ("type", Value::from("ValueError")),
            ("traceback", Value::from("Traceback …\n  line 1\n")),
        ])),
        Message::Chunk(Value::Bytes(Buffer::from(vec![1, 2, 3]))),
        Message::End,
        Message::Progress {
            progress: -1.0,
            message: "indéterminé".into(),
        },
        Message::Progress {
            progress: f64::NAN,
            message: String::new(),
        },
        Message::Usage(Value::map([("gpu_seconds", Value::Float(0.25))])),
        Message::Log(LogRecord {
            level: 50,
            logger: "plugin.ünïcode".into(),
            message: "boom 💥".into(),
        }),
        Message::Cancel,
        Message::Interrupt,
        Message::Ping,
        Message::Pong,
        Message::StatsRequest,
        Message::Stats(Value::map([("rss", Value::Int(1 << 40))])),
        Message::Release {
            segment: SegmentId::new(Side::Worker, u64::from(u32::MAX) + 3),
            receipts: u32::MAX,
        },
        Message::Shutdown,
        Message::CancelAck {
            phase: "cooperative".into(),
        },
    ];
    let mut seen: Vec<Kind> = cases.iter().map(Message::kind).collect();
    seen.sort_by_key(|k| *k as u8);
    seen.dedup();
    let all: Vec<Kind> = (0..=u8::MAX).filter_map(Kind::from_u8).collect();
    assert_eq!(seen, all, "a message kind has no case here");
    for (i, msg) in cases.iter().enumerate() {
        check(msg, [0, 1, u64::MAX][i % 3]);
    }
}

#[test]
fn kind_names_and_bytes_agree() {
    for b in 0..=u8::MAX {
        if let Some(k) = Kind::from_u8(b) {
            assert_eq!(k as u8, b);
            assert!(!k.name().is_empty());
        }
    }
    assert_eq!(Kind::CancelAck.name(), "CancelAck");
}

#[test]
fn an_empty_frame_sent_with_send_empty_decodes_as_its_kind() {
    let (host, worker) = pair();
    host.send_empty(Kind::Ping, 99).unwrap();
    let (header, msg) = recv_msg(&worker, &NoSegments);
    assert_eq!((header.kind, header.id), (Kind::Ping, 99));
    assert_eq!(msg, Message::Ping);
}
