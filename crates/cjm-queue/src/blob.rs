//! Arguments and results as bytes for the store: the wire codec's encoding of
//! a [`Value`], with every shared-memory buffer copied inline first (a segment
//! does not outlive the process that mapped it).

use cjm_proto::{Array, Buffer, DecodeCtx, NoSegments, Reader, Side, Value, Writer};

/// `value`, encoded to be stored.
pub(crate) fn encode(value: &Value) -> Result<Vec<u8>, String> {
    let mut w = Writer::new();
    w.value(&inline(value), Side::Host)
        .map_err(|e| e.to_string())?;
    Ok(w.buf)
}

/// A value [`encode`] wrote.
pub(crate) fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut fds = [];
    let mut ctx = DecodeCtx {
        fds: &mut fds,
        segments: &NoSegments,
    };
    Reader::new(bytes)
        .value(&mut ctx)
        .map_err(|e| e.to_string())
}

/// `value` with its shared-memory buffers copied inline (inline ones shared).
fn inline(value: &Value) -> Value {
    let buffer = |b: &Buffer| match b {
        Buffer::Inline(bytes) => Buffer::Inline(bytes.clone()),
        Buffer::Shm(s) => Buffer::Inline(s.as_slice().into()),
    };
    match value {
        Value::Bytes(b) => Value::Bytes(buffer(b)),
        Value::Array(a) => Value::Array(Array {
            dtype: a.dtype.clone(),
            shape: a.shape.clone(),
            data: buffer(&a.data),
        }),
        Value::List(items) => Value::List(items.iter().map(inline).collect()),
        Value::Map(pairs) => {
            Value::Map(pairs.iter().map(|(k, v)| (k.clone(), inline(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_comes_back_as_it_went_in() {
        let v = Value::Map(vec![
            ("none".into(), Value::None),
            ("flag".into(), Value::Bool(true)),
            ("n".into(), Value::Int(-7)),
            (
                "big".into(),
                Value::BigInt("123456789012345678901234567890".into()),
            ),
            ("x".into(), Value::Float(0.25)),
            ("s".into(), Value::Str("héllo".into())),
            (
                "b".into(),
                Value::Bytes(Buffer::Inline(vec![0u8, 1, 255].into())),
            ),
            (
                "l".into(),
                Value::List(vec![Value::Int(1), Value::Str("two".into())]),
            ),
            (
                "a".into(),
                Value::Array(Array {
                    dtype: "<f4".into(),
                    shape: vec![2],
                    data: Buffer::Inline(vec![0u8; 8].into()),
                }),
            ),
        ]);
        assert_eq!(decode(&encode(&v).unwrap()).unwrap(), v);
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let good = encode(&Value::Str("abc".into())).unwrap();
        assert!(decode(&good[..good.len() - 1]).is_err());
        assert!(decode(&[0xff, 0xff]).is_err());
        assert!(decode(&[]).is_err());
    }
}
