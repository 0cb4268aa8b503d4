//! A YAML document as a tree of located nodes, typed the way `PyYAML`'s `safe_load`
//! types it, so that a file means here what it means to the reference.
//!
//! serde-saphyr parses; this module keeps every node's line and column (through
//! [`serde_saphyr::Spanned`]) so that a caller checking a file field by field can
//! report every bad value with its position instead of stopping at the first serde
//! error. cjm.yaml and plugins.yaml are both read this way.
//!
//! ```
//! use cjm_core::yaml::{self, DuplicateKeys, Value};
//!
//! let root = yaml::parse("gpu: yes\nversion: '3.10'\nlibs: [a, b]\n", DuplicateKeys::Keep)?
//!     .expect("a document");
//! assert!(matches!(root.get("gpu").map(|n| &n.value), Some(Value::Bool(true))));
//! let version = root.get("version").expect("a version");
//! assert!(matches!(&version.value, Value::Str(s) if s == "3.10"));
//! assert_eq!((version.line, version.column), (2, 10));
//! assert!(matches!(&root.get("libs").map(|n| &n.value), Some(Value::Seq(items)) if items.len() == 2));
//! # Ok::<(), serde_saphyr::Error>(())
//! ```

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

/// One node of the document, with the position where its value starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub value: Value,
    /// The 1-based line; 0 only when the parser gave no position.
    pub line: u32,
    /// The 1-based column, counted in characters; 0 only when the parser gave no
    /// position.
    pub column: u32,
}

/// A node's value, typed as `PyYAML` (YAML 1.1, safe loader) would type it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~`, or nothing at all.
    Null,
    /// `true`, `false`, and YAML 1.1's plain `yes`, `off`, ... as `PyYAML` spells them.
    Bool(bool),
    /// An integer; one beyond `i128` becomes a [`Value::Float`].
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string, including a quoted scalar that would otherwise read as another type.
    Str(String),
    /// A list, its items in document order.
    Seq(Vec<Node>),
    /// A mapping, its entries in document order; see [`DuplicateKeys`] for equal keys.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value under the first string key equal to `key`, when this node is a
    /// mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// What [`parse`] does with two equal keys in one mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DuplicateKeys {
    /// Keep every entry, in document order, for the caller to judge; `PyYAML` lets
    /// the last one win.
    #[default]
    Keep,
    /// Fail to parse, at the second key.
    Reject,
}

/// Parses one YAML document.
///
/// `Ok(None)` for a text with nothing but whitespace; a document that is only a
/// comment or an explicit null is a [`Value::Null`] node. More than one document is
/// an error ([`serde_saphyr::Error::MultipleDocuments`]).
pub fn parse(
    text: &str,
    duplicate_keys: DuplicateKeys,
) -> Result<Option<Node>, serde_saphyr::Error> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let options = serde_saphyr::options! {
        duplicate_keys: match duplicate_keys {
            // The last-wins policy hands every entry to the visitor, which keeps them all.
            DuplicateKeys::Keep => DuplicateKeyPolicy::LastWins,
            DuplicateKeys::Reject => DuplicateKeyPolicy::Error,
        },
        // Only YAML 1.2's spellings become booleans here; `to_node` adds PyYAML's
        // YAML 1.1 ones (`yes`, `off`, ...) for plain scalars, exactly as PyYAML
        // spells them, and leaves `y`/`n` strings as PyYAML does.
        strict_booleans: true,
        with_snippet: false,
    };
    let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options)?;
    Ok(Some(to_node(raw, text)))
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
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|item| to_node(item, text)).collect()),
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
    Seq(Vec<Spanned<Raw>>),
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
        // Only a `!!binary` scalar arrives as bytes; neither cjm file takes one.
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn doc(text: &str) -> Node {
        parse(text, DuplicateKeys::Reject).unwrap().unwrap()
    }

    #[test]
    fn scalars_resolve_as_pyyaml_does_and_nodes_keep_their_lines() {
        let doc = doc("a: 3.10\nb: yes\nc: ~\nd: '3.10'\ne:\n  - 1\n  - x\nf: y\ng: 'on'\n");
        assert_eq!(doc.get("a").unwrap().value, Value::Float(3.1));
        assert_eq!(doc.get("c").unwrap().value, Value::Null);
        assert_eq!(doc.get("d").unwrap().value, Value::Str("3.10".into()));
        assert_eq!(doc.get("d").unwrap().line, 4);
        let Value::Seq(items) = &doc.get("e").unwrap().value else {
            panic!("not a list")
        };
        assert_eq!((items[1].line, items[1].column), (7, 5));
        // YAML 1.1 booleans, as PyYAML reads them: plain only, and never `y`.
        assert_eq!(doc.get("b").unwrap().value, Value::Bool(true));
        assert_eq!(doc.get("f").unwrap().value, Value::Str("y".into()));
        assert_eq!(doc.get("g").unwrap().value, Value::Str("on".into()));
    }

    #[test]
    fn duplicate_keys_are_kept_in_order_or_rejected() {
        let text = "a: 1\na: 2\n";
        let kept = parse(text, DuplicateKeys::Keep).unwrap().unwrap();
        let Value::Map(entries) = kept.value else {
            panic!("not a map")
        };
        let values: Vec<_> = entries.into_iter().map(|(_, v)| v.value).collect();
        assert_eq!(values, [Value::Int(1), Value::Int(2)]);
        assert!(parse(text, DuplicateKeys::Reject).is_err());
    }

    #[test]
    fn only_whitespace_is_no_document_and_a_comment_is_a_null_one() {
        assert_eq!(parse(" \n", DuplicateKeys::Keep).unwrap(), None);
        assert_eq!(doc("# nothing\n").value, Value::Null);
        assert_eq!(doc("~").line, 1);
    }
}
