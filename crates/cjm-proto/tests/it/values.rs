//! The value codec on its own: `Writer` then `Reader`, no channel.

use cjm_proto::{
    Array, Buffer, DecodeCtx, MAX_DEPTH, NoSegments, ProtoError, Reader, Side, Value, Writer,
};

/// Encodes `v`, decodes it, and returns what came back and the encoding.
pub(crate) fn round_trip(v: &Value) -> (Value, Vec<u8>) {
    let mut w = Writer::new();
    w.value(v, Side::Host).expect("encode");
    let mut fds = Vec::new();
    let mut ctx = DecodeCtx {
        fds: &mut fds,
        segments: &NoSegments,
    };
    let mut r = Reader::new(&w.buf);
    let got = r.value(&mut ctx).expect("decode");
    assert_eq!(r.remaining(), 0, "decoding left bytes behind");
    (got, w.buf)
}

/// Checks `v` survives a round trip bit for bit.
#[track_caller]
fn check(v: &Value) {
    let (got, bytes) = round_trip(v);
    assert_eq!(format!("{got:?}"), format!("{v:?}"));
    let mut again = Writer::new();
    again.value(&got, Side::Host).expect("re-encode");
    assert_eq!(again.buf, bytes, "re-encoding differs");
}

#[test]
fn every_value_variant_round_trips() {
    let cases = [
        Value::None,
        Value::Bool(false),
        Value::Bool(true),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::BigInt("18446744073709551616".into()),
        Value::BigInt("-18446744073709551617".into()),
        Value::Float(1.5),
        Value::Float(-0.0),
        Value::Float(f64::NAN),
        Value::Float(f64::from_bits(0x7ff8_dead_beef_0001)),
        Value::Float(f64::INFINITY),
        Value::Float(f64::NEG_INFINITY),
        Value::Str("ascii".into()),
        Value::Str("ünï€ødé 𝄞".into()),
        Value::Bytes(Buffer::from(&b"\x00\xff raw"[..])),
        Value::List(vec![Value::None, Value::List(vec![]), Value::Int(3)]),
        Value::map([
            ("a", Value::None),
            ("b", Value::map([("c", Value::Int(1))])),
        ]),
        Value::Array(Array {
            dtype: "<i8".into(),
            shape: vec![1, 2, 0],
            data: Buffer::from(Vec::new()),
        }),
        Value::Array(Array {
            dtype: "<c16".into(),
            shape: vec![u64::MAX; 255],
            data: Buffer::from(vec![1; 16]),
        }),
    ];
    for v in &cases {
        check(v);
    }
}

#[test]
fn negative_zero_and_nan_payloads_keep_their_bits() {
    for bits in [
        (-0.0f64).to_bits(),
        0x7ff8_0000_0000_0001,
        0xfff0_0000_0000_0001,
    ] {
        let (got, _) = round_trip(&Value::Float(f64::from_bits(bits)));
        let Value::Float(f) = got else {
            panic!("not a float: {got:?}")
        };
        assert_eq!(f.to_bits(), bits);
    }
}

#[test]
fn maps_keep_insertion_order() {
    let keys = ["zeta", "alpha", "mu", "", "Ω", "beta", "a"];
    let v = Value::map(keys.iter().map(|k| (*k, Value::from(*k))));
    let (got, _) = round_trip(&v);
    let Value::Map(pairs) = got else {
        panic!("not a map")
    };
    let got_keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got_keys, keys);
    for (k, v) in &pairs {
        assert_eq!(v.as_str(), Some(k.as_str()));
    }
}

fn nested_lists(levels: usize) -> Value {
    (0..levels).fold(Value::None, |inner, _| Value::List(vec![inner]))
}

#[test]
fn nesting_up_to_max_depth_round_trips() {
    check(&nested_lists(MAX_DEPTH));
}

#[test]
fn nesting_past_max_depth_is_rejected_when_decoding() {
    let mut w = Writer::new();
    w.value(&nested_lists(MAX_DEPTH + 1), Side::Host).unwrap();
    let mut fds = Vec::new();
    let mut ctx = DecodeCtx {
        fds: &mut fds,
        segments: &NoSegments,
    };
    crate::support::assert_malformed(Reader::new(&w.buf).value(&mut ctx), "nesting too deep");
}

#[test]
fn an_array_with_over_255_dimensions_cannot_be_encoded() {
    let v = Value::Array(Array {
        dtype: "|u1".into(),
        shape: vec![1; 256],
        data: Buffer::from(vec![1]),
    });
    let err = Writer::new().value(&v, Side::Host).unwrap_err();
    assert!(matches!(err, ProtoError::Unencodable(_)), "{err:?}");
}

#[test]
fn accessors_answer_only_for_their_variant() {
    let m = Value::map([("k", Value::Int(2)), ("f", Value::Float(0.5))]);
    assert_eq!(m.get("k").and_then(Value::as_i64), Some(2));
    assert_eq!(m.get("k").and_then(Value::as_f64), Some(2.0));
    assert_eq!(m.get("f").and_then(Value::as_f64), Some(0.5));
    assert_eq!(m.get("missing"), None);
    assert_eq!(Value::Int(1).get("k"), None);
    assert_eq!(Value::from("s").as_i64(), None);
    assert_eq!(Value::BigInt("1".into()).type_name(), "int");
    assert!(Value::Bytes(Buffer::from(vec![1])).as_bytes().is_some());
}

#[test]
fn json_conversion_keeps_what_json_can_say() {
    let v = Value::map([
        ("big", Value::BigInt("18446744073709551615".into())),
        ("huge", Value::BigInt("1".repeat(40))),
        ("nan", Value::Float(f64::NAN)),
        ("bytes", Value::Bytes(Buffer::from(vec![0; 5]))),
    ]);
    let j = v.to_json();
    assert_eq!(j["big"], serde_json::json!(18_446_744_073_709_551_615_u64));
    assert_eq!(j["huge"], serde_json::json!("1".repeat(40)));
    assert_eq!(j["nan"], serde_json::Value::Null);
    assert_eq!(j["bytes"], serde_json::json!({ "__bytes__": 5 }));
    let back = Value::from(&serde_json::json!({ "u": u64::MAX, "i": -3, "f": 0.5 }));
    assert_eq!(back.get("u"), Some(&Value::BigInt(u64::MAX.to_string())));
    assert_eq!(back.get("i"), Some(&Value::Int(-3)));
    assert_eq!(back.get("f"), Some(&Value::Float(0.5)));
}
