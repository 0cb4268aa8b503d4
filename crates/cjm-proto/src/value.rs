//! The values that cross the channel: JSON's data model plus bytes and arrays.

use std::sync::Arc;

use crate::shm::ShmSlice;

/// Bytes that arrived inline or through shared memory; either way read-only.
#[derive(Clone, Debug)]
pub enum Buffer {
    /// Carried inside the frame.
    Inline(Arc<[u8]>),
    /// A zero-copy view of a shared-memory segment.
    Shm(ShmSlice),
}

impl Buffer {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline(b) => b,
            Self::Shm(s) => s.as_slice(),
        }
    }

    /// Whether the bytes live in shared memory.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Shm(_))
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Self {
        Self::Inline(v.into())
    }
}

impl From<&[u8]> for Buffer {
    fn from(v: &[u8]) -> Self {
        Self::Inline(v.into())
    }
}

impl From<ShmSlice> for Buffer {
    fn from(s: ShmSlice) -> Self {
        Self::Shm(s)
    }
}

/// A typed n-dimensional array, as numpy describes one.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The numpy type string, e.g. `<f4`, `|u1`.
    pub dtype: String,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// C-contiguous element bytes.
    pub data: Buffer,
}

/// One value on the wire.
///
/// Maps keep insertion order (Python dicts do) and have string keys (as JSON).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// `None` / `null`.
    #[default]
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// An integer that does not fit 64 bits, in decimal.
    BigInt(String),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Raw bytes.
    Bytes(Buffer),
    /// A list (Python lists and tuples).
    List(Vec<Value>),
    /// A map with string keys.
    Map(Vec<(String, Value)>),
    /// A typed array.
    Array(Array),
}

impl Value {
    /// The value under `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, if this is an int or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The bytes, if this is a bytes value.
    pub fn as_bytes(&self) -> Option<&Buffer> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A short name of the variant, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bool(_) => "bool",
            Self::Int(_) | Self::BigInt(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
            Self::Bytes(_) => "bytes",
            Self::List(_) => "list",
            Self::Map(_) => "map",
            Self::Array(_) => "array",
        }
    }

    /// Builds a map from pairs.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Self {
        Self::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Converts to JSON. Bytes become `{"__bytes__": len}` descriptors and arrays
    /// `{"dtype", "shape"}` summaries: JSON has no lossless form for them.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::None => J::Null,
            Self::Bool(b) => J::Bool(*b),
            Self::Int(i) => J::from(*i),
            // A number too big for 64 bits would parse as a rounded float: keep the digits.
            Self::BigInt(s) => s
                .parse::<serde_json::Number>()
                .ok()
                .filter(|n| !n.is_f64())
                .map_or_else(|| J::String(s.clone()), J::Number),
            Self::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Self::Str(s) => J::String(s.clone()),
            Self::Bytes(b) => serde_json::json!({ "__bytes__": b.len() }),
            Self::List(l) => J::Array(l.iter().map(Self::to_json).collect()),
            Self::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            Self::Array(a) => serde_json::json!({ "dtype": a.dtype, "shape": a.shape }),
        }
    }
}

impl From<&serde_json::Value> for Value {
    fn from(j: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match j {
            J::Null => Self::None,
            J::Bool(b) => Self::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Self::Int(i)
                } else if n.is_u64() {
                    Self::BigInt(n.to_string())
                } else {
                    Self::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Self::Str(s.clone()),
            J::Array(a) => Self::List(a.iter().map(Self::from).collect()),
            J::Object(o) => Self::Map(o.iter().map(|(k, v)| (k.clone(), Self::from(v))).collect()),
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(j: serde_json::Value) -> Self {
        Self::from(&j)
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Self { Self::$v(x.into()) }
        }
    )*};
}
from_scalar!(bool => Bool, i64 => Int, i32 => Int, u32 => Int, f64 => Float, String => Str, &str => Str);

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Self::List(v)
    }
}
