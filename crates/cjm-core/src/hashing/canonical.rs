//! The canonical JSON text the reference hashes configs and schemas by.

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// `value` as Python's `json.dumps(value, sort_keys=True, separators=(",", ":"))`
/// writes it, byte for byte:
///
/// - object keys sorted by code point (the order of Rust's `str` comparison, which
///   is not UTF-16 order: `"\u{e000}"` sorts before `"\u{1f600}"`);
/// - no whitespace;
/// - every non-ASCII character escaped as `\uXXXX` in lowercase hex, characters
///   beyond the BMP as a surrogate pair, control characters as `\n`, `\t`, `\r`,
///   `\b`, `\f` or `\u00XX`, and DEL as `\u007f`;
/// - floats as Python's `repr()`: the shortest text that reads back as the same
///   float, `1e+16` and `1e-05` outside `1e-4 ≤ |x| < 1e16`, `2.0` for integral
///   values, `-0.0` kept.
///
/// Integers print in full. A `serde_json::Value` cannot hold an integer beyond
/// 64 bits unless `serde_json`'s `arbitrary_precision` feature is on (it is not in
/// this workspace): without it such numbers were already floats when parsed, and
/// print as the float Python would print for `float(n)`. With it they print
/// digit for digit, as Python prints its big ints. A `Value` cannot hold NaN or
/// the infinities, nor strings with lone surrogates, so those never arise.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(entries) => {
            // serde_json's map is sorted already unless its `preserve_order`
            // feature is on somewhere in the build; sorting here keeps the output
            // right either way.
            let mut entries: Vec<_> = entries.iter().collect();
            entries.sort_unstable_by_key(|&(key, _)| key);
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// `value` as Python's `json.dumps(value, indent=indent)` writes it, byte for
/// byte, with the defaults the reference relies on when it writes a manifest:
///
/// - object keys in the `Map`'s order (insertion order when `serde_json`'s
///   `preserve_order` feature is on, as it is in this workspace), never sorted;
/// - with `indent`, one item per line indented by that many spaces a level, `,`
///   ending each line but the last and `": "` between key and value; empty
///   objects and arrays stay `{}` and `[]`; `Some(0)` still breaks lines;
/// - without `indent`, everything on one line with `", "` and `": "`;
/// - strings with `ensure_ascii=True` and floats as Python's `repr()`, as in
///   [`canonical_json`];
/// - no trailing newline (`json.dump` writes none).
pub fn python_json(value: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write_pretty(&mut out, value, indent, 0);
    out
}

fn write_pretty(out: &mut String, value: &Value, indent: Option<usize>, depth: usize) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * depth));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                write_pretty(out, item, indent, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(entries) if !entries.is_empty() => {
            out.push('{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                write_string(out, key);
                out.push_str(": ");
                write_pretty(out, item, indent, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        _ => write_value(out, value),
    }
}

fn write_number(out: &mut String, number: &Number) {
    // Writing to a String cannot fail.
    if let Some(int) = number.as_i64() {
        _ = write!(out, "{int}");
    } else if let Some(int) = number.as_u64() {
        _ = write!(out, "{int}");
    } else if let (true, Some(float)) = (number.is_f64(), number.as_f64()) {
        write_python_float(out, float);
    } else {
        // Only under `arbitrary_precision`: an integer too big for 64 bits, kept
        // as its source digits.
        _ = write!(out, "{number}");
    }
}

/// Python's `float.__repr__`, and what `json.dumps` writes for NaN and the
/// infinities.
fn write_python_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if x.is_sign_negative() {
        out.push('-');
    }
    if x == 0.0 {
        out.push_str("0.0");
        return;
    }
    let (digits, exponent) = shortest_digits(x.abs());
    let count = digits.len() as i32;
    // CPython's float_repr_style "short" switches to exponent notation when the
    // decimal point would sit more than 16 digits right of the first digit or
    // more than 4 left of it.
    if !(-4..16).contains(&exponent) {
        out.push_str(&digits[..1]);
        if count > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        _ = write!(out, "e{sign}{:02}", exponent.abs());
    } else if exponent < 0 {
        out.push_str("0.");
        for _ in 0..(-exponent - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let integral = (exponent + 1) as usize;
        if digits.len() > integral {
            out.push_str(&digits[..integral]);
            out.push('.');
            out.push_str(&digits[integral..]);
        } else {
            out.push_str(&digits);
            for _ in digits.len()..integral {
                out.push('0');
            }
            out.push_str(".0");
        }
    }
}

/// The shortest significant digits that read back as `x` (positive, finite, not
/// zero) and the decimal exponent of the first: `("15", -5)` for `1.5e-5`.
///
/// Rust's `{:e}` and Python's `repr` both pick, among the shortest digit strings
/// that round-trip, the one closest to `x`, but they break exact ties differently:
/// when `x` lies exactly halfway between two candidates (`723886542402091.25`,
/// between `…091.2` and `…091.3`), Rust rounds up and Python rounds half to
/// even. Such ties need `x`'s exact decimal expansion to stop one digit after the
/// shortest string, so they are checked for only then.
fn shortest_digits(x: f64) -> (String, i32) {
    let (digits, exponent) = split_scientific(&format!("{x:e}"));
    let count = digits.len();
    // One more digit than the shortest string, rounded: it ends in 5 whenever
    // the exact expansion does.
    let (longer, _) = split_scientific(&format!("{x:.count$e}"));
    if !longer.ends_with('5') {
        return (digits, exponent);
    }
    // A double's exact expansion has at most 767 significant digits, so 800
    // digits print it without rounding.
    let (exact, exact_exponent) = split_scientific(&format!("{x:.800e}"));
    let exact = exact.trim_end_matches('0');
    if exact.len() != count + 1 {
        return (digits, exponent);
    }
    let down = &exact[..count];
    let down_is_even = down
        .bytes()
        .last()
        .is_some_and(|digit| (digit - b'0').is_multiple_of(2));
    let down_reads_back = format!("{down}e{}", exact_exponent - count as i32 + 1)
        .parse::<f64>()
        .is_ok_and(|back| back.to_bits() == x.to_bits());
    if down_is_even && down_reads_back {
        (down.to_owned(), exact_exponent)
    } else {
        (digits, exponent)
    }
}

/// Splits Rust's `{:e}` text into its significant digits and exponent.
fn split_scientific(text: &str) -> (String, i32) {
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// A JSON string as Python's `json` module writes it with `ensure_ascii=True`.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0; 2];
                for unit in c.encode_utf16(&mut units) {
                    _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(x: f64, expected: &str) {
        let mut out = String::new();
        write_python_float(&mut out, x);
        assert_eq!(out, expected, "repr of {x:?}");
    }

    #[test]
    fn floats_print_as_python_repr() {
        check(1e16, "1e+16");
        check(1e-5, "1e-05");
        check(0.0001, "0.0001");
        check(1.5, "1.5");
        check(-0.0, "-0.0");
        check(0.0, "0.0");
        check(2.0, "2.0");
        check(9_999_999_999_999_998.0, "9999999999999998.0");
        check(123_456_789.125, "123456789.125");
        check(1.5e-7, "1.5e-07");
        check(-2.5e300, "-2.5e+300");
        check(5e-324, "5e-324");
        check(f64::MAX, "1.7976931348623157e+308");
        check(0.1 + 0.2, "0.30000000000000004");
        // Exactly halfway between …091.2 and …091.3.
        check(-(723_886_542_402_091.0 + 0.25), "-723886542402091.2");
        check(0.125, "0.125");
        check(2.5, "2.5");
    }

    #[test]
    fn python_json_keeps_key_order_and_prints_as_json_dumps_does() {
        // Expected texts from Python 3.11's `json.dumps(value, indent=…)`.
        let value: Value = serde_json::from_str(
            r#"{"b": [1, 2.5, {}], "a": {"x": [], "y": "\u00e9\ud83d\ude00"}, "c": null, "d": 1e16}"#,
        )
        .unwrap();
        assert_eq!(
            python_json(&value, Some(2)),
            "{\n  \"b\": [\n    1,\n    2.5,\n    {}\n  ],\n  \"a\": {\n    \"x\": [],\n    \
             \"y\": \"\\u00e9\\ud83d\\ude00\"\n  },\n  \"c\": null,\n  \"d\": 1e+16\n}"
        );
        assert_eq!(
            python_json(&value, None),
            r#"{"b": [1, 2.5, {}], "a": {"x": [], "y": "\u00e9\ud83d\ude00"}, "c": null, "d": 1e+16}"#
        );
        assert_eq!(
            python_json(&value, Some(0)),
            "{\n\"b\": [\n1,\n2.5,\n{}\n],\n\"a\": {\n\"x\": [],\n\
             \"y\": \"\\u00e9\\ud83d\\ude00\"\n},\n\"c\": null,\n\"d\": 1e+16\n}"
        );
    }

    #[test]
    fn non_finite_floats_print_as_python_json_writes_them() {
        check(f64::NAN, "NaN");
        check(f64::INFINITY, "Infinity");
        check(f64::NEG_INFINITY, "-Infinity");
    }

    #[test]
    fn a_float_negative_zero_prints_as_python_prints_it() {
        // Text with the integer `-0` must be read with `json_loads` (see loads.rs);
        // the float -0.0 itself prints as Python's json.dumps prints it.
        assert_eq!(canonical_json(&serde_json::json!([-0.0, 0])), "[-0.0,0]");
    }
}
