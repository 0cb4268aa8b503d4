//! A YAML document as a tree of located nodes, typed the way `PyYAML`'s `safe_load`
//! types it, so that a file means here what it means to the reference.
//!
//! serde-saphyr parses; this module keeps every node's line and column (through
//! [`serde_saphyr::Spanned`]) so that the config layer can report every bad value
//! with its position instead of stopping at the first serde error.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

/// One node of the document, with the 1-based position where its value starts.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) value: Value,
    pub(super) line: u32,
    pub(super) column: u32,
}

/// A node's value, typed as `PyYAML` (YAML 1.1, safe loader) would type it.
#[derive(Debug)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A list; no config key takes one, so its items are not kept.
    Seq,
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// How a problem report shows this value after "found".
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq => "a list".to_owned(),
            Value::Map(_) => "a map".to_owned(),
        }
    }

    /// How this value reads as a mapping key in a key path.
    pub(super) fn key_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Seq => "<list>".to_owned(),
            Value::Map(_) => "<map>".to_owned(),
            other => other.describe(),
        }
    }
}

/// Why a file is not a YAML document at all.
#[derive(Debug)]
pub(super) enum ParseFailure {
    /// The bytes are not UTF-8; the position is that of the first bad byte.
    NotUtf8 { line: u32, column: u32, byte: u8 },
    /// The text is not YAML (or not a single document).
    Syntax {
        line: Option<u32>,
        column: Option<u32>,
        message: String,
    },
}

/// Parses one YAML document; `Ok(None)` for a stream with no document or a null one.
pub(super) fn parse(bytes: &[u8]) -> Result<Option<Node>, ParseFailure> {
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let good = &bytes[..err.valid_up_to()];
        let line = good.split(|&b| b == b'\n').count();
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        // The column counts characters, like the parser's columns do.
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        ParseFailure::NotUtf8 {
            line: line as u32,
            column: column as u32,
            byte: bytes[err.valid_up_to()],
        }
    })?;
    let options = serde_saphyr::options! {
        // PyYAML lets the last of two equal keys win; the config layer sees both
        // entries and warns.
        duplicate_keys: DuplicateKeyPolicy::LastWins,
        // Only YAML 1.2's spellings become booleans here; `to_node` adds PyYAML's
        // YAML 1.1 ones (`yes`, `off`, ...) for plain scalars, exactly as PyYAML
        // spells them, and leaves `y`/`n` strings as PyYAML does.
        strict_booleans: true,
        with_snippet: false,
    };
    let raw: Option<Spanned<Raw>> =
        serde_saphyr::from_str_with_options(text, options).map_err(|err| syntax_failure(&err))?;
    Ok(raw
        .map(|raw| to_node(raw, text))
        .filter(|node| !matches!(node.value, Value::Null)))
}

fn syntax_failure(err: &serde_saphyr::Error) -> ParseFailure {
    let location = err.location();
    let (line, column) = match location {
        Some(loc) if loc.line() > 0 => (Some(loc.line() as u32), Some(loc.column() as u32)),
        _ => (None, None),
    };
    let message = if let serde_saphyr::Error::MultipleDocuments { .. } = err {
        // The library's own text recommends one of its APIs to the developer.
        "found a second YAML document; the file must hold exactly one".to_owned()
    } else {
        let text = err.to_string();
        match (line, column) {
            (Some(l), Some(c)) => text
                .strip_suffix(&format!(" at line {l}, column {c}"))
                .map_or_else(|| text.clone(), str::to_owned),
            _ => text,
        }
    };
    ParseFailure::Syntax {
        line,
        column,
        message,
    }
}

/// `PyYAML`'s YAML 1.1 booleans beyond YAML 1.2's, which serde-saphyr left as strings.
fn yaml11_bool(plain: &str) -> Option<bool> {
    match plain {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn to_node(raw: Spanned<Raw>, text: &str) -> Node {
    let location = raw.referenced;
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => {
            // A quoted 'yes' stays a string in PyYAML; only a plain one is a bool.
            let quoted = location
                .span()
                .byte_offset()
                .and_then(|offset| text.get(usize::try_from(offset).ok()?..))
                .is_some_and(|rest| rest.starts_with(['\'', '"', '|', '>']));
            match yaml11_bool(&s) {
                Some(b) if !quoted => Value::Bool(b),
                _ => Value::Str(s),
            }
        }
        Raw::Seq => Value::Seq,
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (to_node(k, text), to_node(v, text)))
                .collect(),
        ),
    };
    Node {
        value,
        line: location.line() as u32,
        column: location.column() as u32,
    }
}

/// What serde-saphyr hands over, before `PyYAML`'s typing is applied.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq,
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        // Beyond i128 only the magnitude matters for an error message.
        Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        // Only a `!!binary` scalar arrives as bytes; no config key takes one.
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Raw::Seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}
