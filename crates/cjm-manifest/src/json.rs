//! Small helpers for reading untyped JSON field by field.

use serde_json::Value;

/// `install` + `python_path` → `install.python_path`; a root path stays bare.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `expected a string, found 5`: the value as Python's `json.dumps` prints it
/// on one line, cut short when long.
pub(crate) fn expected(what: &str, found: &Value) -> String {
    let text = cjm_core::python_json(found, None);
    let text = if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    };
    format!("expected {what}, found {text}")
}

/// Python's truthiness of a JSON value, which the reference leans on with
/// `value or default` and `bool(value)`.
pub(crate) use cjm_core::is_python_falsy as is_falsy;
