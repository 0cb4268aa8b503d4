//! An untyped YAML document in which every node remembers its line.
//!
//! plugins.yaml is checked field by field, as the reference's validator does with
//! the dict `yaml.safe_load` returns, so it is first read into this tree rather
//! than straight into typed structs: a wrong value then becomes one problem among
//! all the others, with its path and line, instead of the first and only error.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A YAML node and the line it starts on (1-based; `None` when unknown).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) line: Option<usize>,
}

/// What a YAML node holds, as YAML's core schema resolves plain scalars.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value under `key` when this node is a mapping with a string key
    /// `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The value in flow style, cut short when long: what a message shows after
/// `found`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        render(&mut text, self);
        if text.chars().count() > 60 {
            let cut: String = text.chars().take(57).collect();
            write!(f, "{cut}...")
        } else {
            f.write_str(&text)
        }
    }
}

fn render(out: &mut String, value: &Value) {
    use fmt::Write as _;
    // Writing to a String cannot fail.
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => _ = write!(out, "{b}"),
        Value::Int(i) => _ = write!(out, "{i}"),
        Value::Float(x) => {
            out.push_str(&cjm_core::python_json(&serde_json::Value::from(*x), None));
        }
        Value::Str(s) => _ = write!(out, "{s:?}"),
        Value::Seq(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render(out, &item.value);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render(out, &key.value);
                out.push_str(": ");
                render(out, &item.value);
            }
            out.push('}');
        }
    }
}

/// Parses one YAML document; an empty document is `null`, as with
/// `yaml.safe_load`.
pub(crate) fn parse(text: &str) -> Result<Node, serde_saphyr::Error> {
    if text.trim().is_empty() {
        return Ok(Node {
            value: Value::Null,
            line: None,
        });
    }
    let spanned: Spanned<Value> = serde_saphyr::from_str(text)?;
    Ok(node(spanned))
}

fn node(spanned: Spanned<Value>) -> Node {
    let line = spanned.referenced.line();
    Node {
        value: spanned.value,
        line: (line > 0).then_some(line as usize),
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i128::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(node(item));
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Value>>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            entries.push((node(key), node(value)));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_as_yaml_does_and_nodes_keep_their_lines() {
        let doc = parse("a: 3.10\nb: yes\nc: ~\nd: '3.10'\ne:\n  - 1\n  - x\n").unwrap();
        assert_eq!(doc.get("a").unwrap().value, Value::Float(3.1));
        assert_eq!(doc.get("c").unwrap().value, Value::Null);
        assert_eq!(doc.get("d").unwrap().value, Value::Str("3.10".into()));
        assert_eq!(doc.get("d").unwrap().line, Some(4));
        let Value::Seq(items) = &doc.get("e").unwrap().value else {
            panic!("not a list")
        };
        assert_eq!(items[1].line, Some(7));
        // YAML 1.1 booleans, as PyYAML reads them.
        assert_eq!(doc.get("b").unwrap().value, Value::Bool(true));
    }
}
