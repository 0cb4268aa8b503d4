//! Reading JSON text as Python's `json.loads` reads it, where `serde_json` differs in a
//! way that changes a hash: the integer `-0`.
//!
//! Python reads `-0` as the integer 0 (and writes it back as `0`), and `-0.0` as the
//! float −0.0. `serde_json` reads both as the float −0.0, and a `Value` keeps no trace
//! of which text it came from, so no later step can tell them apart: the fix has to be
//! made on the text, before `serde_json` sees it.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

/// Parses JSON text as `serde_json::from_str` does, except that an integer `-0` reads
/// as `0`, as in Python's `json.loads`; so a document's canonical text and hash match
/// the reference's. Error positions are those of the original text.
///
/// ```
/// use cjm_core::{canonical_json, json_loads};
///
/// let value: serde_json::Value = json_loads("[-0, 0, -0.0, \"-0\"]").unwrap();
/// assert_eq!(canonical_json(&value), r#"[0,0,-0.0,"-0"]"#);
/// ```
pub fn json_loads<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str(&integer_minus_zero_as_zero(text))
}

/// `text` with the `-` of every integer `-0` outside strings turned into a space,
/// which JSON reads as whitespace: `-0` becomes ` 0`, and every offset stays put.
fn integer_minus_zero_as_zero(text: &str) -> Cow<'_, str> {
    if !text.contains("-0") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'-' if bytes.get(i + 1) == Some(&b'0')
                && !matches!(bytes.get(i + 2), Some(b'0'..=b'9' | b'.' | b'e' | b'E')) =>
            {
                out.get_or_insert_with(|| bytes.to_vec())[i] = b' ';
            }
            _ => {}
        }
    }
    match out {
        // Only an ASCII `-` was replaced by an ASCII space: still UTF-8.
        Some(v) => Cow::Owned(String::from_utf8(v).unwrap_or_else(|_| text.to_owned())),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::canonical_json;

    fn loads(text: &str) -> Value {
        json_loads(text).unwrap()
    }

    #[test]
    fn an_integer_minus_zero_reads_as_zero_and_hashes_as_the_reference_does() {
        // Python: json.dumps(json.loads("[-0, 0]"), sort_keys=True, separators=(",", ":"))
        assert_eq!(canonical_json(&loads("[-0, 0]")), "[0,0]");
        assert_eq!(canonical_json(&loads(r#"{"a":-0}"#)), r#"{"a":0}"#);
        assert_eq!(canonical_json(&loads("-0")), "0");
    }

    #[test]
    fn float_zeros_exponents_and_strings_keep_their_meaning() {
        assert_eq!(
            canonical_json(&loads("[-0.0, -0e1, -0E0]")),
            "[-0.0,-0.0,-0.0]"
        );
        assert_eq!(
            canonical_json(&loads(r#"["-0", "a\"-0", "\\", -0]"#)),
            r#"["-0","a\"-0","\\",0]"#
        );
        assert_eq!(canonical_json(&loads("[-1, -10, -0.5]")), "[-1,-10,-0.5]");
    }

    #[test]
    fn errors_point_where_they_do_in_the_original_text() {
        let err = json_loads::<Value>("[-0,\n -0, x]").unwrap_err();
        assert_eq!((err.line(), err.column()), (2, 6));
        assert!(
            json_loads::<Value>("-01").is_err(),
            "a leading zero stays invalid"
        );
    }
}
